//! The `callers:` section: how callers prove who they are (`authentication`), what each may
//! do (`policy`) and whether refusals are answered or only counted (`mode`). Files it names
//! are read here, so `check` and a reload refuse a bad one before any request meets it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::{duration_at_most, invalid, parse_url, read_merchant_file};
use super::sources::{KeySources, resolve};
use crate::callers::api_key::ApiKeys;
pub use crate::callers::config::{
    CallersConfig, JwksSource, JwtConfig, Mode, MtlsConfig, PeerName,
};
use crate::callers::jwks::Jwks;
use crate::callers::policy::{CallerPolicy, Merchants, Policy, Rule, valid_caller_name};
use poynt_wire::MerchantId;

/// Clock skew allowed on `exp` and `nbf` unless configured: Kubernetes nodes keep time
/// within seconds; a minute covers a slow NTP step.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Longest leeway accepted: more would make `exp` meaningless.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// The `callers:` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallers {
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default)]
    authentication: RawAuthentication,
    #[serde(default)]
    policy: BTreeMap<String, RawCallerPolicy>,
}

fn default_mode() -> String {
    "enforce".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuthentication {
    api_keys: Option<RawApiKeys>,
    jwt: Option<RawJwt>,
    mtls: Option<RawMtls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMtls {
    #[serde(default = "default_peer_name")]
    identity: OneOrMany,
}

fn default_peer_name() -> OneOrMany {
    OneOrMany::One("uri".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKeys {
    file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    issuer: String,
    audience: OneOrMany,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_identity_claim")]
    identity_claim: String,
    #[serde(default = "default_leeway", with = "humantime_serde")]
    leeway: Duration,
}

fn default_identity_claim() -> String {
    "sub".into()
}

fn default_leeway() -> Duration {
    DEFAULT_LEEWAY
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallerPolicy {
    merchants: Option<OneOrMany>,
    merchants_file: Option<PathBuf>,
    #[serde(default)]
    allow: Vec<String>,
}

impl RawCallers {
    pub(super) fn validate(self, sources: &KeySources) -> Result<CallersConfig, ConfigError> {
        let mode = match self.mode.as_str() {
            "observe" => Mode::Observe,
            "enforce" => Mode::Enforce,
            other => {
                return Err(invalid(
                    "callers.mode",
                    format!("expected observe or enforce; found {other:?}"),
                ));
            }
        };
        let auth = self.authentication;
        let api_keys = auth
            .api_keys
            .map(|raw| {
                let path = resolve(sources, &raw.file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        "callers.authentication.api_keys.file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                ApiKeys::parse(&text).map_err(|e| {
                    invalid(
                        "callers.authentication.api_keys.file",
                        format!("{}: {e}", path.display()),
                    )
                })
            })
            .transpose()?;
        let jwt = auth.jwt.map(|raw| raw.validate(sources)).transpose()?;
        let mtls = auth.mtls.map(RawMtls::validate).transpose()?;
        if api_keys.is_none() && jwt.is_none() && mtls.is_none() {
            return Err(invalid(
                "callers.authentication",
                "expected at least one method (api_keys, jwt, mtls); found none",
            ));
        }
        if self.policy.is_empty() {
            return Err(invalid(
                "callers.policy",
                "expected at least one caller with its merchants and allow rules; found none (every caller would be refused)",
            ));
        }
        let mut callers = BTreeMap::new();
        for (name, raw) in self.policy {
            valid_caller_name(&name).map_err(|e| invalid("callers.policy", e))?;
            let policy = raw.validate(&name, sources)?;
            callers.insert(Arc::from(name.as_str()), Arc::new(policy));
        }
        Ok(CallersConfig {
            mode,
            api_keys,
            jwt,
            mtls,
            policy: Policy::new(callers),
        })
    }
}

impl RawMtls {
    fn validate(self) -> Result<MtlsConfig, ConfigError> {
        let words = match self.identity {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        };
        let mut identity = Vec::with_capacity(words.len());
        for word in &words {
            let name = PeerName::parse(word).ok_or_else(|| {
                invalid(
                    "callers.authentication.mtls.identity",
                    format!("expected uri, dns or cn (or a list of them); found {word:?}"),
                )
            })?;
            if !identity.contains(&name) {
                identity.push(name);
            }
        }
        if identity.is_empty() {
            return Err(invalid(
                "callers.authentication.mtls.identity",
                "expected uri, dns or cn (or a list of them); found an empty list",
            ));
        }
        Ok(MtlsConfig { identity })
    }
}

impl RawJwt {
    fn validate(self, sources: &KeySources) -> Result<JwtConfig, ConfigError> {
        if self.issuer.trim().is_empty() {
            return Err(invalid(
                "callers.authentication.jwt.issuer",
                "expected the iss tokens carry; found an empty string",
            ));
        }
        let audience = match self.audience {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        };
        if audience.is_empty() || audience.iter().any(|a| a.trim().is_empty()) {
            return Err(invalid(
                "callers.authentication.jwt.audience",
                "expected one or more non-empty audiences; found none or an empty one",
            ));
        }
        let jwks = match (self.jwks_file, self.jwks_url) {
            (Some(path), None) => {
                let path = resolve(sources, &path);
                let bytes = std::fs::read(&path).map_err(|e| {
                    invalid(
                        "callers.authentication.jwt.jwks_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                JwksSource::File(Jwks::parse(&bytes).map_err(|e| {
                    invalid(
                        "callers.authentication.jwt.jwks_file",
                        format!("{}: {e}", path.display()),
                    )
                })?)
            }
            (None, Some(url)) => {
                let url = parse_url("callers.authentication.jwt.jwks_url", &url)?;
                let extra_roots = match &self.ca_file {
                    Some(path) => {
                        crate::upstream::read_ca_file(&resolve(sources, path)).map_err(|e| {
                            invalid("callers.authentication.jwt.ca_file", e.to_string())
                        })?
                    }
                    None => Vec::new(),
                };
                JwksSource::Url { url, extra_roots }
            }
            (file, url) => {
                return Err(invalid(
                    "callers.authentication.jwt",
                    format!(
                        "expected exactly one of jwks_file and jwks_url; found {}",
                        if file.is_some() && url.is_some() {
                            "both"
                        } else {
                            "neither"
                        }
                    ),
                ));
            }
        };
        if self.ca_file.is_some() && matches!(jwks, JwksSource::File(_)) {
            return Err(invalid(
                "callers.authentication.jwt.ca_file",
                "expected ca_file only with jwks_url (it is whom the JWKS server is trusted by); found it with jwks_file",
            ));
        }
        if self.identity_claim.trim().is_empty() {
            return Err(invalid(
                "callers.authentication.jwt.identity_claim",
                "expected a claim name such as sub; found an empty string",
            ));
        }
        Ok(JwtConfig {
            issuer: self.issuer,
            audience,
            jwks,
            identity_claim: self.identity_claim,
            leeway: duration_at_most("callers.authentication.jwt.leeway", self.leeway, MAX_LEEWAY)?,
        })
    }
}

impl RawCallerPolicy {
    fn validate(self, name: &str, sources: &KeySources) -> Result<CallerPolicy, ConfigError> {
        let key = "callers.policy";
        let merchants = match (self.merchants, self.merchants_file) {
            (Some(OneOrMany::One(word)), None) => match word.as_str() {
                "all" => Merchants::All,
                "onboarded" => Merchants::Onboarded,
                other => {
                    return Err(invalid(
                        key,
                        format!(
                            "{name}.merchants: expected all, onboarded, or a list of business IDs; found {other:?}"
                        ),
                    ));
                }
            },
            (Some(OneOrMany::Many(list)), None) => {
                let mut ids = HashSet::new();
                for (index, text) in list.iter().enumerate() {
                    let id = MerchantId::parse(text.trim()).map_err(|e| {
                        invalid(key, format!("{name}.merchants entry {}: {e}", index + 1))
                    })?;
                    ids.insert(id);
                }
                Merchants::Listed(ids)
            }
            (None, Some(path)) => {
                let mut ids = HashSet::new();
                read_merchant_file(&resolve(sources, &path), &mut ids)
                    .map_err(|problem| invalid(key, format!("{name}.merchants_file: {problem}")))?;
                Merchants::Listed(ids)
            }
            (merchants, file) => {
                return Err(invalid(
                    key,
                    format!(
                        "{name}: expected exactly one of merchants and merchants_file; found {}",
                        if merchants.is_some() && file.is_some() {
                            "both"
                        } else {
                            "neither"
                        }
                    ),
                ));
            }
        };
        if matches!(&merchants, Merchants::Listed(ids) if ids.is_empty()) {
            return Err(invalid(
                key,
                format!("{name}.merchants: expected at least one business ID; found none"),
            ));
        }
        if self.allow.is_empty() {
            return Err(invalid(
                key,
                format!(
                    "{name}.allow: expected at least one rule such as \"GET /businesses/*/orders*\"; found none"
                ),
            ));
        }
        let rules = self
            .allow
            .iter()
            .enumerate()
            .map(|(index, text)| {
                Rule::parse(text)
                    .map_err(|e| invalid(key, format!("{name}.allow entry {}: {e}", index + 1)))
            })
            .collect::<Result<_, _>>()?;
        Ok(CallerPolicy { merchants, rules })
    }
}
