//! The `telemetry:` section: `traces`, OpenTelemetry export (off when absent). Builds the
//! [`TracesConfig`] `traces` reads.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use super::fields::invalid;
use super::sources::{KeySources, resolve};
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
    #[serde(default)]
    ca_file: Option<PathBuf>,
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

/// The path of OTLP's gRPC export call (`/{package}.{service}/{method}`), added to a gRPC
/// collector's address: the exporter posts to the URL it is given, over either protocol.
const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl RawTelemetry {
    /// The checked traces settings, `None` when tracing is off.
    pub(super) fn validate(
        self,
        sources: &KeySources,
    ) -> Result<Option<TracesConfig>, ConfigError> {
        self.traces.map(|raw| raw.validate(sources)).transpose()
    }
}

impl RawTraces {
    fn validate(self, sources: &KeySources) -> Result<TracesConfig, ConfigError> {
        let protocol = match self.protocol.as_str() {
            "http" => Protocol::Http,
            "grpc" => Protocol::Grpc,
            other => {
                return Err(invalid(
                    "telemetry.traces.protocol",
                    format!(
                        "expected http (OTLP over HTTP/protobuf) or grpc (OTLP over gRPC); found {other:?}"
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
        let extra_roots = match &self.ca_file {
            Some(path) => crate::upstream::read_ca_file(&resolve(sources, path))
                .map_err(|e| invalid("telemetry.traces.ca_file", e.to_string()))?,
            None => Vec::new(),
        };
        Ok(TracesConfig {
            endpoint: endpoint(&self.endpoint, protocol)?,
            protocol,
            sample_ratio: self.sample_ratio,
            trust_incoming: self.trust_incoming,
            propagate: self.propagate,
            service_name: self.service_name,
            extra_roots,
        })
    }
}

/// The collector's URL, `http://` or `https://` (verified against the platform's roots and
/// `ca_file`). Over HTTP, `scheme://host:port` alone means its `/v1/traces`; over gRPC the
/// URL given is the collector's address alone, as gRPC fixes the call's path (added here).
fn endpoint(text: &str, protocol: Protocol) -> Result<String, ConfigError> {
    let key = "telemetry.traces.endpoint";
    let example = match protocol {
        Protocol::Http => "http://127.0.0.1:4318",
        Protocol::Grpc => "http://127.0.0.1:4317",
    };
    let uri: http::Uri = text.parse().map_err(|_| {
        invalid(
            key,
            format!("expected an http or https URL such as {example}; found {text:?}"),
        )
    })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => {}
        _ => {
            return Err(invalid(
                key,
                format!("expected an http or https URL such as {example}; found {text:?}"),
            ));
        }
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid(
            key,
            "expected a URL without user-info; found one with credentials",
        ));
    }
    Ok(match (protocol, uri.path()) {
        (Protocol::Http, "" | "/") => format!("{}{TRACES_PATH}", text.trim_end_matches('/')),
        (Protocol::Http, _) => text.to_owned(),
        (Protocol::Grpc, "" | "/") => format!("{}{GRPC_EXPORT_PATH}", text.trim_end_matches('/')),
        (Protocol::Grpc, path) => {
            return Err(invalid(
                key,
                format!(
                    "expected a gRPC collector's address alone, such as {example} (the service's path is fixed); found the path {path:?}"
                ),
            ));
        }
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
            ca_file: None,
        }
    }

    fn valid(raw: RawTraces) -> Result<TracesConfig, ConfigError> {
        raw.validate(&KeySources::default())
    }

    #[test]
    fn a_bare_endpoint_means_its_traces_path() {
        let config = valid(raw("http://127.0.0.1:4318")).unwrap();
        assert_eq!(config.endpoint, "http://127.0.0.1:4318/v1/traces");
        let config = valid(raw("https://collector:4318/custom/traces")).unwrap();
        assert_eq!(config.endpoint, "https://collector:4318/custom/traces");
    }

    #[test]
    fn a_grpc_endpoint_is_the_collectors_address_and_the_export_call() {
        let config = valid(RawTraces {
            protocol: "grpc".into(),
            ..raw("https://collector:4317/")
        })
        .unwrap();
        assert_eq!(config.protocol, Protocol::Grpc);
        assert_eq!(
            config.endpoint,
            "https://collector:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
    }

    #[test]
    fn errors_name_the_key_and_what_was_found() {
        let cases = [
            (
                raw("ftp://collector:4318"),
                "telemetry.traces.endpoint",
                "ftp://collector:4318",
            ),
            (
                RawTraces {
                    protocol: "grpc".into(),
                    ..raw("http://127.0.0.1:4317/v1/traces")
                },
                "telemetry.traces.endpoint",
                "found the path \"/v1/traces\"",
            ),
            (
                RawTraces {
                    protocol: "zipkin".into(),
                    ..raw("http://127.0.0.1:4318")
                },
                "telemetry.traces.protocol",
                "\"zipkin\"",
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
            let error = valid(raw).unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
            assert!(error.contains(found), "{error}");
        }
    }
}
