//! One request's access record: what the request's phases learned, kept until its response
//! body ends (or the caller goes away), then written as one line. The fields are listed
//! once, in [`AccessRecord::fields`], for every format: a new field is a struct field and
//! one call there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Uri, Version};
use opentelemetry::trace::TraceId;
use poynt_wire::MerchantId;

/// Declares the response flags: each a variant, its code and the doc that says when it is
/// set, so a new flag is one line.
macro_rules! flags {
    ($($(#[doc = $doc:literal])* $name:ident = $code:literal,)*) => {
        /// Why a request did not end as a plain exchange with Poynt, Envoy's vocabulary
        /// where it has a word (docs/OPERATIONS.md, "Access log").
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Flag {
            $($(#[doc = $doc])* $name,)*
        }

        impl Flag {
            /// Every flag, in the order a line lists them.
            pub const ALL: &[Flag] = &[$(Flag::$name,)*];

            /// The code the line carries.
            pub fn code(self) -> &'static str {
                match self {
                    $(Flag::$name => $code,)*
                }
            }
        }
    };
}

flags! {
    /// `TK`: no token could be had for the merchant (a /token failure, back-off, throttle).
    TokenUnavailable = "TK",
    /// `UC`: Poynt could not be reached, or the exchange broke before its response head.
    UpstreamConnection = "UC",
    /// `UT`: Poynt sent no response head in time, or its body stopped arriving.
    UpstreamTimeout = "UT",
    /// `UPE`: Poynt's response body broke its framing after the head went to the caller.
    UpstreamProtocol = "UPE",
    /// `UR`: Poynt's response body was cut off (closed, reset) after the head went out.
    UpstreamReset = "UR",
    /// `PG`: the path guard refused the request target, or it names another merchant.
    PathGuard = "PG",
    /// `MH`: the merchant header is missing, malformed or names a merchant not served.
    MerchantRefused = "MH",
    /// `DPE`: the caller's request was malformed (method, body framing).
    DownstreamProtocol = "DPE",
    /// `SI`: the caller stopped sending its request body.
    DownstreamIdle = "SI",
    /// `BL`: the caller's request body is larger than `server.max_request_body_bytes`.
    BodyLimit = "BL",
    /// `DC`: the caller went away before its response's end.
    CallerDisconnected = "DC",
    /// `CA`: the caller proved no identity (`callers`): 401 CALLER_UNAUTHENTICATED.
    CallerUnauthenticated = "CA",
    /// `CP`: the caller's policy refused the merchant, method or path: 403 CALLER_FORBIDDEN.
    CallerForbidden = "CP",
    /// `CX`: what the caller check needs (a JWKS URL, the token store) failed: 503.
    CallerCheckUnavailable = "CX",
    /// `RL`: the merchant's token bucket refused the request (`limits.rate`): 429.
    RateLimited = "RL",
    /// `CD`: the merchant is cooling down after Poynt's 429: the proxy answered 429 itself.
    CoolingDown = "CD",
    /// `UO`: the merchant's in-flight cap stayed full for `limits.in_flight_wait` (Envoy's
    /// upstream overflow): 429.
    InFlightOverflow = "UO",
    /// `UH`: the circuit breaker toward Poynt is open (Envoy's no healthy upstream): 503.
    BreakerOpen = "UH",
}

/// A set of [`Flag`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u32);

impl Flags {
    /// Adds `flag`.
    pub fn set(&mut self, flag: Flag) {
        self.0 |= 1 << flag as u32;
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags in the set, in [`Flag::ALL`]'s order: a flag's bit is its place there, so
    /// this visits the set bits only, not every flag (most lines have none).
    pub fn iter(self) -> impl Iterator<Item = Flag> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            let lowest = bits.trailing_zeros();
            bits &= bits.wrapping_sub(1);
            Flag::ALL.get(usize::try_from(lowest).ok()?).copied()
        })
    }
}

/// A field's value, as each format writes it.
pub enum Value<'a> {
    /// Text, escaped as the format needs.
    Str(&'a str),
    /// Text that never needs escaping or quoting: an HTTP token (a method), or a fixed word
    /// or code of the proxy's own.
    Word(&'a str),
    /// An address, which never needs escaping.
    Addr(SocketAddr),
    /// A merchant, a UUID, which never needs escaping.
    Merchant(MerchantId),
    /// A count or a status.
    Uint(u64),
    /// A yes or no: `true`/`false` in both formats.
    Bool(bool),
    /// A trace's id: 32 lowercase hex digits, as W3C `traceparent` writes it.
    Trace(TraceId),
    /// A duration, in milliseconds with three decimals (microseconds).
    Ms(Duration),
    /// The response flags: an array in JSON, `TK,DC` (or `-`) in text.
    Flags(Flags),
    /// Not known, or not applicable: `null` in JSON, `-` in text.
    None,
}

/// A field's name as each format writes it before the value, made once by [`key!`] at
/// compile time: a fixed-length copy per field when a line is written, not three.
#[derive(Clone, Copy)]
pub struct Key {
    /// `,"name":`
    pub json: &'static str,
    /// ` name=`
    pub text: &'static str,
}

/// The [`Key`] of the field `$name`.
macro_rules! key {
    ($name:literal) => {
        Key {
            json: concat!(",\"", $name, "\":"),
            text: concat!(" ", $name, "="),
        }
    };
}

/// What a line's fields are written into, one call per field in the line's order: a
/// format's writer, so each field's key and kind of value are known where it is written.
pub trait Sink {
    /// Writes one field.
    fn field(&mut self, key: Key, value: Value<'_>);
}

/// What one request's line says (docs/OPERATIONS.md, "Access log", names each field).
pub struct AccessRecord {
    /// The request id the caller sent or the proxy made (shares the header's bytes).
    pub request_id: HeaderValue,
    /// The request's trace, when `telemetry.traces` sampled it: the id to look it up by.
    pub trace_id: Option<TraceId>,
    /// The caller's address.
    pub peer: SocketAddr,
    /// The caller its credentials proved (`callers`), when there was one.
    pub caller: Option<Arc<str>>,
    /// The merchant the request was for, once the header was read.
    pub merchant: Option<MerchantId>,
    /// The caller's method.
    pub method: Method,
    /// The caller's request target; its path is logged, never its query.
    pub uri: Uri,
    /// The caller's HTTP version.
    pub version: Version,
    /// The status sent to the caller.
    pub status: u16,
    /// Poynt's status, when Poynt answered (the one the caller got, after a 401 replay).
    pub upstream_status: Option<u16>,
    /// Request body bytes read from the caller.
    pub bytes_in: u64,
    /// Response body bytes handed to the caller.
    pub bytes_out: u64,
    /// Where the token came from (`hit`, `miss`...), when one was looked up.
    pub token: Option<&'static str>,
    /// From arrival until the token was in hand (admission included, which takes
    /// microseconds), when the token phase ran.
    pub token_wait: Option<Duration>,
    /// Time spent waiting for Poynt's response heads, over every attempt.
    pub upstream: Option<Duration>,
    /// Exchanges with Poynt (2 after a 401 replay, 0 when none was sent).
    pub attempts: u8,
    /// Whether the last exchange went over a connection already open (pooled HTTP/1.1, or
    /// an HTTP/2 connection's free stream), when one was made.
    pub reused: Option<bool>,
    /// The limit the request would have met, when `limits.mode` is `observe`.
    pub limit_observed: Option<&'static str>,
    /// Why the request did not end as a plain exchange.
    pub flags: Flags,
    /// The error code the caller got (the proxy's own answers only).
    pub error_code: Option<&'static str>,
    /// What failed, as the caller was told or as the response body broke.
    pub error: Option<String>,
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

impl AccessRecord {
    /// Writes the line's fields in order into `sink`, `total` being the request's time from
    /// arrival to the response body's end.
    pub fn fields(&self, total: Duration, sink: &mut impl Sink) {
        // The proxy's own codes (`hit`, `rate_limited`, `UPSTREAM_TIMEOUT`): words.
        let code = |value: Option<&'static str>| value.map_or(Value::None, Value::Word);
        let ms = |value: Option<Duration>| value.map_or(Value::None, Value::Ms);
        sink.field(
            key!("request_id"),
            Value::Str(self.request_id.to_str().unwrap_or_default()),
        );
        sink.field(
            key!("trace_id"),
            self.trace_id.map_or(Value::None, Value::Trace),
        );
        sink.field(key!("peer"), Value::Addr(self.peer));
        sink.field(
            key!("caller"),
            self.caller.as_deref().map_or(Value::None, Value::Str),
        );
        sink.field(
            key!("merchant"),
            self.merchant.map_or(Value::None, Value::Merchant),
        );
        // A method is an HTTP token: no quote, backslash, space, `=` or control byte.
        sink.field(key!("method"), Value::Word(self.method.as_str()));
        sink.field(key!("path"), Value::Str(self.uri.path()));
        sink.field(key!("protocol"), Value::Word(protocol(self.version)));
        sink.field(key!("status"), Value::Uint(self.status.into()));
        sink.field(
            key!("upstream_status"),
            self.upstream_status
                .map_or(Value::None, |status| Value::Uint(status.into())),
        );
        sink.field(key!("bytes_in"), Value::Uint(self.bytes_in));
        sink.field(key!("bytes_out"), Value::Uint(self.bytes_out));
        sink.field(key!("token"), code(self.token));
        sink.field(key!("token_ms"), ms(self.token_wait));
        sink.field(key!("upstream_ms"), ms(self.upstream));
        sink.field(key!("total_ms"), Value::Ms(total));
        sink.field(key!("attempts"), Value::Uint(self.attempts.into()));
        sink.field(key!("reused"), self.reused.map_or(Value::None, Value::Bool));
        sink.field(key!("limit_observed"), code(self.limit_observed));
        sink.field(key!("response_flags"), Value::Flags(self.flags));
        sink.field(key!("error_code"), code(self.error_code));
        sink.field(
            key!("error"),
            self.error.as_deref().map_or(Value::None, Value::Str),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_list_in_declaration_order_whatever_the_order_set() {
        let mut flags = Flags::default();
        assert!(flags.is_empty());
        flags.set(Flag::CallerDisconnected);
        flags.set(Flag::TokenUnavailable);
        let codes: Vec<_> = flags.iter().map(Flag::code).collect();
        assert_eq!(codes, ["TK", "DC"]);
    }

    #[test]
    fn a_set_lists_exactly_its_flags_down_to_the_last_declared() {
        let mut all = Flags::default();
        for &flag in Flag::ALL {
            let mut one = Flags::default();
            one.set(flag);
            assert_eq!(one.iter().collect::<Vec<_>>(), [flag]);
            all.set(flag);
        }
        assert_eq!(all.iter().collect::<Vec<_>>(), Flag::ALL);
        assert_eq!(Flags::default().iter().count(), 0);
    }

    #[test]
    fn every_flag_has_its_own_bit_and_code() {
        let mut codes: Vec<_> = Flag::ALL.iter().map(|flag| flag.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Flag::ALL.len());
        assert!(Flag::ALL.len() <= 32, "Flags holds 32 bits");
    }
}
