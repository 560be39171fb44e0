//! The `telemetry:` section: `traces`, OpenTelemetry export (off when absent). Builds the
//! [`TracesConfig`] `traces` reads.

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::invalid;
use crate::traces::{Protocol, TracesConfig};

/// The `telemetry:` section as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    traces: Option<RawTraces>,
}

/// `telemetry.traces` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraces {
    endpoint: String,
    #[serde(default = "default_protocol")]
    protocol: String,
    #[serde(default = "default_sample_ratio")]
    sample_ratio: f64,
    #[serde(default)]
    trust_incoming: bool,
    #[serde(default = "default_true")]
    propagate: bool,
    #[serde(default = "default_service_name")]
    service_name: String,
}

fn default_protocol() -> String {
    "http".into()
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_true() -> bool {
    true
}

fn default_service_name() -> String {
    "poynt-proxy".into()
}

/// The path OTLP/HTTP receivers take traces on, added to an endpoint given without a path.
const TRACES_PATH: &str = "/v1/traces";

impl RawTelemetry {
    /// The checked traces settings, `None` when tracing is off.
    pub(super) fn validate(self) -> Result<Option<TracesConfig>, ConfigError> {
        self.traces.map(RawTraces::validate).transpose()
    }
}

impl RawTraces {
    fn validate(self) -> Result<TracesConfig, ConfigError> {
        let protocol = match self.protocol.as_str() {
            "http" => Protocol::Http,
            other => {
                return Err(invalid(
                    "telemetry.traces.protocol",
                    format!(
                        "expected http (OTLP over HTTP/protobuf; this build has no gRPC exporter); found {other:?}"
                    ),
                ));
            }
        };
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(invalid(
                "telemetry.traces.sample_ratio",
                format!(
                    "expected a share from 0 to 1 (0.01 keeps one trace in a hundred); found {}",
                    self.sample_ratio
                ),
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid(
                "telemetry.traces.service_name",
                "expected a name such as poynt-proxy; found an empty string",
            ));
        }
        Ok(TracesConfig {
            endpoint: endpoint(&self.endpoint)?,
            protocol,
            sample_ratio: self.sample_ratio,
            trust_incoming: self.trust_incoming,
            propagate: self.propagate,
            service_name: self.service_name,
        })
    }
}

/// The collector's traces URL: `http://host:port` alone means its `/v1/traces`. Only
/// `http`: the exporter is built without TLS (spans carry no secret; run the collector
/// beside the proxy or on a trusted network).
fn endpoint(text: &str) -> Result<String, ConfigError> {
    let key = "telemetry.traces.endpoint";
    let uri: http::Uri = text.parse().map_err(|_| {
        invalid(
            key,
            format!("expected an http URL such as http://127.0.0.1:4318; found {text:?}"),
        )
    })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) => {}
        _ => {
            return Err(invalid(
                key,
                format!(
                    "expected an http URL such as http://127.0.0.1:4318 (the exporter speaks no TLS); found {text:?}"
                ),
            ));
        }
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid(
            key,
            "expected a URL without user-info; found one with credentials",
        ));
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}{TRACES_PATH}", text.trim_end_matches('/')),
        _ => text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(endpoint: &str) -> RawTraces {
        RawTraces {
            endpoint: endpoint.into(),
            protocol: default_protocol(),
            sample_ratio: default_sample_ratio(),
            trust_incoming: false,
            propagate: true,
            service_name: default_service_name(),
        }
    }

    #[test]
    fn a_bare_endpoint_means_its_traces_path() {
        let config = raw("http://127.0.0.1:4318").validate().unwrap();
        assert_eq!(config.endpoint, "http://127.0.0.1:4318/v1/traces");
        let config = raw("http://collector:4318/custom/traces")
            .validate()
            .unwrap();
        assert_eq!(config.endpoint, "http://collector:4318/custom/traces");
    }

    #[test]
    fn errors_name_the_key_and_what_was_found() {
        let cases = [
            (
                raw("https://collector:4318"),
                "telemetry.traces.endpoint",
                "https://collector:4318",
            ),
            (
                RawTraces {
                    protocol: "grpc".into(),
                    ..raw("http://127.0.0.1:4318")
                },
                "telemetry.traces.protocol",
                "\"grpc\"",
            ),
            (
                RawTraces {
                    sample_ratio: 1.5,
                    ..raw("http://127.0.0.1:4318")
                },
                "telemetry.traces.sample_ratio",
                "found 1.5",
            ),
        ];
        for (raw, key, found) in cases {
            let error = raw.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
            assert!(error.contains(found), "{error}");
        }
    }
}
