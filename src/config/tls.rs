//! The `tls:` section: a second caller-facing listener that speaks TLS and, with
//! `client_ca_file`, requires client certificates (the mTLS method of `callers`). Its files
//! are read here, so `check` and a reload refuse a bad one before any connection meets it.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{invalid, parse_addr};
use super::sources::{KeySources, resolve};
pub use crate::tls::config::TlsConfig;

/// The `tls:` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    listen: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
}

impl RawTls {
    pub(super) fn validate(self, sources: &KeySources) -> Result<TlsConfig, ConfigError> {
        let listen = parse_addr("tls.listen", &self.listen)?;
        let cert_file = resolve(sources, &self.cert_file);
        let key_file = resolve(sources, &self.key_file);
        let client_ca_file = self.client_ca_file.map(|path| resolve(sources, &path));
        let server = crate::tls::server_config(&cert_file, &key_file, client_ca_file.as_deref())
            .map_err(|error| invalid("tls", error.to_string()))?;
        Ok(TlsConfig {
            listen,
            cert_file,
            key_file,
            client_ca_file,
            server,
        })
    }
}
