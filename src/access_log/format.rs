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

use super::record::{AccessRecord, Flags, Key, Sink, Value};
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
    match format {
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(out, now);
            out.extend_from_slice(b"\",\"target\":\"");
            out.extend_from_slice(TARGET.as_bytes());
            out.push(b'"');
            record.fields(total, &mut Json(out));
            out.extend_from_slice(b"}\n");
        }
        LogFormat::Text => {
            timestamp(out, now);
            out.push(b' ');
            out.extend_from_slice(TARGET.as_bytes());
            record.fields(total, &mut Text(out));
            out.push(b'\n');
        }
    }
}

/// Writes fields as JSON members.
struct Json<'a>(&'a mut Vec<u8>);

/// Writes fields as `key=value` tokens.
struct Text<'a>(&'a mut Vec<u8>);

// Inlined into each of `AccessRecord::fields`' calls, where the key and the kind of value
// are constants: the key becomes a fixed-length copy and only one arm of the match is left
// (docs/BENCHMARKS.md, "Profiles": the access line).
impl Sink for Json<'_> {
    #[inline(always)]
    fn field(&mut self, key: Key, value: Value<'_>) {
        let out = &mut *self.0;
        out.extend_from_slice(key.json.as_bytes());
        match value {
            Value::Str(text) => json_string(out, text),
            Value::Word(word) => quoted(out, |out| out.extend_from_slice(word.as_bytes())),
            Value::Addr(addr) => quoted(out, |out| address(out, addr)),
            Value::Merchant(merchant) => quoted(out, |out| uuid(out, merchant)),
            Value::Trace(id) => quoted(out, |out| trace(out, id)),
            Value::Uint(n) => uint(out, n),
            Value::Bool(yes) => boolean(out, yes),
            Value::Ms(duration) => ms(out, duration),
            Value::Flags(flags) => {
                out.push(b'[');
                codes(out, flags, |out, code| {
                    quoted(out, |out| out.extend_from_slice(code))
                });
                out.push(b']');
            }
            Value::None => out.extend_from_slice(b"null"),
        }
    }
}

impl Sink for Text<'_> {
    #[inline(always)]
    fn field(&mut self, key: Key, value: Value<'_>) {
        let out = &mut *self.0;
        out.extend_from_slice(key.text.as_bytes());
        match value {
            Value::Str(text) if needs_quotes(text) => json_string(out, text),
            Value::Str(text) | Value::Word(text) => out.extend_from_slice(text.as_bytes()),
            Value::Addr(addr) => address(out, addr),
            Value::Merchant(merchant) => uuid(out, merchant),
            Value::Trace(id) => trace(out, id),
            Value::Uint(n) => uint(out, n),
            Value::Bool(yes) => boolean(out, yes),
            Value::Ms(duration) => ms(out, duration),
            Value::Flags(flags) if flags.is_empty() => out.push(b'-'),
            Value::Flags(flags) => codes(out, flags, |out, code| out.extend_from_slice(code)),
            Value::None => out.push(b'-'),
        }
    }
}

/// The codes of `flags`, each written by `write`, separated by commas.
fn codes(out: &mut Vec<u8>, flags: Flags, write: impl Fn(&mut Vec<u8>, &[u8])) {
    for (i, flag) in flags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, flag.code().as_bytes());
    }
}

/// What `write` writes, in double quotes.
#[inline(always)]
fn quoted(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    write(out);
    out.push(b'"');
}

/// Milliseconds with exactly three decimals: `12.034`, never `12.034000000000001`.
fn ms(out: &mut Vec<u8>, duration: Duration) {
    let micros = duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(duration.subsec_micros().into());
    uint(out, micros / 1000);
    out.push(b'.');
    padded::<3>(out, micros % 1000);
}

/// `1.2.3.4:5678` without `core::fmt` (an IPv4 peer is the common case); `[::1]:5678`.
fn address(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            octet(out, a);
            for n in [b, c, d] {
                out.push(b'.');
                octet(out, n);
            }
            out.push(b':');
            uint(out, addr.port().into());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// A byte in decimal, without leading zeros.
fn octet(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
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

/// The last `WIDTH` decimal digits of `n`, zero-padded.
fn padded<const WIDTH: usize>(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [b'0'; WIDTH];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
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
    padded::<6>(out, since.subsec_micros().into());
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

/// Whether `bytes` holds a byte [`ESCAPED`] marks, eight at a time: a byte below 0x20, or
/// equal to `"`, `\\` or 0x7f, found with the word tricks of "Bit Twiddling Hacks"
/// (`haszero`, `hasless`), which answer exactly whether any byte matched.
fn any_escaped(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `x` is below `n` (at most 0x80): its high bit set in the result.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let zero = |x: u64| below(x, 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0; 8];
        eight.copy_from_slice(word);
        let x = u64::from_ne_bytes(eight);
        let hit = below(x, 0x20)
            | zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | zero(x ^ (ONES * 0x7f));
        if hit != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| ESCAPED[usize::from(b)])
}

/// `text` as a JSON string: quotes, backslashes and control characters escaped (so no ESC
/// byte reaches a terminal or a file from a caller's path or id).
fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    // Ids and paths almost never need escaping: checked a word at a time, copied whole.
    if !any_escaped(bytes) {
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

    #[test]
    fn the_word_check_finds_every_escaped_byte_wherever_it_is() {
        for byte in 0..=u8::MAX {
            for at in 0..19 {
                let mut text = [b'a'; 19];
                text[at] = byte;
                assert_eq!(
                    any_escaped(&text),
                    ESCAPED[usize::from(byte)],
                    "byte {byte:#04x} at {at}"
                );
            }
        }
    }
}
