//! Property tests of the parsers that take input from outside: the merchant header, the
//! path guard, the /token response, the configuration, and Poynt's HTTP/1.1 response head
//! and body framing. Each holds for any input: a typed answer, never a panic; for the
//! guard, never a path that an upstream could read as another merchant's; for the response
//! parsers, the same answer however the bytes were split across reads. Case counts are bounded so the suite stays fast; the fuzz
//! targets in `fuzz/` run the same parsers for as long as one likes.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use poynt_proxy::config::{Config, ConfigError, KeySources};
use poynt_proxy::proxy::admit::merchant_from_headers;
use poynt_proxy::proxy::path::guard_path;
use poynt_proxy::token::grant::{MAX_TOKEN_LIFETIME, parse_token_response};
use poynt_proxy::upstream::fuzzing::{decode_body, parse_head};
use poynt_wire::MerchantId;
use proptest::prelude::*;

const M: &str = "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c";
const OTHER: &str = "00000000-0000-4000-8000-000000000000";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn header() -> HeaderName {
    HeaderName::from_static("x-poynt-merchant-id")
}

/// What the most permissive upstream could make of a path: every escape decoded (as many
/// times as it takes), `\` and `/` both separators, `;` parameters dropped, dot segments
/// resolved, empty segments collapsed.
fn upstream_view(path: &str) -> Vec<String> {
    let mut text = path.to_owned();
    for _ in 0..8 {
        let decoded = percent_decode(&text);
        if decoded == text {
            break;
        }
        text = decoded;
    }
    let mut segments: Vec<String> = Vec::new();
    for raw in text.split(['/', '\\']) {
        let segment = raw.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other.to_owned()),
        }
    }
    segments
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(value) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn path_segment() -> impl Strategy<Value = String> {
    let upper = M.to_uppercase();
    let tricky = [
        "businesses",
        "BUSINESSES",
        "%62usinesses",
        "businesse%73",
        "%42%55SINESSES",
        M,
        upper.as_str(),
        OTHER,
        ".",
        "..",
        "%2e",
        "%2E%2e",
        ".%2e",
        "..;",
        ";v=1",
        "%3B",
        "%2F",
        "%2f",
        "%5C",
        "\\",
        "%25",
        "%252e",
        "%252F",
        "",
        "orders",
        "%20",
        "%zz",
        "%",
        "a%2Fb",
        "..%2F",
        "%2e%2e%5c",
    ]
    .map(str::to_owned)
    .to_vec();
    prop_oneof![
        4 => proptest::sample::select(tricky),
        1 => "[a-zA-Z0-9%./;\\\\_~-]{0,10}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_path_guard_forwards_only_paths_naming_the_header_merchant_or_none(
        segments in proptest::collection::vec(path_segment(), 0..6),
        trailing in any::<bool>(),
    ) {
        let mut path = format!("/{}", segments.join("/"));
        if trailing {
            path.push('/');
        }
        let merchant = MerchantId::parse(M).unwrap();
        if let Ok(forwarded) = guard_path(&path, merchant, &header()) {
            let view = upstream_view(&forwarded);
            if view.first().is_some_and(|s| s.eq_ignore_ascii_case("businesses")) {
                let named = view.get(1).map(|s| s.to_ascii_lowercase());
                prop_assert_eq!(named.as_deref(), Some(M), "{} forwarded as {}", path, forwarded);
            }
            prop_assert!(!forwarded.contains("%2F") && !forwarded.contains("%25"), "{}", forwarded);
        }
    }

    #[test]
    fn the_merchant_header_parser_answers_any_header_values(
        values in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..48),
            0..3,
        ),
        uuid in proptest::option::of(any::<u128>()),
        upper in any::<bool>(),
    ) {
        let mut headers = HeaderMap::new();
        let mut texts: Vec<Vec<u8>> = values;
        if let Some(n) = uuid {
            let id = uuid::Uuid::from_u128(n).to_string();
            texts.push(if upper { id.to_uppercase() } else { id }.into_bytes());
        }
        for value in &texts {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(header(), value);
            }
        }
        let count = headers.get_all(header()).iter().count();
        match merchant_from_headers(&headers, &header()) {
            Ok(id) => {
                prop_assert_eq!(count, 1);
                let text = headers[header()].to_str().unwrap().trim().to_ascii_lowercase();
                prop_assert_eq!(id.to_string(), text);
            }
            Err(error) => {
                let expected = if count == 0 { "MISSING_MERCHANT_ID" } else { "INVALID_MERCHANT_ID" };
                prop_assert_eq!(error.code(), expected);
                prop_assert!(error.to_string().len() < 400);
            }
        }
    }

    #[test]
    fn the_token_response_parser_answers_any_json_with_a_token_or_a_typed_error(
        body in token_body(),
    ) {
        if let Ok(token) = parse_token_response(body.as_bytes(), tokio::time::Instant::now(), SystemTime::now()) {
            prop_assert!(!token.lifetime.is_zero());
            prop_assert!(token.lifetime <= MAX_TOKEN_LIFETIME);
        }
    }

    #[test]
    fn the_config_loader_answers_any_yaml_with_a_config_or_an_error_naming_a_key(
        overrides in proptest::collection::vec((config_key(), yaml_value()), 0..6),
    ) {
        let mut root = serde_yaml::Mapping::new();
        set(&mut root, &["poynt".into(), "application_id".into()], "urn:aid:x".into());
        for (key, value) in &overrides {
            let value = serde_yaml::from_str(value).unwrap_or_else(|_| value.as_str().into());
            set(&mut root, key, value);
        }
        let yaml = serde_yaml::to_string(&root).unwrap();
        match Config::parse(&yaml, &KeySources::default()) {
            Ok(_) => {}
            Err(ConfigError::Invalid { key, problem }) => {
                prop_assert!(!key.is_empty() && !problem.is_empty());
            }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

    #[test]
    fn the_config_loader_answers_arbitrary_text(text in "\\PC{0,200}") {
        let _ = Config::parse(&text, &KeySources::default());
    }

    #[test]
    fn a_response_head_parses_the_same_however_it_is_split(
        wire in wire(&[
            b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 204 No Content\r\n", b"Content-Length: 5\r\n",
            b"Content-Length: 5, 5\r\n", b"Transfer-Encoding: chunked\r\n",
            b"Connection: close, x-a\r\n", b"X-A: b\r\n", b"\r\n", b"\n", b"hello",
        ]),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        head in any::<bool>(),
    ) {
        prop_assert_eq!(parse_head(&wire, &cuts, head), parse_head(&wire, &[], head));
    }

    #[test]
    fn a_response_body_decodes_the_same_however_it_is_split(
        wire in wire(&[
            b"5\r\n", b"A;ext=1\r\n", b"hello", b"0123456789", b"\r\n", b"\n", b"0\r\n",
            b"x-trailer: 1\r\n", b"zz",
        ]),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        framing in 0u64..24,
    ) {
        prop_assert_eq!(decode_body(framing, &wire, &cuts), decode_body(framing, &wire, &[]));
    }
}

/// Bytes made of `pieces` (the likely ones) and the odd random byte.
fn wire(pieces: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptest::sample::select(pieces).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 1..3),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// A /token answer: sometimes well-formed with hostile numbers, sometimes any JSON.
fn token_body() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        Just("1e400".to_owned()),
        Just("\"86400\"".to_owned()),
    ];
    let access = (number.clone(), any::<bool>()).prop_map(|(exp, with_biz)| {
        let claims = if with_biz {
            format!("{{\"exp\":{exp},\"poynt.biz\":\"{M}\"}}")
        } else {
            format!("{{\"exp\":{exp}}}")
        };
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode("{\"alg\":\"RS256\"}"),
            URL_SAFE_NO_PAD.encode(claims)
        )
    });
    prop_oneof![
        (number, access, any::<bool>()).prop_map(|(expires, token, refresh)| {
            let refresh = if refresh {
                ",\"refreshToken\":\"1:1:1:2:x\""
            } else {
                ""
            };
            format!("{{\"expiresIn\":{expires},\"accessToken\":\"{token}\"{refresh}}}")
        }),
        "\\PC{0,120}",
        "[{}\\[\\]\":,a-zA-Z0-9. ]{0,80}",
    ]
}

