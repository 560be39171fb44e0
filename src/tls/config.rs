//! The checked `tls:` settings, built by `config::tls` and read by the lifecycle (which
//! binds the listener) and the reload (which swaps the material).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The caller-facing TLS listener.
#[derive(Clone)]
pub struct TlsConfig {
    /// Where callers connect over TLS (`listen` stays plaintext beside it).
    pub listen: SocketAddr,
    /// The server certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// The server certificate's private key (PEM).
    pub key_file: PathBuf,
    /// The CAs client certificates must chain to; `None`: no client certificate asked for.
    pub client_ca_file: Option<PathBuf>,
    /// The rustls configuration those files make, built when the configuration is checked.
    pub server: Arc<rustls::ServerConfig>,
}

/// Paths only: the built configuration holds the private key.
impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("listen", &self.listen)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("client_ca_file", &self.client_ca_file)
            .finish_non_exhaustive()
    }
}
