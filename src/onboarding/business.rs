//! The business's name for the success page. After the code exchange the callback asks
//! Poynt (`GET /businesses/{id}` with the merchant's new token, bounded by
//! [`LOOKUP_TIMEOUT`]) for `doingBusinessAs`, else `legalName`; any failure gives no name
//! and the page shows the business ID, never an error.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;

use crate::token::config::PoyntConfig;
use crate::upstream::{self, BoxError, HttpClient, UpstreamError};
use poynt_wire::{API_VERSION_HEADER, MerchantId};

/// The longest wait for the name: the merchant is waiting for the page.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest business record read; Poynt's are a few kilobytes.
const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Longest name shown, in characters.
pub const MAX_NAME_CHARS: usize = 120;

/// Why no name was had (logged; the page shows the ID).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No answer in time.
    #[error("expected the business record within {0:?}; none came")]
    Timeout(Duration),
    /// The request failed on the way.
    #[error("the business record request failed: {0}")]
    Transport(String),
    /// Poynt answered, but not with the record.
    #[error("expected 200 with the business record; found {0}")]
    Status(StatusCode),
    /// The record had no usable name.
    #[error("expected doingBusinessAs or legalName in the business record; found {0}")]
    NoName(String),
}

/// Asks Poynt for business names.
pub struct BusinessLookup {
    http: HttpClient,
    api_url: String,
    api_version: HeaderValue,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    doing_business_as: Option<String>,
    legal_name: Option<String>,
}

impl BusinessLookup {
    /// A client for `poynt.api_url`, with its trust and connect timeout.
    pub fn new(poynt: &PoyntConfig) -> Result<Self, UpstreamError> {
        Ok(Self {
            http: upstream::client(&poynt.extra_roots, poynt.connect_timeout)?,
            api_url: poynt.api_url.to_string().trim_end_matches('/').to_owned(),
            api_version: poynt.api_version.clone(),
        })
    }

    /// The name `merchant` trades under, asked with its `Authorization` value.
    pub async fn name(
        &self,
        merchant: MerchantId,
        authorization: &HeaderValue,
    ) -> Result<String, LookupError> {
        tokio::time::timeout(LOOKUP_TIMEOUT, self.fetch(merchant, authorization))
            .await
            .map_err(|_| LookupError::Timeout(LOOKUP_TIMEOUT))?
    }

    async fn fetch(
        &self,
        merchant: MerchantId,
        authorization: &HeaderValue,
    ) -> Result<String, LookupError> {
        let transport = |e: &dyn std::fmt::Display| LookupError::Transport(e.to_string());
        let uri: Uri = format!("{}/businesses/{merchant}", self.api_url)
            .parse()
            .map_err(|e| transport(&e))?;
        let body = Full::new(Bytes::new())
            .map_err(|never| -> BoxError { match never {} })
            .boxed();
        let request = Request::get(uri)
            .header(AUTHORIZATION, authorization.clone())
            .header(API_VERSION_HEADER, self.api_version.clone())
            .header(ACCEPT, "application/json")
            .body(body)
            .map_err(|e| transport(&e))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| transport(&e))?;
        if response.status() != StatusCode::OK {
            return Err(LookupError::Status(response.status()));
        }
        let bytes = Limited::new(response.into_body(), MAX_RECORD_BYTES)
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|e| LookupError::NoName(format!("a body that is not the record ({e})")))?;
        [record.doing_business_as, record.legal_name]
            .into_iter()
            .flatten()
            .map(|name| name.trim().chars().take(MAX_NAME_CHARS).collect::<String>())
            .find(|name| !name.is_empty())
            .ok_or_else(|| LookupError::NoName("neither, or both empty".to_owned()))
    }
}
