//! The mTLS method: the caller is named by the client certificate the TLS listener verified
//! (its chain to `tls.client_ca_file` is rustls' job, done at the handshake). Which of the
//! certificate's names counts is configured: the SPIFFE ID in a URI SAN, a DNS SAN, or the
//! subject CN, tried in the configured order.

use std::sync::Arc;

use super::config::{MtlsConfig, PeerName};
use super::error::AuthError;
use super::policy::valid_caller_name;
use crate::tls::peer::PeerNames;

impl PeerName {
    /// The configuration word for this name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uri => "uri",
            Self::Dns => "dns",
            Self::Cn => "cn",
        }
    }

    /// The name of the configuration word `word`.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "uri" => Some(Self::Uri),
            "dns" => Some(Self::Dns),
            "cn" => Some(Self::Cn),
            _ => None,
        }
    }

    /// The first name of this kind `peer` carries that is a valid caller name.
    fn of(self, peer: &PeerNames) -> Option<&str> {
        let usable = |name: &&str| valid_caller_name(name).is_ok();
        match self {
            Self::Uri => peer.uris.iter().map(String::as_str).find(usable),
            Self::Dns => peer.dns.iter().map(String::as_str).find(usable),
            Self::Cn => peer.common_name.as_deref().filter(usable),
        }
    }
}

/// The caller `peer`'s certificate names: the first usable name of the kinds `config`
/// lists, in its order. A certificate with none is refused, not passed to other methods.
pub(super) fn identify(config: &MtlsConfig, peer: &PeerNames) -> Result<Arc<str>, AuthError> {
    config
        .identity
        .iter()
        .find_map(|kind| kind.of(peer))
        .map(Arc::from)
        .ok_or_else(|| AuthError::NoCertificateName {
            expected: config
                .identity
                .iter()
                .map(|kind| kind.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerNames {
        PeerNames {
            uris: vec![
                "spiffe://shop.test/ns/a b".into(),
                "spiffe://shop.test/ns/shop/sa/payments".into(),
            ],
            dns: vec!["payments.shop.svc".into()],
            common_name: Some("payments".into()),
        }
    }

    #[test]
    fn the_first_usable_name_of_the_configured_kinds_wins() {
        let order = |identity: Vec<PeerName>| identify(&MtlsConfig { identity }, &peer());
        assert_eq!(
            &*order(vec![PeerName::Uri, PeerName::Cn]).unwrap(),
            "spiffe://shop.test/ns/shop/sa/payments",
            "a URI with a space is no caller name; the next one is"
        );
        assert_eq!(&*order(vec![PeerName::Dns]).unwrap(), "payments.shop.svc");
        assert_eq!(
            &*order(vec![PeerName::Cn, PeerName::Uri]).unwrap(),
            "payments"
        );
        let none = identify(
            &MtlsConfig {
                identity: vec![PeerName::Uri, PeerName::Dns],
            },
            &PeerNames::default(),
        )
        .unwrap_err();
        assert_eq!(
            none.to_string(),
            "expected a client certificate naming the caller (uri, dns); found none usable"
        );
    }
}
