//! Where Poynt is and how a connection to it is made: TCP (with `TCP_NODELAY`, so a request
//! head is never held back waiting for an ACK, and TCP keep-alive, so a peer that vanished
//! without a FIN or RST is noticed) under the connect timeout, then TLS with ALPN
//! offering `h2` and `http/1.1` — or plain HTTP, which configuration allows only to loopback
//! hosts (the emulator in tests, the demo). Built once at start-up and shared by every
//! worker.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use http::uri::{Authority, Scheme, Uri};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::SendError;
use super::tls::UpstreamError;

/// Idle connections to Poynt are closed after at most this, below common server keep-alive
/// limits: by the workers' HTTP/1.1 pools and HTTP/2 multiplexers, and by the `/token`
/// client's pool.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Poynt's API origin and the means to connect to it.
pub struct Origin {
    https: bool,
    /// The host to resolve (an IPv6 literal without its brackets).
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    /// The `Host` header every HTTP/1.1 request carries: the URL's authority as written.
    host_header: HeaderValue,
    scheme: Scheme,
    authority: Authority,
    tls: TlsConnector,
    connect_timeout: Duration,
    body_idle_timeout: Duration,
}

/// TCP keep-alive on upstream sockets: the first probe after this long without traffic (as
/// nginx's `so_keepalive=30s::` would), then every [`KEEPALIVE_INTERVAL`].
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Between keep-alive probes; the system's probe count (9 on Linux) ends the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A fresh connection and what ALPN chose on it.
pub(crate) struct Connected {
    pub(crate) io: Stream,
    pub(crate) h2: bool,
}

impl Origin {
    /// The origin of `api_url`, trusting what `tls` trusts; a response body with no byte for
    /// `body_idle_timeout` fails.
    pub fn new(
        api_url: &Uri,
        mut tls: rustls::ClientConfig,
        connect_timeout: Duration,
        body_idle_timeout: Duration,
    ) -> Result<Arc<Self>, UpstreamError> {
        let no_host = || UpstreamError::NoHost(api_url.to_string());
        let authority = api_url.authority().cloned().ok_or_else(no_host)?;
        let https = api_url.scheme() != Some(&Scheme::HTTP);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(no_host());
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let server_name = ServerName::try_from(host.clone()).map_err(|_| no_host())?;
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|_| no_host())?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            https,
            host,
            port,
            server_name,
            host_header,
            scheme: if https { Scheme::HTTPS } else { Scheme::HTTP },
            authority,
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout,
            body_idle_timeout,
        }))
    }

    /// How long a response body may bring no byte.
    pub(crate) fn body_idle_timeout(&self) -> Duration {
        self.body_idle_timeout
    }

    /// The `Host` header value.
    pub(crate) fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The scheme and authority of HTTP/2 request URIs.
    pub(crate) fn scheme_and_authority(&self) -> (&Scheme, &Authority) {
        (&self.scheme, &self.authority)
    }

    /// Opens a connection: TCP within the connect timeout, then the TLS handshake (bounded
    /// by the caller's response timeout, like the rest of the exchange).
    pub(crate) async fn connect(&self) -> Result<Connected, SendError> {
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))?
        .map_err(SendError::Connect)?;
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set on an upstream connection");
        }
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL);
        if let Err(error) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%error, "TCP keep-alive not set on an upstream connection");
        }
        if !self.https {
            return Ok(Connected {
                io: Stream::Plain(tcp),
                h2: false,
            });
        }
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(SendError::Tls)?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        Ok(Connected {
            io: Stream::Tls(Box::new(tls)),
            h2,
        })
    }
}

/// A connection's byte stream: TLS, or plain TCP to a loopback emulator.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
