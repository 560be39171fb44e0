//! A TCP fault proxy to put between a process and one of its dependencies (Redis, the
//! emulator standing in for Poynt): it listens on 127.0.0.1:0, forwards every connection to
//! its target, and can be switched at run time between passing bytes, added latency,
//! resetting connections, black-holing and half-open. Every switch applies at once to the
//! connections already open as well as to new ones.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// Bytes read per chunk in each direction.
const CHUNK: usize = 16 * 1024;

/// What the fault proxy does to the connections it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards bytes as they come.
    Pass,
    /// Forwards each chunk after this delay (each direction keeps its order).
    Latency(Duration),
    /// Resets (RST) every open connection, and every new one as soon as it is accepted.
    Reset,
    /// A network path that went dark: new connections are accepted and what they send is
    /// read and dropped (nothing reaches the target, nothing comes back, ever); open
    /// connections stop carrying bytes in both directions. Those bytes are held, not lost,
    /// as TCP holds them across a partition: when the mode changes back they flow on, in
    /// order.
    BlackHole,
    /// One direction stops carrying bytes (held as in [`Mode::BlackHole`]); the other flows.
    HalfOpen(Direction),
}

/// A direction of a forwarded connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting process to the target (requests).
    ToTarget,
    /// From the target back to the connecting process (answers).
    FromTarget,
}

impl Mode {
    /// True when bytes going `direction` must wait.
    fn holds(self, direction: Direction) -> bool {
        match self {
            Mode::BlackHole => true,
            Mode::HalfOpen(stopped) => stopped == direction,
            Mode::Pass | Mode::Latency(_) | Mode::Reset => false,
        }
    }
}

/// A running fault proxy; it stops, closing every connection, when dropped. It runs on a
/// thread and runtime of its own, so it keeps forwarding while a test blocks its own
/// thread (waiting for a process to start, say).
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy in [`Mode::Pass`] forwarding to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a loopback port for the fault proxy");
        let addr = listener.local_addr().expect("the fault proxy's address");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let (mode, watching) = watch::channel(Mode::Pass);
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the fault proxy's runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("a Tokio listener");
                accept(listener, target, watching, stopped).await;
            });
        });
        Self {
            addr,
            mode,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches what happens to open and new connections.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept loop returns; dropping its runtime ends every connection.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until told to stop; each is carried by its own task.
async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(carry(stream, target, mode.clone()));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Carries one connection according to the mode, from its acceptance to its end.
async fn carry(mut client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let start = *mode.borrow_and_update();
    match start {
        Mode::Reset => return reset(&client),
        Mode::BlackHole => return swallow(client, mode).await,
        Mode::Pass | Mode::Latency(_) | Mode::HalfOpen(_) => {}
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return reset(&client);
    };
    let mut resets = mode.clone();
    let ended = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump(
            &mut client_read,
            &mut server_write,
            Direction::ToTarget,
            mode.clone(),
        );
        let down = pump(
            &mut server_read,
            &mut client_write,
            Direction::FromTarget,
            mode,
        );
        tokio::select! {
            _ = resets.wait_for(|m| *m == Mode::Reset) => Err(()),
            pumped = async { tokio::try_join!(up, down) } => pumped.map(drop).map_err(drop),
        }
    };
    if ended.is_err() {
        reset(&client);
        reset(&server);
    }
}

/// Reads and drops what a connection accepted in the dark sends, until it closes or the
/// mode says reset.
async fn swallow(mut client: TcpStream, mut mode: watch::Receiver<Mode>) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            _ = mode.wait_for(|m| *m == Mode::Reset) => return reset(&client),
            read = client.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// Copies one direction chunk by chunk, each chunk waiting while the mode holds this
/// direction and after any added latency. Ends at end of stream (passed on as a half-close)
/// or on an error.
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    direction: Direction,
    mut mode: watch::Receiver<Mode>,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        // Nothing is read while held, so TCP's own flow control holds the sender.
        passable(&mut mode, direction).await?;
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        let current = *mode.borrow_and_update();
        if let Mode::Latency(delay) = current {
            tokio::time::sleep(delay).await;
        }
        // The mode may have changed while the chunk was read or delayed.
        passable(&mut mode, direction).await?;
        to.write_all(&buffer[..read]).await?;
    }
}

/// Waits until the mode lets bytes go `direction`.
async fn passable(mode: &mut watch::Receiver<Mode>, direction: Direction) -> std::io::Result<()> {
    mode.wait_for(|m| !m.holds(direction))
        .await
        .map(drop)
        .map_err(|_| std::io::Error::other("the fault proxy stopped"))
}

/// Ends a connection with a reset rather than a close.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
