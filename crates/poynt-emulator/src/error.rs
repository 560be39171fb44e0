//! The emulator's two error families: `EmulatorError` for starting and running it (returned
//! to the Rust caller or the CLI), and `ApiError` for refusals it answers on the wire in
//! Poynt's error shape.

use std::io;
use std::path::PathBuf;

use bytes::Bytes;
use hyper::StatusCode;

use poynt_wire::ErrorBody;
use poynt_wire::MerchantId;

/// Why the emulator could not start or keep running. Each message says what was expected
/// and what was found, and chains the underlying cause.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The configured application id is not in Poynt's `urn:aid:` form.
    #[error("expected the application id to start with \"urn:aid:\"; found {found:?}")]
    InvalidAppId {
        /// The rejected id.
        found: String,
    },
    /// The registered application key is not a usable RSA public key.
    #[error(
        "expected the application public key as an RSA public key in PEM form \
         (\"PUBLIC KEY\" or \"RSA PUBLIC KEY\"); it did not parse"
    )]
    InvalidAppPublicKey {
        /// What the JWT library disliked.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The crypto library could not make a key pair.
    #[error("expected to generate a key pair for {purpose}; key generation failed")]
    KeyGeneration {
        /// Which key was being made.
        purpose: &'static str,
        /// The crypto library's error.
        #[source]
        source: rcgen::Error,
    },
    /// A freshly generated key did not load as a JWT key.
    #[error("expected the generated {purpose} key to load as an RS256 JWT key; it did not")]
    JwtKey {
        /// Which key was being loaded.
        purpose: &'static str,
        /// What the JWT library disliked.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Key generation ran on a blocking thread that did not finish.
    #[error("expected the key generation task to finish; it {found}")]
    KeyTask {
        /// How it ended instead ("panicked", "was cancelled").
        found: String,
    },
    /// The TLS certificate could not be made.
    #[error("expected to make the emulator's TLS certificate ({step}); it failed")]
    Certificate {
        /// Which certificate step failed.
        step: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the certificate chain or protocol settings.
    #[error("expected rustls to accept the emulator's certificate chain and protocol versions")]
    TlsConfig {
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// The listener handed to `start` has no local address.
    #[error("expected the listener to report its local address; it could not")]
    LocalAddr {
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The CLI could not bind its listen address.
    #[error("expected to listen on {addr}; binding failed")]
    Bind {
        /// The requested address.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The CLI could not read a file it was pointed at.
    #[error("expected to read the {what} from {path}; reading failed")]
    ReadFile {
        /// What the file should hold.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The CLI could not write an output file.
    #[error("expected to write the {what} to {path}; writing failed")]
    WriteFile {
        /// What was being written.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// No app public key was given and nowhere was given to put a generated private key.
    #[error(
        "expected --app-private-key-out FILE when --app-public-key is absent (a new app key \
         pair is generated and its private key must be written somewhere); found neither"
    )]
    MissingPrivateKeyOut,
    /// `--ca-out` was given without `--tls`.
    #[error(
        "expected --tls together with --ca-out (without TLS there is no CA); found --ca-out alone"
    )]
    CaOutWithoutTls,
    /// The leaf certificate just made did not parse back (a bug).
    #[error("expected the emulator's leaf certificate to parse; found: {found}")]
    LeafSpki {
        /// The parser's complaint.
        found: String,
    },
    /// The CLI could not watch for its stop signal.
    #[error("expected to install a {signal} handler; it failed")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A refusal the emulator answers on the wire. One variant per Poynt error code;
/// `status()` and `code()` are exhaustive so adding a variant forces a decision on both.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The `api-version` header is absent.
    #[error("expected the header api-version (Poynt requires it on every call); found none")]
    MissingApiVersion,
    /// The request is malformed in a way no more specific code covers.
    #[error("{0}")]
    InvalidRequest(String),
    /// `/token` named no grant, or one the emulator does not know.
    #[error("{0}")]
    InvalidGrantType(String),
    /// The self-signed assertion failed a check.
    #[error("invalid assertion: {0}")]
    InvalidAssertion(String),
    /// The assertion or refresh token acts for a merchant who has not authorized the app.
    #[error("merchant {0} has not authorized this application")]
    MerchantNotAuthorized(MerchantId),
    /// The refresh token is unknown or already used.
    #[error("{0}")]
    InvalidRefreshToken(&'static str),
    /// The authorization code failed a check.
    #[error("invalid authorization code: {0}")]
    InvalidAuthorizationCode(String),
    /// The client id of an authorize or code call is not the registered app.
    #[error("{0}")]
    InvalidClient(String),
    /// The API call's bearer token is missing, unknown, expired or revoked.
    #[error("{0}")]
    InvalidAccessToken(&'static str),
    /// The token is valid but for another merchant.
    #[error("{0}")]
    AccessDenied(String),
    /// No such route.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("expected method {expected} on {path}; found {found}")]
    MethodNotAllowed {
        /// The method the route answers.
        expected: &'static str,
        /// The request's method.
        found: String,
        /// The route.
        path: &'static str,
    },
    /// The `api_throttle` fault: Poynt rate-limiting a merchant, retry after these seconds.
    #[error(
        "emulated throttling: too many requests for this merchant; retry after {0} s (injected through /_emulator/fault)"
    )]
    Throttled(u64),
    /// A fault injected through the control API.
    #[error("emulated fault: this status was injected through /_emulator/fault")]
    InjectedFault(StatusCode),
    /// The emulator itself failed (e.g. signing a token).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status Poynt answers for this refusal.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingApiVersion => StatusCode::BAD_REQUEST,
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidGrantType(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidAssertion(_) => StatusCode::UNAUTHORIZED,
            ApiError::MerchantNotAuthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::InvalidRefreshToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::InvalidAuthorizationCode(_) => StatusCode::UNAUTHORIZED,
            ApiError::InvalidClient(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidAccessToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::AccessDenied(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InjectedFault(status) => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `code` field of the error body.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::MissingApiVersion => "MISSING_API_VERSION",
            ApiError::InvalidRequest(_) => "INVALID_REQUEST",
            ApiError::InvalidGrantType(_) => "INVALID_GRANT_TYPE",
            ApiError::InvalidAssertion(_) => "INVALID_ASSERTION",
            ApiError::MerchantNotAuthorized(_) => "MERCHANT_NOT_AUTHORIZED",
            ApiError::InvalidRefreshToken(_) => "INVALID_REFRESH_TOKEN",
            ApiError::InvalidAuthorizationCode(_) => "INVALID_AUTHORIZATION_CODE",
            ApiError::InvalidClient(_) => "INVALID_CLIENT",
            ApiError::InvalidAccessToken(_) => "INVALID_ACCESS_TOKEN",
            ApiError::AccessDenied(_) => "ACCESS_DENIED",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::Throttled(_) => "TOO_MANY_REQUESTS",
            ApiError::InjectedFault(_) => "EMULATED_FAULT",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The Poynt error body for this refusal, quoting the request's id.
    pub(crate) fn body(&self, request_id: &str) -> Bytes {
        let mut body = ErrorBody::new(self.code(), self.status().as_u16(), self.to_string());
        body.request_id = Some(request_id.to_owned());
        body.to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_documented_status() {
        let merchant = MerchantId::parse("c9580c24-b61e-4e0d-ad26-1dd1d3943d2c").unwrap();
        let cases = [
            (ApiError::MissingApiVersion, 400, "MISSING_API_VERSION"),
            (ApiError::InvalidRequest("x".into()), 400, "INVALID_REQUEST"),
            (
                ApiError::InvalidGrantType("x".into()),
                400,
                "INVALID_GRANT_TYPE",
            ),
            (
                ApiError::InvalidAssertion("x".into()),
                401,
                "INVALID_ASSERTION",
            ),
            (
                ApiError::MerchantNotAuthorized(merchant),
                401,
                "MERCHANT_NOT_AUTHORIZED",
            ),
            (
                ApiError::InvalidRefreshToken("x"),
                401,
                "INVALID_REFRESH_TOKEN",
            ),
            (
                ApiError::InvalidAuthorizationCode("x".into()),
                401,
                "INVALID_AUTHORIZATION_CODE",
            ),
            (ApiError::InvalidClient("x".into()), 400, "INVALID_CLIENT"),
            (
                ApiError::InvalidAccessToken("x"),
                401,
                "INVALID_ACCESS_TOKEN",
            ),
            (ApiError::AccessDenied("x".into()), 403, "ACCESS_DENIED"),
            (ApiError::NotFound("x".into()), 404, "NOT_FOUND"),
            (
                ApiError::MethodNotAllowed {
                    expected: "POST",
                    found: "GET".into(),
                    path: "/token",
                },
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (ApiError::Throttled(5), 429, "TOO_MANY_REQUESTS"),
            (
                ApiError::InjectedFault(StatusCode::BAD_GATEWAY),
                502,
                "EMULATED_FAULT",
            ),
            (ApiError::Internal("x".into()), 500, "INTERNAL_ERROR"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code, "{error:?}");
        }
    }

    #[test]
    fn body_is_poynt_shaped_and_quotes_request_id() {
        let body = ApiError::MissingApiVersion.body("req-1");
        let parsed: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.code, "MISSING_API_VERSION");
        assert_eq!(parsed.http_status, 400);
        assert_eq!(parsed.request_id.as_deref(), Some("req-1"));
        assert!(parsed.message.contains("api-version"));
    }
}
