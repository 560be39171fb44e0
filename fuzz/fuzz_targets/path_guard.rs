//! The path guard on any path: whatever it forwards names the header's merchant, or no
//! merchant, for an upstream that decodes everything, resolves dot segments, collapses
//! slashes and splits on `\` and `;`.
#![no_main]

use http::HeaderName;
use libfuzzer_sys::fuzz_target;
use poynt_wire::MerchantId;
use poynt_proxy::proxy::path::guard_path;

const M: &str = "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c";

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn upstream_view(path: &str) -> Vec<String> {
    let mut text = path.to_owned();
    for _ in 0..8 {
        let next = decode(&text);
        if next == text {
            break;
        }
        text = next;
    }
    let mut segments: Vec<String> = Vec::new();
    for raw in text.split(['/', '\\']) {
        match raw.split(';').next().unwrap_or_default() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other.to_owned()),
        }
    }
    segments
}

fuzz_target!(|path: &str| {
    let merchant = MerchantId::parse(M).expect("a merchant");
    let header = HeaderName::from_static("x-poynt-merchant-id");
    if let Ok(forwarded) = guard_path(path, merchant, &header) {
        let view = upstream_view(&forwarded);
        if view.first().is_some_and(|s| s.eq_ignore_ascii_case("businesses")) {
            assert_eq!(
                view.get(1).map(|s| s.to_ascii_lowercase()).as_deref(),
                Some(M),
                "{path:?} forwarded as {forwarded:?}"
            );
        }
    }
});
