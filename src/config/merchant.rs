//! The `merchant:` section: the header callers name their merchant in, and the optional
//! allow-list (inline or from a file).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderName;
use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{invalid, read_merchant_file};
use super::sources::{KeySources, resolve};
use poynt_wire::MerchantId;

/// The header callers name their merchant in.
const DEFAULT_MERCHANT_HEADER: &str = "X-Poynt-Merchant-Id";

/// Merchant naming.
#[derive(Debug, Clone)]
pub struct MerchantConfig {
    /// Header that carries the business ID; stripped before forwarding.
    pub header: HeaderName,
    /// When set, only these merchants are served; any other gets 403 before any grant.
    pub allow: Option<Arc<HashSet<MerchantId>>>,
}

/// The `merchant:` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMerchant {
    #[serde(default = "default_merchant_header")]
    header: String,
    allow: Option<Vec<String>>,
    allow_file: Option<PathBuf>,
}

impl Default for RawMerchant {
    fn default() -> Self {
        Self {
            header: default_merchant_header(),
            allow: None,
            allow_file: None,
        }
    }
}

fn default_merchant_header() -> String {
    DEFAULT_MERCHANT_HEADER.into()
}

impl RawMerchant {
    pub(super) fn validate(self, sources: &KeySources) -> Result<MerchantConfig, ConfigError> {
        let header = HeaderName::try_from(self.header.as_str()).map_err(|_| {
            invalid(
                "merchant.header",
                format!("{:?} is not a valid HTTP header name", self.header),
            )
        })?;
        if self.allow.is_none() && self.allow_file.is_none() {
            return Ok(MerchantConfig {
                header,
                allow: None,
            });
        }
        let mut allow = HashSet::new();
        for (index, text) in self.allow.iter().flatten().enumerate() {
            let id = MerchantId::parse(text.trim())
                .map_err(|e| invalid("merchant.allow", format!("entry {}: {e}", index + 1)))?;
            allow.insert(id);
        }
        if let Some(path) = &self.allow_file {
            read_merchant_file(&resolve(sources, path), &mut allow)
                .map_err(|problem| invalid("merchant.allow_file", problem))?;
        }
        if allow.is_empty() {
            return Err(invalid(
                "merchant.allow",
                "expected at least one business ID in merchant.allow or merchant.allow_file; found none (remove both to serve every merchant)",
            ));
        }
        Ok(MerchantConfig {
            header,
            allow: Some(Arc::new(allow)),
        })
    }
}
