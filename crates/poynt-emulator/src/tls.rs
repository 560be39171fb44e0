//! TLS for the emulator: a throwaway CA and a leaf certificate for `localhost`,
//! `127.0.0.1` and any extra names asked for (a compose service's host name), so clients
//! can be made to trust exactly this emulator and nothing else.
//!
//! The leaf key is RSA because, as at poynt.net, it also signs the authorization codes: a
//! client that takes the code key from the TLS certificate gets the right one.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::EmulatorError;
use super::keys::SigningKey;

/// The certificates and the rustls configuration serving them.
pub(crate) struct Tls {
    /// The CA certificate PEM clients must trust.
    pub(crate) ca_pem: String,
    /// Server configuration with ALPN `h2` and `http/1.1`.
    pub(crate) config: Arc<ServerConfig>,
    /// The leaf certificate PEM (what a client configured with the certificate holds).
    pub(crate) leaf_pem: String,
    /// The leaf's key, which signs authorization codes.
    pub(crate) leaf_key: SigningKey,
    /// Base64 SHA-256 of the leaf's SubjectPublicKeyInfo: what a browser is told to trust
    /// (`--ignore-certificate-errors-spki-list`) to reach exactly this emulator.
    pub(crate) spki_pin: String,
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

    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .map_err(cert_error("generating the leaf key"))?;
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
    let spki = webpki::EndEntityCert::try_from(leaf_cert.der())
        .map_err(|e| EmulatorError::LeafSpki {
            found: e.to_string(),
        })?
        .subject_public_key_info();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
        leaf_pem: leaf_cert.pem(),
        leaf_key: SigningKey::from_pem(
            &leaf_key.serialize_pem(),
            &leaf_key.public_key_pem(),
            "authorization codes (the TLS leaf, as poynt.net)",
        )?,
        spki_pin: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest),
    })
}
