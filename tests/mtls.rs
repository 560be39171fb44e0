//! The mTLS method through the real proxy and emulator: a TLS listener beside the plaintext
//! one, client certificates issued here (rcgen) by a CA the proxy trusts and by one it does
//! not, curl with a client certificate, HTTP/1.1 and h2 by ALPN, and a reload that swaps the
//! client CA bundle for new connections. Every refusal is checked to cost nothing upstream.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use poynt_proxy::callers::api_key;
use poynt_wire::MerchantId;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use support::{Builder, HEADER, Harness, assert_poynt_error, eventually};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const PAYMENTS: &str = "spiffe://shop.test/ns/shop/sa/payments";

/// A certificate authority made for one test.
struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// A leaf with these SANs and common name; `expired` puts its validity in the past.
    fn issue(&self, sans: Vec<SanType>, cn: Option<&str>, expired: bool) -> Issued {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// The proxy's certificate, for 127.0.0.1.
    fn server(&self) -> Issued {
        self.issue(
            vec![SanType::IpAddress("127.0.0.1".parse().unwrap())],
            None,
            false,
        )
    }

    fn client(&self, uri: &str) -> Issued {
        self.issue(
            vec![SanType::URI(uri.try_into().unwrap())],
            Some("ignored"),
            false,
        )
    }
}

