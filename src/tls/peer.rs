//! The names a verified client certificate carries: its URI SANs (a SPIFFE ID), DNS SANs
//! and subject common name. Read once per connection, after the handshake verified the
//! chain, and handed to every request of the connection as an extension.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The names of a connection's client certificate. A certificate that cannot be parsed
/// (rustls verified its chain, so this is not expected) carries none, which refuses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerNames {
    /// URI subject alternative names, in certificate order.
    pub uris: Vec<String>,
    /// DNS subject alternative names, in certificate order.
    pub dns: Vec<String>,
    /// The subject's first common name.
    pub common_name: Option<String>,
}

impl PeerNames {
    /// The names of the DER certificate `der`.
    pub fn from_der(der: &[u8]) -> Self {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return Self::default();
        };
        let mut names = Self {
            common_name: cert
                .subject()
                .iter_common_name()
                .find_map(|cn| cn.as_str().ok())
                .map(str::to_owned),
            ..Self::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => names.uris.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => names.dns.push((*dns).to_owned()),
                    _ => {}
                }
            }
        }
        names
    }
}
