//! An access record as one line of text or JSON, written into a buffer the caller reuses:
//! no allocation, no `tracing` machinery, no `core::fmt` for the numbers and the time
//! (docs/BENCHMARKS.md, "Access log").

use std::cell::Cell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::TraceId;
use poynt_wire::MerchantId;
use uuid::Uuid;

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
    let json = format == LogFormat::Json;
    // What goes before and after each field's name, and after the last field.
    let (before, after, end): (&[u8], &[u8], &[u8]) = if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(out, now);
        out.extend_from_slice(b"\",\"target\":\"");
        out.extend_from_slice(TARGET.as_bytes());
        out.push(b'"');
        (b",\"", b"\":", b"}\n")
    } else {
        timestamp(out, now);
        out.push(b' ');
        out.extend_from_slice(TARGET.as_bytes());
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
        Value::Addr(addr) => {
            out.push(b'"');
            address(out, *addr);
            out.push(b'"');
        }
        Value::Merchant(merchant) => {
            out.push(b'"');
            uuid(out, *merchant);
            out.push(b'"');
        }
        Value::Trace(id) => {
            out.push(b'"');
            trace(out, *id);
            out.push(b'"');
        }
        Value::Uint(n) => uint(out, *n),
        Value::Bool(yes) => boolean(out, *yes),
        Value::Ms(duration) => ms(out, *duration),
        Value::Flags(flags) => {
            out.push(b'[');
            for (i, flag) in flags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(flag.code().as_bytes());
                out.push(b'"');
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
        Value::Addr(addr) => address(out, *addr),
        Value::Merchant(merchant) => uuid(out, *merchant),
        Value::Trace(id) => trace(out, *id),
        Value::Uint(n) => uint(out, *n),
        Value::Bool(yes) => boolean(out, *yes),
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
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    uint(out, micros / 1000);
    out.push(b'.');
    padded(out, micros % 1000, 3);
}

/// `1.2.3.4:5678` without `core::fmt` (an IPv4 peer is the common case); `[::1]:5678`.
fn address(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                uint(out, octet.into());
            }
            out.push(b':');
            uint(out, addr.port().into());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

fn uuid(out: &mut Vec<u8>, merchant: MerchantId) {
    let mut text = Uuid::encode_buffer();
    out.extend_from_slice(
        merchant
            .uuid()
            .hyphenated()
            .encode_lower(&mut text)
            .as_bytes(),
    );
}

fn trace(out: &mut Vec<u8>, id: TraceId) {
    let mut text = Uuid::encode_buffer();
    out.extend_from_slice(
        Uuid::from_bytes(id.to_bytes())
            .simple()
            .encode_lower(&mut text)
            .as_bytes(),
    );
}

fn boolean(out: &mut Vec<u8>, yes: bool) {
    out.extend_from_slice(if yes { b"true" } else { b"false" });
}

fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The last `width` decimal digits of `n`, zero-padded.
fn padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 6];
    let digits = &mut digits[..width];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(digits);
}

/// `YYYY-MM-DDTHH:MM:SS`: as long as humantime's RFC 3339 text up to the fraction.
const SECOND_LEN: usize = 19;

thread_local! {
    /// The second the thread's last line was written in, and its text: a busy proxy writes
    /// many lines a second and formats the date once (as nginx caches its time strings).
    static SECOND: Cell<(u64, [u8; SECOND_LEN])> = const { Cell::new((u64::MAX, [0; SECOND_LEN])) };
}

/// `now` in RFC 3339 with microseconds, UTC: `2026-12-03T06:42:38.123456Z`.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != seconds {
        let second = UNIX_EPOCH + Duration::from_secs(seconds);
        let mut full = [0; SECOND_LEN + 1];
        let _ = write!(
            &mut full[..],
            "{}",
            humantime::format_rfc3339_seconds(second)
        );
        text.copy_from_slice(&full[..SECOND_LEN]);
        SECOND.set((seconds, text));
    }
    out.extend_from_slice(&text);
    out.push(b'.');
    padded(out, since.subsec_micros().into(), 6);
    out.push(b'Z');
}

/// Whether a text value must be quoted to stay one `key=value` token: empty, or holding a
/// space, a quote, `=`, a backslash, or a control character.
fn needs_quotes(text: &str) -> bool {
    text.is_empty()
        || text
            .bytes()
            .any(|b| b <= b' ' || b == b'"' || b == b'=' || b == b'\\' || b == 0x7f)
}

/// The bytes [`json_string`] escapes: quotes, backslashes and control characters.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0x7f] = true;
    table
};

/// `text` as a JSON string: quotes, backslashes and control characters escaped (so no ESC
/// byte reaches a terminal or a file from a caller's path or id).
fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    // Ids, paths and methods almost never need escaping: one table lookup a byte, one copy.
    if !bytes.iter().any(|&b| ESCAPED[usize::from(b)]) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
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
    fn addresses_and_merchants_read_as_their_display() {
        let merchant = MerchantId::parse("3F2504E0-4F89-41D3-9A0C-0305E82C3301").unwrap();
        let peers = [
            SocketAddr::from((Ipv4Addr::new(10, 201, 0, 9), 65_535)),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            "[2001:db8::7]:443".parse().unwrap(),
        ];
        for peer in peers {
            let record = AccessRecord {
                peer,
                merchant: Some(merchant),
                ..record()
            };
            for format in [LogFormat::Json, LogFormat::Text] {
                let mut out = Vec::new();
                line(
                    &mut out,
                    format,
                    &record,
                    SystemTime::UNIX_EPOCH,
                    Duration::ZERO,
                );
                let text = String::from_utf8(out).unwrap();
                for expected in [
                    format!(
                        "peer{}{peer}",
                        if format == LogFormat::Json {
                            "\":\""
                        } else {
                            "="
                        }
                    ),
                    merchant.to_string(),
                ] {
                    assert!(text.contains(&expected), "expected {expected} in {text}");
                }
            }
        }
    }

    #[test]
    fn time_is_rfc3339_micros_across_seconds_on_one_thread() {
        let times = [
            Duration::new(1_764_743_558, 7_000),
            Duration::new(1_764_743_558, 999_999_999),
            Duration::new(1_764_743_559, 0),
            Duration::new(951_782_400, 123_456_000),
            Duration::new(1_764_743_558, 42_000),
        ];
        for since in times {
            let now = SystemTime::UNIX_EPOCH + since;
            let mut out = Vec::new();
            line(&mut out, LogFormat::Text, &record(), now, Duration::ZERO);
            let expected = humantime::format_rfc3339_micros(now).to_string();
            assert!(
                out.starts_with(expected.as_bytes()),
                "expected {expected}, found {}",
                String::from_utf8_lossy(&out[..expected.len()])
            );
        }
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
