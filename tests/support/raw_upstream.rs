//! A hostile Poynt: a TLS server on loopback that answers each request with exactly the
//! bytes a test gives it (malformed framing included, which the emulator never sends), then
//! keeps the connection open without a further byte until the proxy closes it; a request
//! for a path ending in `/ok` gets a small well-framed answer instead, so a test can see
//! which connection the next request takes. It counts
//! the connections it accepts and those the proxy closed, so a test can tell a reused
//! connection from a new one and see a stalled one given up. With `h2`, it speaks HTTP/2
//! instead: a response head and the start of a body, then silence.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{Builder, Harness, launch, merchant, proxy_yaml};

/// The answer to a request for `/ok`.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// How the upstream speaks.
#[derive(Clone, Copy)]
pub enum Protocol {
    /// HTTP/1.1: each request gets these bytes, verbatim, in one write.
    Http1(&'static [u8]),
    /// HTTP/2: each stream gets a 200 head and these body bytes, and never its end.
    Http2Stall(&'static [u8]),
}

/// The running upstream.
pub struct RawUpstream {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its CA certificate (PEM), for `poynt.ca_file`.
    pub ca_pem: String,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

impl RawUpstream {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Connections the proxy has closed so far.
    pub fn closed(&self) -> usize {
        self.counts.closed.load(Ordering::SeqCst)
    }

    /// Starts serving on an ephemeral loopback port.
    pub async fn start(protocol: Protocol) -> Self {
        let (ca_pem, config) = tls(match protocol {
            Protocol::Http1(_) => b"http/1.1".as_slice(),
            Protocol::Http2Stall(_) => b"h2".as_slice(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let counts = Arc::new(Counts::default());
        let acceptor = TlsAcceptor::from(config);
        let served = counts.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                served.accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, counts) = (acceptor.clone(), served.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        match protocol {
                            Protocol::Http1(reply) => serve_http1(tls, reply).await,
                            Protocol::Http2Stall(body) => serve_h2(tls, body).await,
                        }
                    }
                    counts.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            ca_pem,
            counts,
        }
    }

    /// A proxy (one worker, so every request shares one connection pool) whose API calls go
    /// here, with tokens from a plain-HTTP emulator; `extra` is appended to its config.
    pub async fn proxy(&self, extra: &str) -> Harness {
        let merchants = vec![merchant()];
        let emulator = Builder::default().emulator(&merchants).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("raw-upstream-ca.pem");
        std::fs::write(&ca, &self.ca_pem).expect("write CA");
        let base = emulator.base_url();
        let config_yaml = proxy_yaml(&emulator, &dir, &format!("server:\n  workers: 1\n{extra}"))
            .replace(
                &format!("  api_url: \"{base}\"\n"),
                &format!(
                    "  api_url: \"https://127.0.0.1:{}\"\n  token_url: \"{base}/token\"\n  audience: \"{base}\"\n  ca_file: {:?}\n",
                    self.port,
                    ca.display().to_string()
                ),
            );
        launch(emulator, merchants, config_yaml, dir, None).await
    }
}

/// Reads request heads (the proxy's GETs carry no body) and answers each with `reply` (or,
/// for `/ok`, a well-framed `ok`), until the proxy closes the connection.
async fn serve_http1(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    reply: &'static [u8],
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            let ok = head.windows(4).any(|w| w == b"/ok ");
            let reply = if ok { OK } else { reply };
            if tls.write_all(reply).await.is_err() || tls.flush().await.is_err() {
                return;
            }
        }
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Answers every stream with a 200 head and `body`, never ending it, until the proxy closes
/// the connection.
async fn serve_h2(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    body: &'static [u8],
) {
    let Ok(mut connection) = h2::server::handshake(tls).await else {
        return;
    };
    let mut streams = Vec::new();
    while let Some(Ok((_request, mut respond))) = connection.accept().await {
        let response = http::Response::new(());
        if let Ok(mut send) = respond.send_response(response, false) {
            let _ = send.send_data(bytes::Bytes::from_static(body), false);
            // Kept, so the stream stays open.
            streams.push(send);
        }
    }
}

/// A throwaway CA and a leaf for 127.0.0.1, offering `alpn` only.
pub fn tls(alpn: &[u8]) -> (String, Arc<ServerConfig>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("leaf params");
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone()], key)
        .expect("server config");
    config.alpn_protocols = vec![alpn.to_vec()];
    (ca_cert.pem(), Arc::new(config))
}