/// The proxy, its TLS material and a caller's API key.
struct World {
    h: Harness,
    tls: SocketAddr,
    server_ca: Ca,
    clients: Ca,
    reports_key: String,
    dir: std::path::PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

async fn world() -> World {
    world_with("").await
}

/// The world with `extra` lines at the top level of the configuration.
async fn world_with(extra: &str) -> World {
    let builder = Builder::default().merchants(1);
    let merchants: Vec<MerchantId> = vec![support::merchant()];
    let emulator = builder.emulator(&merchants).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let server_ca = Ca::new("server CA");
    let server = server_ca.server();
    let clients = Ca::new("client CA");
    write(&path, "server.pem", &server.cert);
    write(&path, "server-key.pem", &server.key);
    write(&path, "clients.pem", &clients.pem());
    let (reports_key, reports_line) = api_key::generate("reports").unwrap();
    write(&path, "keys", &format!("{reports_line}\n"));
    let yaml = support::proxy_yaml(
        &emulator,
        &dir,
        &format!(
            "tls:\n  listen: \"127.0.0.1:0\"\n  cert_file: server.pem\n  key_file: server-key.pem\n  client_ca_file: clients.pem\ncallers:\n  authentication:\n    api_keys:\n      file: keys\n    mtls:\n      identity: [uri, cn]\n  policy:\n    \"{PAYMENTS}\":\n      merchants: all\n      allow: [\"GET /businesses/*\"]\n    reports:\n      merchants: all\n      allow: [\"GET /businesses/*\"]\n{extra}"
        ),
    );
    let h = support::launch_file(emulator, merchants, yaml, dir).await;
    let tls = h.proxy.tls_addr().expect("a TLS listener");
    World {
        h,
        tls,
        server_ca,
        clients,
        reports_key,
        dir: path,
    }
}

/// A TLS client trusting `server_ca`, presenting `client` if any, offering `alpn`.
fn client_config(server_ca: &Ca, client: Option<&Issued>, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(issued.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One TLS connection to the proxy, HTTP/1.1 or h2 as ALPN chose.
enum Conn {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// Connects to the TLS listener with `client` (if any) offering `alpn`, or says why the
/// connection failed.
async fn connect(w: &World, client: Option<&Issued>, alpn: &[u8]) -> Result<Conn, String> {
    let connector = client_config(&w.server_ca, client, alpn);
    let tcp = TcpStream::connect(w.tls).await.map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::IpAddress(w.tls.ip().into()), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn::Http2(sender))
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("http/1.1: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn::Http1(sender))
    }
}

impl Conn {
    /// GETs the merchant's business (with `key` as an API key): the status, body and
    /// protocol spoken, or why the request failed.
    async fn get(
        &mut self,
        w: &World,
        key: Option<&str>,
    ) -> Result<(u16, Value, http::Version), String> {
        let merchant = w.h.merchants[0];
        let mut request = http::Request::get(format!("https://{}/businesses/{merchant}", w.tls))
            .header(HEADER, merchant.to_string());
        if let Some(key) = key {
            request = request.header("x-poynt-proxy-key", key);
        }
        let response = match self {
            Self::Http2(sender) => {
                sender
                    .send_request(request.body(Empty::new()).unwrap())
                    .await
            }
            Self::Http1(sender) => {
                let request = request.header("host", w.tls.to_string());
                sender
                    .send_request(request.body(Empty::new()).unwrap())
                    .await
            }
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let version = response.version();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            version,
        ))
    }
}

/// One GET on a connection of its own.
async fn get(
    w: &World,
    client: Option<&Issued>,
    alpn: &[u8],
    key: Option<&str>,
) -> Result<(u16, Value, http::Version), String> {
    connect(w, client, alpn).await?.get(w, key).await
}

#[tokio::test]
async fn a_client_certificate_names_its_caller_over_http1_and_h2() {
    let w = world().await;
    let payments = w.clients.client(PAYMENTS);
    let (status, _, version) = get(&w, Some(&payments), b"http/1.1", None).await.unwrap();
    assert_eq!((status, version), (200, http::Version::HTTP_11));
    let (status, _, version) = get(&w, Some(&payments), b"h2", None).await.unwrap();
    assert_eq!(
        (status, version),
        (200, http::Version::HTTP_2),
        "h2 by ALPN"
    );
    let (status, _, _) = get(&w, Some(&payments), b"h2", Some(&w.reports_key))
        .await
        .unwrap();
    assert_eq!(
        status, 401,
        "a certificate and an API key naming two callers"
    );
    assert_eq!(
        w.h.metric(&format!(
            "poynt_proxy_requests_total{{caller=\"{PAYMENTS}\",code=\"200\",method=\"GET\",source=\"upstream\"}}"
        ))
        .await,
        2.0
    );
    assert_eq!(w.h.stats().api_calls, 2, "only the two served reach Poynt");
    // The plaintext listener beside it still serves, with its own methods.
    let merchant = w.h.merchants[0];
    let response =
        w.h.client
            .get(w.h.url(&format!("/businesses/{merchant}")))
            .header(HEADER, merchant.to_string())
            .header("x-poynt-proxy-key", &w.reports_key)
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    w.h.stop().await;
}

#[tokio::test]
async fn certificates_of_another_ca_expired_or_without_a_name_never_reach_poynt() {
    let w = world().await;
    let stranger = Ca::new("client CA").client(PAYMENTS);
    let expired = w
        .clients
        .issue(vec![SanType::URI(PAYMENTS.try_into().unwrap())], None, true);
    let nameless = w.clients.issue(
        vec![SanType::URI(
            "spiffe://shop.test/has space".try_into().unwrap(),
        )],
        None,
        false,
    );
    for (what, client) in [
        ("another CA", Some(&stranger)),
        ("expired", Some(&expired)),
        ("no certificate", None),
    ] {
        for alpn in [&b"http/1.1"[..], b"h2"] {
            let outcome = get(&w, client, alpn, None).await;
            assert!(
                outcome.is_err(),
                "{what}: refused at the handshake, got {outcome:?}"
            );
        }
    }
    let (status, body, _) = get(&w, Some(&nameless), b"http/1.1", None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_poynt_error(&body, "CALLER_UNAUTHENTICATED", 401);
    assert!(
        body["message"].as_str().unwrap().contains("(uri, cn)"),
        "{body}"
    );
    let stats = w.h.stats();
    assert_eq!(stats.api_calls, 0, "upstream calls");
    assert_eq!(stats.token_calls_total, 0, "grants");
    // Six handshakes refused for their certificate (three kinds, two protocols each), seen by
    // ops; the nameless certificate's handshake succeeded (its 401 is a request).
    let refused =
        r#"poynt_proxy_tls_handshake_failures_total{listener="proxy",reason="client_certificate"}"#;
    eventually(
        "six refused handshakes counted",
        Duration::from_secs(10),
        || async { w.h.metric(refused).await == 6.0 },
    )
    .await;
    assert_eq!(
        w.h.metric(
            "poynt_proxy_tls_handshake_failures_total{listener=\"proxy\",reason=\"protocol\"}"
        )
        .await,
        0.0
    );
    w.h.stop().await;
}

#[tokio::test]
async fn curl_with_a_client_certificate_is_served() {
    let w = world().await;
    let payments = w.clients.client(PAYMENTS);
    write(&w.dir, "client.pem", &payments.cert);
    write(&w.dir, "client-key.pem", &payments.key);
    write(&w.dir, "server-ca.pem", &w.server_ca.pem());
    let merchant = w.h.merchants[0];
    // tokio's Command: the emulator runs on this test's runtime, which must keep turning.
    let output = tokio::process::Command::new("curl")
        .arg("--silent")
        .arg("--show-error")
        .args(["--max-time", "20"])
        .arg("--cert")
        .arg(w.dir.join("client.pem"))
        .arg("--key")
        .arg(w.dir.join("client-key.pem"))
        .arg("--cacert")
        .arg(w.dir.join("server-ca.pem"))
        .args(["--write-out", "\n%{http_code} %{http_version}"])
        .arg("--header")
        .arg(format!("{HEADER}: {merchant}"))
        .arg(format!("https://{}/businesses/{merchant}", w.tls))
        .output()
        .await
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.ends_with("\n200 2"),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    w.h.stop().await;
}

#[tokio::test]
async fn a_reload_swaps_the_ca_bundle_and_certificate_for_new_connections_only() {
    let mut w = world().await;
    let old = w.clients.client(PAYMENTS);
    let next = Ca::new("next client CA");
    let renewed = next.client(PAYMENTS);
    assert!(get(&w, Some(&renewed), b"http/1.1", None).await.is_err());
    let mut open = connect(&w, Some(&old), b"h2").await.unwrap();
    assert_eq!(open.get(&w, None).await.unwrap().0, 200);
    let next_server_ca = Ca::new("next server CA");
    let next_server = next_server_ca.server();
    write(&w.dir, "clients.pem", &next.pem());
    write(&w.dir, "server.pem", &next_server.cert);
    write(&w.dir, "server-key.pem", &next_server.key);
    let applied = w.h.proxy.reload().await.unwrap().expect("reloaded");
    assert!(applied.not_applied.is_empty(), "{:?}", applied.not_applied);
    assert!(
        get(&w, Some(&renewed), b"http/1.1", None).await.is_err(),
        "the proxy now shows a certificate of the next server CA"
    );
    w.server_ca = next_server_ca;
    let (status, _, _) = get(&w, Some(&renewed), b"http/1.1", None).await.unwrap();
    assert_eq!(
        status, 200,
        "the new client CA's certificate, after the reload"
    );
    assert!(
        get(&w, Some(&old), b"http/1.1", None).await.is_err(),
        "the old client CA is no longer trusted"
    );
    assert_eq!(
        open.get(&w, None).await.unwrap().0,
        200,
        "a connection opened before the reload keeps serving"
    );
    w.h.stop().await;
}

#[test]
fn bad_tls_and_mtls_settings_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let server = ca.issue(
        vec![SanType::DnsName("proxy".try_into().unwrap())],
        None,
        false,
    );
    let other = ca.issue(
        vec![SanType::DnsName("other".try_into().unwrap())],
        None,
        false,
    );
    write(dir.path(), "server.pem", &server.cert);
    write(dir.path(), "server-key.pem", &server.key);
    write(dir.path(), "other-key.pem", &other.key);
    write(dir.path(), "ca.pem", &ca.pem());
    write(dir.path(), "empty.pem", "");
    let sources = poynt_proxy::config::KeySources {
        base_dir: Some(dir.path().to_owned()),
        private_key_env: Some(
            std::fs::read_to_string(support::fixture("app-key-pkcs8.pem"))
                .unwrap()
                .into(),
        ),
        ..Default::default()
    };
    let base =
        "poynt:\n  api_url: \"https://services.poynt.net\"\n  application_id: \"urn:aid:x\"\n";
    let tls = |key: &str, ca: &str| {
        format!("tls:\n  listen: \"127.0.0.1:0\"\n  cert_file: server.pem\n  key_file: {key}\n{ca}")
    };
    let callers = |identity: &str| {
        format!(
            "callers:\n  authentication:\n    mtls:\n      identity: {identity}\n  policy:\n    a:\n      merchants: all\n      allow: [\"GET /businesses/*\"]\n"
        )
    };
    let with_ca = "  client_ca_file: ca.pem\n";
    let parse =
        |yaml: String| poynt_proxy::config::Config::parse(&format!("{base}{yaml}"), &sources);
    let config = parse(format!(
        "{}{}",
        tls("server-key.pem", with_ca),
        callers("[uri, cn]")
    ))
    .expect("valid");
    assert_eq!(config.tls.expect("tls").listen.to_string(), "127.0.0.1:0");
    for (yaml, expected) in [
        (
            callers("uri"),
            "callers.authentication.mtls: expected a tls section with client_ca_file",
        ),
        (
            format!("{}{}", tls("server-key.pem", ""), callers("uri")),
            "callers.authentication.mtls: expected a tls section with client_ca_file",
        ),
        (
            format!(
                "{}{}",
                tls("server-key.pem", with_ca),
                callers("[uri, email]")
            ),
            "callers.authentication.mtls.identity: expected uri, dns or cn (or a list of them); found \"email\"",
        ),
        (
            format!("{}{}", tls("server-key.pem", with_ca), callers("[]")),
            "found an empty list",
        ),
        (
            tls("other-key.pem", with_ca),
            "tls: expected a certificate, key and client CA bundle rustls accepts",
        ),
        (
            tls("server-key.pem", "  client_ca_file: empty.pem\n"),
            "empty.pem: expected a PEM bundle of CA certificates; found no certificate",
        ),
        (
            tls("missing.pem", ""),
            "missing.pem: expected a PEM private key",
        ),
    ] {
        let error = parse(yaml.clone())
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{yaml}"));
        assert!(
            error.to_string().contains(expected),
            "{error}\nexpected: {expected}"
        );
        assert!(!error.to_string().contains("PRIVATE KEY"), "{error}");
    }
}

#[tokio::test]
async fn a_stalled_handshake_holds_nothing_up_and_is_closed_at_the_header_deadline() {
    use tokio::io::AsyncReadExt as _;
    let w = world_with("server:\n  header_read_timeout: 1s\n  workers: 1\n").await;
    let mut stalled = TcpStream::connect(w.tls).await.unwrap();
    let payments = w.clients.client(PAYMENTS);
    let (status, _, _) = get(&w, Some(&payments), b"h2", None).await.unwrap();
    assert_eq!(
        status, 200,
        "the one worker accepts and serves beside the stalled handshake"
    );
    // A safety bound only: the proxy closes the connection after about one second.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut byte))
        .await
        .expect("closed by the proxy");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let timeouts = r#"poynt_proxy_tls_handshake_failures_total{listener="proxy",reason="timeout"}"#;
    eventually(
        "the stalled handshake counted",
        Duration::from_secs(10),
        || async { w.h.metric(timeouts).await == 1.0 },
    )
    .await;
    w.h.stop().await;
}
