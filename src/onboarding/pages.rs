//! The pages merchants' browsers see: server-rendered, small, plain HTML with inline style,
//! no JavaScript and no external assets. Every template is a constant with `{name}`
//! placeholders, and [`render`] is the one place values enter a page: each is HTML-escaped
//! there. Every response leaves through [`respond`] or [`redirect`], which set the same
//! security headers.

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use poynt_wire::MerchantId;

/// The headers every onboarding response carries: nothing cached, no Referer (a callback URL
/// holds the code), no framing, no sniffing, and a policy allowing inline style only.
pub const SECURITY_HEADERS: [(http::HeaderName, &str); 5] = [
    (CACHE_CONTROL, "no-store"),
    (REFERRER_POLICY, "no-referrer"),
    (
        CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'",
    ),
    (X_FRAME_OPTIONS, "DENY"),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// Everything before a page's body.
const HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem; color: #1b1b1b; line-height: 1.5; }
h1 { font-size: 1.4rem; }
code { background: #f2f2f2; padding: 0.1rem 0.3rem; border-radius: 0.2rem; white-space: nowrap; }
a.button { display: inline-block; margin-top: 1rem; padding: 0.5rem 1rem; border: 1px solid #1b1b1b; border-radius: 0.3rem; color: inherit; text-decoration: none; }
</style>
</head>
<body>
<h1>{title}</h1>
"#;

/// Everything after a page's body.
const TAIL: &str = "\n</body>\n</html>\n";

/// The success page names the business by its name when the page may show it, always by ID.
const BUSINESS_NAMED: &str = r#"<p>Your Poynt business <strong id="business-name">{name}</strong> (<code id="business-id">{business}</code>)"#;
const BUSINESS_ID: &str = r#"<p>Your Poynt business <code id="business-id">{business}</code>"#;

const SUCCESS: &str = r#" is connected to <strong id="app-name">{app}</strong>.</p>
<p>You can close this page.</p>
<a class="button" href="{signout}">Sign out of Poynt</a>"#;

const REFUSED: &str = r#"<p id="reason">{reason}</p>
<p>This attempt to connect your Poynt business to <strong id="app-name">{app}</strong> did not complete.</p>
<p>If this keeps happening, quote this reference to support: <code id="reference">{reference}</code></p>
<a class="button" href="/connect">Try again</a>"#;

const SIGNED_OUT: &str = r#"<p>You are signed out of Poynt.</p>
<a class="button" href="/connect">Connect a business to {app}</a>"#;

const NOT_FOUND: &str = r#"<p>There is no page here.</p>
<a class="button" href="/connect">Connect a business to {app}</a>"#;

const REDIRECTING: &str = r#"<p><a href="{location}">Continue</a></p>"#;

/// Escapes text for HTML element content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Fills the `{name}` placeholders of `template` in one pass, escaping every value; a brace
/// that opens no known placeholder (CSS) is kept as written.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let placeholder = after.find('}').and_then(|close| {
            values
                .iter()
                .find(|(name, _)| *name == &after[..close])
                .map(|(_, value)| (value, close))
        });
        match placeholder {
            Some((value, close)) => {
                out.push_str(&escape(value));
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A whole page around `body`, a fragment [`render`] made from one of this module's templates.
fn layout(title: &str, body: &str) -> String {
    let mut page = render(HEAD, &[("title", title)]);
    page.push_str(body);
    page.push_str(TAIL);
    page
}

/// "Connected": names the business (by `name` too, when given) and the app, and offers
/// Poynt's sign-out, which returns to `signed_out_url`.
pub fn success(
    app: &str,
    business: MerchantId,
    name: Option<&str>,
    signout_url: &str,
    signed_out_url: &str,
) -> String {
    let id = business.to_string();
    let mut body = match name {
        Some(name) => render(BUSINESS_NAMED, &[("name", name), ("business", &id)]),
        None => render(BUSINESS_ID, &[("business", &id)]),
    };
    let mut href = format!("{signout_url}?");
    href.push_str(
        &form_urlencoded::Serializer::new(String::new())
            .append_pair("redirect", signed_out_url)
            .finish(),
    );
    body.push_str(&render(SUCCESS, &[("app", app), ("signout", &href)]));
    layout("Connected to Poynt", &body)
}

/// "Not connected": a plain-language reason, a way to start again, and the `reference` (the
/// request id its log line carries) to quote to support.
pub fn refused(app: &str, reason: &str, reference: &str) -> String {
    let body = render(
        REFUSED,
        &[("reason", reason), ("app", app), ("reference", reference)],
    );
    layout("Not connected", &body)
}

/// After Poynt's sign-out.
pub fn signed_out(app: &str) -> String {
    layout("Signed out", &render(SIGNED_OUT, &[("app", app)]))
}

/// Any other path or method.
pub fn not_found(app: &str) -> String {
    layout("Not found", &render(NOT_FOUND, &[("app", app)]))
}

/// An HTML response with the security headers.
pub fn respond(status: StatusCode, html: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    for (name, value) in SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A redirect (`status` 302 or 303) with a small page linking to `location`, or a 500 page
/// when `location` cannot be a header (configuration and validation make that unreachable).
pub fn redirect(status: StatusCode, location: &str) -> Response<Full<Bytes>> {
    let Ok(value) = HeaderValue::try_from(location) else {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            layout("Not connected", "<p>The next address is not valid.</p>"),
        );
    };
    let body = render(REDIRECTING, &[("location", location)]);
    let mut response = respond(status, layout("Redirecting", &body));
    response.headers_mut().insert(LOCATION, value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_nothing_loads_from_outside() {
        let page = refused("App", "<script>alert('x')</script> & \"more\"", "ref-1");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;")
        );
        assert!(!page.contains("<script"));
        for page in [page, signed_out("App"), not_found("App")] {
            assert!(!page.contains("src="), "{page}");
            assert!(!page.contains("http"), "{page}");
        }
    }

    #[test]
    fn placeholders_are_filled_once_and_css_braces_kept() {
        assert_eq!(
            render("a {x} {y} b { c }", &[("x", "{y}"), ("y", "<")]),
            "a {y} &lt; b { c }"
        );
        assert!(signed_out("App").contains("body { font-family"));
    }

    #[test]
    fn success_names_the_business_and_links_to_sign_out() {
        let business = MerchantId::parse("c9580c24-b61e-4e0d-ad26-1dd1d3943d2c").unwrap();
        let page = success(
            "Acme <Pay>",
            business,
            None,
            "https://services.poynt.net/auth/signout",
            "https://connect.example.com/connect/signed-out",
        );
        assert!(
            page.contains(r#"<code id="business-id">c9580c24-b61e-4e0d-ad26-1dd1d3943d2c</code>"#)
        );
        assert!(
            page.contains(r#"<strong id="app-name">Acme &lt;Pay&gt;</strong>"#),
            "{page}"
        );
        assert!(page.contains(r#"href="https://services.poynt.net/auth/signout?redirect=https%3A%2F%2Fconnect.example.com%2Fconnect%2Fsigned-out""#), "{page}");
        let named = success(
            "App",
            business,
            Some("Bob's <Café>"),
            "https://s/o",
            "https://c/s",
        );
        assert!(
            named.contains(r#"<strong id="business-name">Bob&#39;s &lt;Café&gt;</strong> (<code id="business-id">c9580c24-b61e-4e0d-ad26-1dd1d3943d2c</code>) is connected"#),
            "{named}"
        );
    }

    #[test]
    fn every_response_has_the_security_headers() {
        for response in [
            respond(StatusCode::OK, signed_out("App")),
            redirect(StatusCode::FOUND, "https://poynt.net/x?a=1&b=2"),
            redirect(StatusCode::FOUND, "bad\nvalue"),
        ] {
            for (name, value) in SECURITY_HEADERS {
                assert_eq!(response.headers()[&name], value);
            }
        }
    }
}
