//! An access record as one line of text or JSON, written into a buffer the caller reuses:
//! no allocation, no `tracing` machinery (docs/BENCHMARKS.md, "Access log").

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use super::record::{AccessRecord, Value};
use crate::telemetry::LogFormat;

/// What JSON lines carry as `target`, and text lines after the time: the same name the
/// access line had when `tracing` wrote it, so filters written for it keep matching.
pub const TARGET: &str = "poynt_proxy::access";

/// Appends `record`'s line (newline included) to `out`; `now` is the time it is written.
pub fn line(
    out: &mut Vec<u8>,
    format: LogFormat,
    record: &AccessRecord,
    now: SystemTime,
    total: Duration,
) {
    let time = humantime::format_rfc3339_micros(now);
    let json = format == LogFormat::Json;
    // What goes before and after each field's name, and after the last field.
    let (before, after, end): (&[u8], &[u8], &[u8]) = if json {
        let _ = write!(out, "{{\"timestamp\":\"{time}\",\"target\":\"{TARGET}\"");
        (b",\"", b"\":", b"}\n")
    } else {
        let _ = write!(out, "{time} {TARGET}");
        (b" ", b"=", b"\n")
    };
    for (name, value) in record.fields(total) {
        out.extend_from_slice(before);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(after);
        if json {
            json_value(out, &value);
        } else {
            text_value(out, &value);
        }
    }
    out.extend_from_slice(end);
}

fn json_value(out: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Str(text) => json_string(out, text),
        Value::Plain(text) => {
            let _ = write!(out, "\"{text}\"");
        }
        Value::Uint(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(yes) => {
            let _ = write!(out, "{yes}");
        }
        Value::Ms(duration) => ms(out, *duration),
        Value::Flags(flags) => {
            out.push(b'[');
            for (i, flag) in flags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "\"{}\"", flag.code());
            }
            out.push(b']');
        }
        Value::None => out.extend_from_slice(b"null"),
    }
}

fn text_value(out: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Str(text) if needs_quotes(text) => json_string(out, text),
        Value::Str(text) => out.extend_from_slice(text.as_bytes()),
        Value::Plain(text) => {
            let _ = write!(out, "{text}");
        }
        Value::Uint(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(yes) => {
            let _ = write!(out, "{yes}");
        }
        Value::Ms(duration) => ms(out, *duration),
        Value::Flags(flags) if flags.is_empty() => out.push(b'-'),
        Value::Flags(flags) => {
            for (i, flag) in flags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(flag.code().as_bytes());
            }
        }
        Value::None => out.push(b'-'),
    }
}

/// Milliseconds with exactly three decimals: `12.034`, never `12.034000000000001`.
fn ms(out: &mut Vec<u8>, duration: Duration) {
    let micros = duration.as_micros();
    let _ = write!(out, "{}.{:03}", micros / 1000, micros % 1000);
}

/// Whether a text value must be quoted to stay one `key=value` token: empty, or holding a
/// space, a quote, `=`, a backslash, or a control character.
fn needs_quotes(text: &str) -> bool {
    text.is_empty()
        || text
            .bytes()
            .any(|b| b <= b' ' || b == b'"' || b == b'=' || b == b'\\' || b == 0x7f)
}

/// `text` as a JSON string: quotes, backslashes and control characters escaped (so no ESC
/// byte reaches a terminal or a file from a caller's path or id).
fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 | 0x7f => {
                out.extend_from_slice(&bytes[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use http::{HeaderValue, Method, Uri, Version};
    use opentelemetry::trace::TraceId;

    use super::*;
    use crate::access_log::record::{Flag, Flags};

    fn record() -> AccessRecord {
        let mut flags = Flags::default();
        flags.set(Flag::UpstreamTimeout);
        flags.set(Flag::CallerDisconnected);
        AccessRecord {
            request_id: HeaderValue::from_static("req-1"),
            trace_id: Some(TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736)),
            peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 4000)),
            caller: Some("payments".into()),
            merchant: None,
            method: Method::GET,
            uri: Uri::from_static("/a%20b/\"x\"?secret=1"),
            version: Version::HTTP_11,
            status: 504,
            upstream_status: None,
            bytes_in: 0,
            bytes_out: 7,
            token: Some("hit"),
            token_wait: Some(Duration::from_nanos(30_806_000)),
            upstream: None,
            attempts: 1,
            reused: Some(true),
            limit_observed: None,
            flags,
            error_code: Some("UPSTREAM_TIMEOUT"),
            error: Some("tab\there \u{1b}[31m".into()),
        }
    }

    fn written(format: LogFormat) -> String {
        let mut out = Vec::new();
        line(
            &mut out,
            format,
            &record(),
            SystemTime::UNIX_EPOCH,
            Duration::from_micros(1_500),
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_line_parses_with_numbers_arrays_and_nulls() {
        let text = written(LogFormat::Json);
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["target"], TARGET);
        assert_eq!(v["path"], "/a%20b/\"x\"");
        assert_eq!(v["response_flags"], serde_json::json!(["UT", "DC"]));
        assert_eq!(v["upstream_status"], serde_json::Value::Null);
        assert_eq!(v["caller"], "payments");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["reused"], true);
        assert!(text.contains("\"token_ms\":30.806,"), "{text}");
        assert!(text.contains("\"total_ms\":1.500,"), "{text}");
        assert_eq!(v["error"], "tab\there \u{1b}[31m");
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn text_line_is_key_value_tokens_without_control_bytes() {
        let text = written(LogFormat::Text);
        assert!(text.starts_with("1970-01-01T00:00:00.000000Z poynt_proxy::access "));
        assert!(text.contains(" path=\"/a%20b/\\\"x\\\"\" "), "{text}");
        assert!(text.contains(" response_flags=UT,DC "), "{text}");
        assert!(text.contains(" upstream_status=- "), "{text}");
        assert!(
            text.contains(" trace_id=4bf92f3577b34da6a3ce929d0e0e4736 "),
            "{text}"
        );
        assert!(text.contains(" reused=true "), "{text}");
        assert!(text.contains(" token_ms=30.806 "), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}