fn config_key() -> impl Strategy<Value = Vec<String>> {
    let keys = [
        "listen",
        "admin_listen",
        "poynt.api_url",
        "poynt.token_url",
        "poynt.api_version",
        "poynt.connect_timeout",
        "poynt.response_timeout",
        "poynt.body_idle_timeout",
        "merchant.header",
        "merchant.allow",
        "server.max_connections",
        "server.max_header_bytes",
        "server.header_read_timeout",
        "server.idle_timeout",
        "server.workers",
        "server.retry_buffer_bytes",
        "tokens.refresh_at",
        "tokens.refresh_jitter",
        "tokens.backoff_max",
        "tokens.max_merchants",
        "tokens.new_merchant_grant_burst",
        "store.backend",
        "oauth.authorize_url",
        "log.format",
        "unknown",
        "server.unknown",
    ];
    proptest::sample::select(keys.to_vec())
        .prop_map(|key| key.split('.').map(str::to_owned).collect())
}

fn yaml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        Just("18446744073709551616".to_owned()),
        Just("1000000000years".to_owned()),
        Just("0s".to_owned()),
        Just("~".to_owned()),
        Just("[1, \"a\"]".to_owned()),
        Just("{a: 1}".to_owned()),
        Just("\"https://u:p@h\"".to_owned()),
        "[a-z0-9:./ -]{0,20}".prop_map(|s| format!("{s:?}")),
    ]
}

/// Sets `a.b.c` in a YAML mapping, making the intermediate mappings.
fn set(root: &mut serde_yaml::Mapping, key: &[String], value: serde_yaml::Value) {
    let (last, parents) = key.split_last().expect("a key");
    let mut map = root;
    for part in parents {
        let entry = map
            .entry(part.as_str().into())
            .or_insert_with(|| serde_yaml::Mapping::new().into());
        if !entry.is_mapping() {
            *entry = serde_yaml::Mapping::new().into();
        }
        map = entry.as_mapping_mut().expect("a mapping");
    }
    map.insert(last.as_str().into(), value);
}

#[test]
fn the_upstream_view_sees_through_encodings() {
    assert_eq!(
        upstream_view("/businesses/m/..%2F..%5Cbusinesses;x/o"),
        ["businesses", "o"]
    );
    assert_eq!(upstream_view("//a/%252e%252e/b"), ["b"]);
}
