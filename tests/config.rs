//! Configuration: every mistake is caught at start-up with the key path in the message, and
//! the app key loads in both PEM forms.

mod support;

use poynt_proxy::config::{Config, KeySources, PRIVATE_KEY_ENV};
use support::fixture;

fn key_line(name: &str) -> String {
    format!(
        "  private_key_file: {:?}\n",
        fixture(name).display().to_string()
    )
}

fn base(poynt_extra: &str, top_extra: &str) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\npoynt:\n  api_url: \"https://services.poynt.net\"\n  application_id: \"urn:aid:x\"\n{}{poynt_extra}{top_extra}",
        key_line("app-key-pkcs8.pem")
    )
}

fn error_of(yaml: &str) -> String {
    match Config::parse(yaml, &KeySources::default()) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_full_config_parses_with_defaults() {
    let config = Config::parse(&base("", ""), &KeySources::default()).expect("valid");
    assert_eq!(config.poynt.token_url, "https://services.poynt.net/token");
    assert_eq!(config.poynt.audience, "https://services.poynt.net");
    assert_eq!(config.poynt.api_version, "1.2");
    assert_eq!(config.merchant.header, "x-poynt-merchant-id");
    assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(
        config.server.workers,
        std::thread::available_parallelism().unwrap().get(),
        "one worker per CPU the process may use"
    );
}

#[test]
fn the_example_config_is_valid() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml"),
    )
    .expect("example exists");
    let text = text.replace(
        "app-key.pem",
        &fixture("app-key-pkcs1.pem").display().to_string(),
    );
    Config::parse(&text, &KeySources::default()).expect("example.yaml is valid");
    // Its commented-out onboarding section is valid too, once uncommented.
    let with_onboarding = text
        .replace("\n# onboarding:", "\nonboarding:")
        .replace("\n#   ", "\n  ");
    let config = Config::parse(&with_onboarding, &KeySources::default())
        .expect("example.yaml's onboarding section is valid");
    let onboarding = config.onboarding.expect("onboarding on");
    assert_eq!(
        onboarding.redirect_uri,
        "https://connect.example.com/oauth/callback"
    );
}

