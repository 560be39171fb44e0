//! The checked `callers:` settings, built by `config::callers` and read by [`super::Callers`].
//! Files the section names (API key hashes, a JWKS, merchant lists) are read when the
//! configuration is checked, so `check` and a reload refuse a bad file before any request.

use std::time::Duration;

use http::Uri;
use rustls_pki_types::CertificateDer;

use super::api_key::ApiKeys;
use super::jwks::Jwks;
use super::policy::Policy;

/// Who may call the proxy, how they prove it, and what each may do.
#[derive(Debug, Clone)]
pub struct CallersConfig {
    /// Refuse (`enforce`) or only log and count (`observe`) what the policy would refuse.
    pub mode: Mode,
    /// API keys by caller name (hashes only), when that method is configured.
    pub api_keys: Option<ApiKeys>,
    /// JWT bearer verification, when that method is configured.
    pub jwt: Option<JwtConfig>,
    /// Client certificates from the TLS listener, when that method is configured.
    pub mtls: Option<MtlsConfig>,
    /// What each caller may do; a caller without an entry may do nothing.
    pub policy: Policy,
}

/// Whether refusals are answered or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Log and count what `enforce` would refuse, and serve it: a fleet switches on safely.
    Observe,
    /// Answer 401/403 and never forward, look up a token or start a grant.
    Enforce,
}

impl Mode {
    /// The `mode` label of `poynt_proxy_caller_refusals_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observe => "observe",
            Self::Enforce => "enforce",
        }
    }
}

/// How bearer tokens are verified.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// `aud` must name at least one of these.
    pub audience: Vec<String>,
    /// Where the verification keys come from.
    pub jwks: JwksSource,
    /// The claim that names the caller (`sub` unless configured).
    pub identity_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Where a JWKS comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A file, read when the configuration is checked (and again by a reload).
    File(Jwks),
    /// An HTTPS URL, fetched when a token names a `kid` not yet known (the first token
    /// included), at most once a minute.
    Url {
        /// The JWKS document.
        url: Uri,
        /// Extra trust anchors for the JWKS server, beside the system roots (`ca_file`).
        extra_roots: Vec<CertificateDer<'static>>,
    },
}

/// How a client certificate names its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsConfig {
    /// The kinds of name tried, in order; the first the certificate carries wins.
    pub identity: Vec<PeerName>,
}

/// A kind of name a client certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerName {
    /// A URI subject alternative name: the SPIFFE ID of an SVID.
    Uri,
    /// A DNS subject alternative name.
    Dns,
    /// The subject's common name, for CAs that issue no SANs.
    Cn,
}
