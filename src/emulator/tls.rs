//! TLS for the emulator: a throwaway CA and a leaf certificate for `localhost`,
//! `127.0.0.1` and any extra names asked for (a compose service's host name), so clients
//! can be made to trust exactly this emulator and nothing else.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::EmulatorError;

/// The certificates and the rustls configuration serving them.
pub(crate) struct Tls {
    /// The CA certificate PEM clients must trust.
    pub(crate) ca_pem: String,
    /// Server configuration with ALPN `h2` and `http/1.1`.
    pub(crate) config: Arc<ServerConfig>,
}

/// Makes the CA, the leaf (for `localhost`, `127.0.0.1` and `extra_names`, each a DNS name
/// or an IP address) and the server configuration.
pub(crate) fn make(extra_names: &[String]) -> Result<Tls, EmulatorError> {
    let cert_error = |step| move |source| EmulatorError::Certificate { step, source };

    let ca_key = KeyPair::generate().map_err(cert_error("generating the CA key"))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(cert_error("CA parameters"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "poynt-emulator test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(cert_error("self-signing the CA"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().map_err(cert_error("generating the leaf key"))?;
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()]
        .into_iter()
        .chain(extra_names.iter().cloned())
        .collect::<Vec<_>>();
    let mut leaf_params = CertificateParams::new(names).map_err(cert_error("leaf parameters"))?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(cert_error("signing the leaf"))?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| EmulatorError::TlsConfig { source })?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)
        .map_err(|source| EmulatorError::TlsConfig { source })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}