#[test]
fn errors_name_the_key_and_what_was_wrong() {
    let cases = [
        (base("  apiurl: \"x\"\n", ""), "apiurl"),
        (base("", "colour: blue\n"), "colour"),
        (
            base("", "").replace("https://services.poynt.net", "ftp://x"),
            "poynt.api_url: \"ftp://x\" is not an http(s) URL",
        ),
        (
            base("", "").replace("https://services.poynt.net", "http://poynt.example.com"),
            "poynt.api_url: \"http://poynt.example.com\" uses http to a non-loopback host",
        ),
        (
            base("  token_timeout: 10 parsecs\n", ""),
            "poynt.token_timeout",
        ),
        (
            base("", "tokens:\n  backoff_max: soon\n"),
            "tokens.backoff_max",
        ),
        (
            base("", "").replace("  application_id: \"urn:aid:x\"\n", ""),
            "poynt.application_id: missing",
        ),
        (
            base("", "").replace(
                &fixture("app-key-pkcs8.pem").display().to_string(),
                "/nonexistent/key.pem",
            ),
            "poynt.private_key_file: cannot read private key file /nonexistent/key.pem",
        ),
        (
            base("", "store:\n  backend: cassandra\n"),
            "store.backend: expected one of: memory; found \"cassandra\"",
        ),
        (
            base("", "").replace("127.0.0.1:0", "localhost:eighty"),
            "listen: expected an IP:port socket address",
        ),
        (
            base("", "admin_listen: \"::1\"\n"),
            "admin_listen: expected",
        ),
        (
            base("  ca_file: \"/nonexistent/ca.pem\"\n", ""),
            "poynt.ca_file: cannot read CA file",
        ),
        (
            base("", "server:\n  workers: 0\n"),
            "server.workers: expected at least 1",
        ),
    ];
    for (yaml, expected) in cases {
        let message = error_of(&yaml);
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
}

#[test]
fn unknown_nested_keys_name_their_section() {
    let message = error_of(&base("", "tokens:\n  refresh_ahead: 0.5\n"));
    assert!(message.starts_with("tokens"), "{message}");
    assert!(message.contains("refresh_ahead"), "{message}");
}

#[test]
fn pkcs1_and_pkcs8_keys_both_load() {
    for name in ["app-key-pkcs1.pem", "app-key-pkcs8.pem"] {
        let yaml = base("", "").replace("app-key-pkcs8.pem", name);
        Config::parse(&yaml, &KeySources::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn a_corrupt_or_wrong_key_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(fixture("app-key-pkcs8.pem")).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.truncate(lines.len() / 2);
    let corrupt = format!("{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
    let cases = [
        (
            corrupt.as_str(),
            "\"PRIVATE KEY\" PEM block that does not parse as an RSA key",
        ),
        (
            std::fs::read_to_string(fixture("app-key-public.pem"))
                .unwrap()
                .leak() as &str,
            "\"PUBLIC KEY\" PEM block",
        ),
        ("", "an empty file"),
        ("hello", "text with no PEM block"),
    ];
    for (i, (text, expected)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("key{i}.pem"));
        std::fs::write(&path, text).unwrap();
        let yaml = base("", "").replace(
            &fixture("app-key-pkcs8.pem").display().to_string(),
            &path.display().to_string(),
        );
        let message = error_of(&yaml);
        assert!(
            message.starts_with("poynt.private_key_file: expected an RSA private key"),
            "{message}"
        );
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
        assert!(!message.contains("MII"), "key material leaked: {message}");
    }
}

#[test]
fn the_key_may_come_from_the_environment_variable() {
    let yaml = base("", "").replace(&key_line("app-key-pkcs8.pem"), "");
    let missing = error_of(&yaml);
    assert!(missing.contains(PRIVATE_KEY_ENV), "{missing}");
    let pem = std::fs::read_to_string(fixture("app-key-pkcs1.pem")).unwrap();
    let sources = KeySources {
        base_dir: None,
        private_key_env: Some(pem.into()),
    };
    let config = Config::parse(&yaml, &sources).expect("env key accepted");
    assert!(
        !format!("{config:?}").contains("MII"),
        "Debug shows key material"
    );
    let sources = KeySources {
        base_dir: None,
        private_key_env: Some("garbage".to_string().into()),
    };
    let message = Config::parse(&yaml, &sources).unwrap_err().to_string();
    assert!(message.starts_with(PRIVATE_KEY_ENV), "{message}");
}

#[test]
fn relative_paths_resolve_against_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("app-key-pkcs1.pem"), dir.path().join("app-key.pem")).unwrap();
    let yaml = base("", "").replace(
        &fixture("app-key-pkcs8.pem").display().to_string(),
        "app-key.pem",
    );
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    Config::load(&path).expect("key found next to the config");
}

fn onboarding(lines: &str) -> String {
    base("", &format!("onboarding:\n{lines}"))
}

#[test]
fn onboarding_is_off_unless_configured_and_derives_the_redirect_uri() {
    let off = Config::parse(&base("", ""), &KeySources::default()).unwrap();
    assert!(off.onboarding.is_none());
    assert_eq!(
        off.oauth.signout_url,
        "https://services.poynt.net/auth/signout"
    );
    let on = Config::parse(
        &onboarding("  public_url: \"https://connect.example.com/\"\n"),
        &KeySources::default(),
    )
    .unwrap();
    let settings = on.onboarding.as_ref().unwrap();
    assert_eq!(settings.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(settings.public_url, "https://connect.example.com");
    assert_eq!(
        settings.redirect_uri,
        "https://connect.example.com/oauth/callback"
    );
    assert!(matches!(
        settings.code_key,
        poynt_proxy::onboarding::code_key::CodeKeySource::Tls
    ));
    assert_eq!(settings.code_issuer, "https://poynt.net");
    assert_eq!(settings.state_ttl, std::time::Duration::from_secs(600));
    assert!(settings.state_key.is_none());
    assert!(on.warnings().is_empty());
}

#[test]
fn the_seed_key_pasted_as_printed_names_the_key_and_the_bad_line() {
    let err = error_of(&onboarding(&format!(
        "  public_url: \"https://connect.example.com\"\n  code_key: {:?}\n",
        fixture("poynt-merchant-authorization-key.pem")
            .display()
            .to_string()
    )));
    assert!(err.starts_with("onboarding.code_key: "), "{err}");
    assert!(
        err.contains("line 1: expected a PEM armour line such as \"-----BEGIN PUBLIC KEY-----\"; found \"-----START PUBLIC KEY-----\""),
        "{err}"
    );
}

#[test]
fn onboarding_errors_name_the_key() {
    let cases = [
        ("  code_key: tls\n", "onboarding.public_url: missing"),
        (
            "  public_url: \"http://connect.example.com\"\n",
            "onboarding.public_url: \"http://connect.example.com\" uses http to a non-loopback host",
        ),
        (
            "  public_url: \"https://connect.example.com/onboard\"\n",
            "onboarding.public_url: expected a scheme and host only",
        ),
        (
            "  public_url: \"https://c.example.com\"\n  code_key: /nonexistent.pem\n",
            "onboarding.code_key: expected \"tls\" or a PEM public key or certificate file",
        ),
        (
            "  public_url: \"https://c.example.com\"\n  state_ttl: 0s\n",
            "onboarding.state_ttl: expected a duration above zero",
        ),
        (
            "  public_url: \"https://c.example.com\"\n  state_ttl: 2d\n",
            "onboarding.state_ttl: expected at most 1day",
        ),
        (
            "  public_url: \"https://c.example.com\"\n  success_redirect: \"ftp://x\"\n",
            "onboarding.success_redirect:",
        ),
        (
            "  public_url: \"https://c.example.com\"\n  code_issuer: \" \"\n",
            "onboarding.code_issuer:",
        ),
        (
            "  public_url: \"https://c.example.com\"\n  listen: \"nope\"\n",
            "onboarding.listen:",
        ),
        (
            "  public_url: \"https://c.example.com\"\n  surprise: 1\n",
            "unknown field `surprise`",
        ),
    ];
    for (lines, needle) in cases {
        let err = error_of(&onboarding(lines));
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.b64");
    std::fs::write(&short, "c2hvcnQ=\n").unwrap();
    let err = error_of(&onboarding(&format!(
        "  public_url: \"https://c.example.com\"\n  state_key_file: {:?}\n",
        short.display().to_string()
    )));
    assert!(
        err.starts_with("onboarding.state_key_file: expected 32 random bytes in base64"),
        "{err}"
    );
    assert!(err.contains("found 5 bytes"), "{err}");
    assert!(
        !err.contains("c2hvcnQ"),
        "the key's contents are never shown: {err}"
    );
}
