//! RSA keys: the ones the emulator signs with (access tokens, authorization codes) and the
//! app key pairs tests and the CLI generate to stand for a registered application.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

use super::error::EmulatorError;

/// Generates an RSA-2048 key pair as Poynt's developer portal hands one out: returns the
/// PKCS#8 private key PEM (for signing assertions) and the SPKI public key PEM (what the
/// emulator is configured with). Exists so tests and the demo need no key files.
pub fn generate_app_key() -> Result<(String, String), EmulatorError> {
    generate_rsa("the application")
}

/// Makes an RSA-2048 key pair; returns `(PKCS#8 private PEM, SPKI public PEM)`.
fn generate_rsa(purpose: &'static str) -> Result<(String, String), EmulatorError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .map_err(|source| EmulatorError::KeyGeneration { purpose, source })?;
    Ok((pair.serialize_pem(), pair.public_key_pem()))
}

/// A key the emulator signs JWTs with, plus what a verifier needs.
pub(crate) struct SigningKey {
    /// Private half, for signing.
    encoding: EncodingKey,
    /// Public half, for checking tokens the emulator issued itself.
    decoding: DecodingKey,
    /// Public half as SPKI PEM, published through the API and `/_emulator/keys`.
    public_pem: String,
}

impl SigningKey {
    /// Generates a fresh RSA-2048 signing key. `purpose` names it in errors.
    pub(crate) fn generate(purpose: &'static str) -> Result<Self, EmulatorError> {
        let (private_pem, public_pem) = generate_rsa(purpose)?;
        Self::from_pem(&private_pem, &public_pem, purpose)
    }

    /// A signing key from an RSA key pair's PKCS#8 private and SPKI public PEM.
    pub(crate) fn from_pem(
        private_pem: &str,
        public_pem: &str,
        purpose: &'static str,
    ) -> Result<Self, EmulatorError> {
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes())
            .map_err(|source| EmulatorError::JwtKey { purpose, source })?;
        let decoding = DecodingKey::from_rsa_pem(public_pem.as_bytes())
            .map_err(|source| EmulatorError::JwtKey { purpose, source })?;
        Ok(Self {
            encoding,
            decoding,
            public_pem: public_pem.to_owned(),
        })
    }

    /// Generates on a blocking thread: RSA key generation takes tens of milliseconds and
    /// must not stall the runtime.
    pub(crate) async fn generate_off_runtime(purpose: &'static str) -> Result<Self, EmulatorError> {
        off_runtime(move || Self::generate(purpose)).await
    }

    /// Signs `claims` as an RS256 JWT with header `{"alg":"RS256"}`, as Poynt writes it.
    pub(crate) fn sign<T: Serialize>(
        &self,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = None;
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// The public half, for signature checks.
    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public half as SPKI PEM.
    pub(crate) fn public_pem(&self) -> &str {
        &self.public_pem
    }
}

/// Runs `make` (RSA key generation) on a blocking thread so it does not stall the runtime.
pub(crate) async fn off_runtime<T: Send + 'static>(
    make: impl FnOnce() -> Result<T, EmulatorError> + Send + 'static,
) -> Result<T, EmulatorError> {
    tokio::task::spawn_blocking(make)
        .await
        .map_err(|join| EmulatorError::KeyTask {
            found: if join.is_panic() {
                "panicked".to_owned()
            } else {
                "was cancelled".to_owned()
            },
        })?
}

/// Loads the registered application's public key; both SPKI (`PUBLIC KEY`) and PKCS#1
/// (`RSA PUBLIC KEY`) PEM are accepted, as the developer portal has issued both.
pub(crate) fn load_app_public_key(pem: &str) -> Result<DecodingKey, EmulatorError> {
    DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|source| EmulatorError::InvalidAppPublicKey { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_key_is_pkcs8_private_and_spki_public() {
        let (private_pem, public_pem) = generate_app_key().unwrap();
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(EncodingKey::from_rsa_pem(private_pem.as_bytes()).is_ok());
        assert!(load_app_public_key(&public_pem).is_ok());
    }

    #[test]
    fn non_rsa_public_key_is_refused() {
        let ec = rcgen::KeyPair::generate().unwrap().public_key_pem();
        let err = load_app_public_key(&ec).err().unwrap();
        assert!(err.to_string().contains("RSA public key"), "{err}");
    }
}
