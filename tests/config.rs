//! Configuration: every mistake is caught at start-up with the key path in the message, and
//! the app key loads in both PEM forms.

mod support;

use poynt_proxy::config::{
    Config, KeySources, PRIVATE_KEY_ENV, REDIS_URL_ENV, StoreBackend, StoreConfig,
};
use poynt_proxy::store::keys::{self, STORE_KEY_ENV};
use secrecy::ExposeSecret as _;
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
    let start = text.find("\n# onboarding:").expect("onboarding example");
    let end = start + text[start..].find("\n\n").expect("its end");
    let section = text[start..end]
        .replace("\n# onboarding:", "\nonboarding:")
        .replace("\n#   ", "\n  ");
    let with_onboarding = format!("{}{section}{}", &text[..start], &text[end..]);
    let config = Config::parse(&with_onboarding, &KeySources::default())
        .expect("example.yaml's onboarding section is valid");
    let onboarding = config.onboarding.expect("onboarding on");
    assert_eq!(
        onboarding.redirect_uri,
        "https://connect.example.com/oauth/callback"
    );
}

/// Sizes as nginx users type them (binary units, 1k = 1024); decimal units and words are
/// refused with the key and the text quoted, never guessed at.
#[test]
fn body_sizes_take_nginx_style_units() {
    let parsed = |size: &str| {
        let yaml = base(
            "",
            &format!("server:\n  max_request_body_bytes: {size}\n  retry_buffer_bytes: {size}\n"),
        );
        Config::parse(&yaml, &KeySources::default()).map(|c| {
            (
                c.server.max_request_body_bytes,
                c.server.retry_buffer_bytes as u64,
            )
        })
    };
    for (size, bytes) in [
        ("65536", 65536),
        ("\"64k\"", 64 << 10),
        ("64K", 64 << 10),
        ("64KiB", 64 << 10),
        ("1m", 1 << 20),
        ("\"1 MiB\"", 1 << 20),
    ] {
        assert_eq!(parsed(size).expect(size), (bytes, bytes), "{size}");
    }
    let config = Config::parse(
        &base("", "server:\n  max_request_body_bytes: 1GiB\n"),
        &KeySources::default(),
    )
    .expect("1GiB");
    assert_eq!(config.server.max_request_body_bytes, 1 << 30);
    let config = Config::parse(
        &base("", "server:\n  max_request_body_bytes: 2g\n"),
        &KeySources::default(),
    )
    .expect("2g");
    assert_eq!(config.server.max_request_body_bytes, 2 << 30);
    for bad in ["1GB", "lots", "-1k", "1.5m", "99999999999999999999g"] {
        let error = error_of(&base(
            "",
            &format!("server:\n  max_request_body_bytes: {bad}\n"),
        ));
        assert!(
            error.contains("server.max_request_body_bytes: expected a byte count or a number with a binary unit")
                && error.contains(&format!("found {bad:?}")),
            "{bad}: {error}"
        );
    }
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
            base("", "store:\n  backend: memory\nlimits:\n  scope: cluster\n"),
            "limits.scope: cluster keeps the limits in the shared store; expected store.backend redis, found memory",
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
            "store.backend: expected one of: embedded, redis, memory; found \"cassandra\"",
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
            "server.workers: expected between 1 and 1024; found 0",
        ),
        (
            base("", &traces("127.0.0.1:4317", "    protocol: grpc\n")),
            "telemetry.traces.endpoint: expected an http or https URL such as http://127.0.0.1:4317; found \"127.0.0.1:4317\"",
        ),
        (
            base(
                "",
                &traces("http://127.0.0.1:4317/v1/traces", "    protocol: grpc\n"),
            ),
            "telemetry.traces.endpoint: expected a gRPC collector's address alone",
        ),
        (
            base(
                "",
                &traces(
                    "https://127.0.0.1:4318",
                    "    ca_file: /nonexistent/otel-ca.pem\n",
                ),
            ),
            "telemetry.traces.ca_file: cannot read CA file /nonexistent/otel-ca.pem",
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

/// A `telemetry.traces` section exporting to `endpoint`, with `extra` lines under it.
fn traces(endpoint: &str, extra: &str) -> String {
    format!("telemetry:\n  traces:\n    endpoint: {endpoint}\n{extra}")
}

#[test]
fn a_traces_ca_file_that_holds_no_certificate_is_refused_by_name() {
    let garbage = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(garbage.path(), "not a certificate\n").unwrap();
    let message = error_of(&base(
        "",
        &traces(
            "https://127.0.0.1:4317",
            &format!("    protocol: grpc\n    ca_file: {:?}\n", garbage.path()),
        ),
    ));
    assert!(
        message.contains(&format!(
            "telemetry.traces.ca_file: cannot read CA file {}: expected at least one \"BEGIN CERTIFICATE\" PEM block; found none",
            garbage.path().display()
        )),
        "{message}"
    );
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
        ..KeySources::default()
    };
    let config = Config::parse(&yaml, &sources).expect("env key accepted");
    assert!(
        !format!("{config:?}").contains("MII"),
        "Debug shows key material"
    );
    let sources = KeySources {
        base_dir: None,
        private_key_env: Some("garbage".to_string().into()),
        ..KeySources::default()
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

/// The checked store section of `store` (indented YAML), paths resolved in `dir`.
fn store_of(
    store: &str,
    dir: &std::path::Path,
    sources: KeySources,
) -> Result<StoreConfig, String> {
    let sources = KeySources {
        base_dir: Some(dir.to_owned()),
        ..sources
    };
    Config::parse(&base("", &format!("store:\n{store}")), &sources)
        .map(|c| c.store)
        .map_err(|e| e.to_string())
}

fn write_key(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn the_store_defaults_to_an_embedded_file_beside_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, base("", "")).unwrap();
    let store = Config::load(&path).expect("valid").store;
    assert_eq!(store.backend, StoreBackend::Embedded);
    assert_eq!(store.path, dir.path().join("data/tokens.redb"));
    assert_eq!(store.timeout, std::time::Duration::from_millis(500));
    assert_eq!(store.key_prefix, "poynt-proxy");
    assert_eq!(store.redis_url.shown(), "redis://127.0.0.1:6379/0");
    assert!(store.key.is_none());
    assert_eq!(
        store.key_beside_data(),
        Some(dir.path().join("data/tokens.redb.key")),
        "no key configured: it will sit beside the data"
    );
    assert!(!dir.path().join("data").exists(), "parsing creates nothing");
}

#[test]
fn store_errors_name_the_key_and_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = keys::generate();
    write_key(dir.path(), "good.key", good.expose_secret());
    write_key(dir.path(), "short.key", "c2hvcnQ=");
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    let cases = [
        ("  path: \"\"\n", "store.path: expected a file path"),
        (
            "  path: adir\n",
            "store.path: expected a file; found the directory",
        ),
        (
            "  redis_url: \"http://127.0.0.1:6379\"\n",
            "store.redis_url: expected redis://",
        ),
        (
            "  redis_url: \"nonsense\"\n",
            "store.redis_url: expected redis://",
        ),
        (
            "  key_prefix: \"\"\n",
            "store.key_prefix: expected a non-empty name",
        ),
        (
            "  key_prefix: \"a b\"\n",
            "store.key_prefix: expected a non-empty name",
        ),
        (
            "  key_file: nowhere.key\n",
            "store.key_file: cannot read key file",
        ),
        (
            "  key_file: short.key\n",
            "store.key_file: expected the base64 of 32 random bytes (`poynt-proxy store keygen` prints one); found 5 bytes",
        ),
        (
            "  key_file: good.key\n  previous_key_files: [good.key, short.key]\n",
            "store.previous_key_files[1]: expected the base64 of 32 random bytes",
        ),
        (
            "  timeout: 0s\n",
            "store.timeout: expected a duration above zero",
        ),
        ("  timeout: soon\n", "store.timeout"),
        ("  color: blue\n", "color"),
        (
            "  backend: redis\n",
            "store.key_file: missing; the redis backend needs one key shared by every replica",
        ),
    ];
    for (yaml, expected) in cases {
        let message = store_of(yaml, dir.path(), KeySources::default()).unwrap_err();
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
}

#[test]
fn the_memory_store_ignores_key_settings() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(
        "  backend: memory\n  key_file: nowhere.key\n  previous_key_files: [gone.key]\n",
        dir.path(),
        KeySources::default(),
    )
    .expect("memory needs no key");
    assert!(store.key.is_none() && store.previous_keys.is_empty());
    assert_eq!(store.key_beside_data(), None);
}

#[test]
fn the_environment_overrides_the_store_key_and_the_redis_url() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "file.key", keys::generate().expose_secret());
    let env_key = keys::generate();
    let sources = || KeySources {
        store_key_env: Some(env_key.expose_secret().to_owned().into()),
        redis_url_env: Some(
            "rediss://proxy:hunter2-secret@redis.internal:6380/2"
                .to_owned()
                .into(),
        ),
        ..KeySources::default()
    };
    let store = store_of(
        "  backend: redis\n  key_file: file.key\n  redis_url: \"redis://127.0.0.1/0\"\n",
        dir.path(),
        sources(),
    )
    .expect("valid");
    assert_eq!(
        store.key.as_ref().map(|k| k.key.id()),
        Some(keys::parse(env_key.expose_secret()).unwrap().id()),
        "{STORE_KEY_ENV} wins over store.key_file"
    );
    assert_eq!(
        store.redis_url.shown(),
        "rediss://proxy@redis.internal:6380/2"
    );
    assert!(store.redis_url.expose().contains("hunter2-secret"));
    let shown = format!("{store:?}");
    assert!(
        !shown.contains("hunter2"),
        "Debug shows the Redis password: {shown}"
    );
    assert!(
        !shown.contains(env_key.expose_secret()),
        "Debug shows the key"
    );

    let bad_url = KeySources {
        redis_url_env: Some("http://user:hunter2-secret@x".to_owned().into()),
        ..sources()
    };
    let message = store_of("  backend: redis\n", dir.path(), bad_url).unwrap_err();
    assert!(message.starts_with(REDIS_URL_ENV), "{message}");
    assert!(
        !message.contains("hunter2"),
        "the error echoes a password: {message}"
    );
    let bad_key = KeySources {
        store_key_env: Some("not a key".to_owned().into()),
        ..KeySources::default()
    };
    let message = store_of("  backend: embedded\n", dir.path(), bad_key).unwrap_err();
    assert!(message.starts_with(STORE_KEY_ENV), "{message}");
}

#[test]
fn huge_numbers_and_durations_fail_check_instead_of_run() {
    for (yaml, expected) in [
        (
            "server:\n  max_connections: 10000000000\n",
            "server.max_connections: expected between 1 and 1000000; found 10000000000",
        ),
        (
            "server:\n  http2_max_concurrent_streams: 0\n",
            "server.http2_max_concurrent_streams: expected between 1 and 10000; found 0",
        ),
        (
            "server:\n  header_read_timeout: 100years\n",
            "server.header_read_timeout: expected at most 10m; found 100years",
        ),
        (
            "server:\n  idle_timeout: 0s\n",
            "server.idle_timeout: expected a duration above zero",
        ),
        (
            "tokens:\n  backoff_max: 5000years\n",
            "tokens.backoff_max: expected at most 1day",
        ),
        (
            "tokens:\n  max_merchants: 18446744073709551615\n",
            "tokens.max_merchants: expected between 1 and 100000000",
        ),
        (
            "tokens:\n  new_merchant_grant_burst: 0\n",
            "tokens.new_merchant_grant_burst: expected between 1 and 1000000; found 0",
        ),
    ] {
        let message = error_of(&base("", yaml));
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
    let message = error_of(&base("  response_timeout: 10000000days\n", ""));
    assert!(
        message.contains("poynt.response_timeout: expected at most 1day"),
        "{message}"
    );
}

/// A connection with a request open re-reads its deadline once per the shortest of these,
/// so a few milliseconds would keep busy connections' timers firing; 100 ms is accepted.
#[test]
fn connection_timeouts_below_a_tenth_of_a_second_fail_check() {
    for key in ["header_read_timeout", "keepalive_timeout", "idle_timeout"] {
        let message = error_of(&base("", &format!("server:\n  {key}: 5ms\n")));
        assert!(
            message.contains(&format!("server.{key}: expected at least 100ms; found 5ms")),
            "{message}"
        );
        let config = Config::parse(
            &base("", &format!("server:\n  {key}: 100ms\n")),
            &KeySources::default(),
        )
        .expect("100ms is the floor");
        let server = config.server;
        let shortest = server
            .header_read_timeout
            .min(server.keepalive_timeout)
            .min(server.idle_timeout);
        assert_eq!(shortest.as_millis(), 100, "{key}");
    }
}

#[test]
fn urls_with_credentials_are_refused_without_printing_them() {
    let yaml = base("", "").replace(
        "https://services.poynt.net",
        "https://user:s3cret@services.poynt.net",
    );
    let message = error_of(&yaml);
    assert!(
        message.starts_with("poynt.api_url: expected a URL without user-info"),
        "{message}"
    );
    assert!(
        !message.contains("s3cret") && !message.contains("user:"),
        "{message}"
    );
    assert!(
        message.contains("https://<redacted>@services.poynt.net"),
        "{message}"
    );
    let yaml = base(
        "",
        "oauth:\n  authorize_url: \"https://a:b@poynt.net/applications/authorize\"\n",
    );
    assert!(error_of(&yaml).starts_with("oauth.authorize_url: expected a URL without user-info"));
}

#[test]
fn an_admin_listener_reachable_from_other_hosts_needs_a_bearer_secret() {
    let message = error_of(&base("", "admin_listen: \"0.0.0.0:9090\"\n"));
    assert!(
        message.starts_with(
            "admin.bearer_token_file: admin_listen 0.0.0.0:9090 is reachable from other hosts"
        ),
        "{message}"
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("admin.secret");
    std::fs::write(&secret, "0123456789abcdef0123").unwrap();
    let yaml = base(
        "",
        &format!(
            "admin_listen: \"0.0.0.0:9090\"\nadmin:\n  bearer_token_file: {:?}\n",
            secret.display().to_string()
        ),
    );
    Config::parse(&yaml, &KeySources::default())
        .expect("a protected public admin listener is fine");
    Config::parse(
        &base("", "admin_listen: \"[::1]:9090\"\n"),
        &KeySources::default(),
    )
    .expect("loopback needs no secret");
}

#[test]
fn a_log_level_word_that_is_not_a_level_is_refused_and_directives_pass() {
    let level = |text: &str| base("", &format!("log:\n  level: {text:?}\n"));
    for word in ["warning", "poynt_proxy", "verbose", ""] {
        assert_eq!(
            error_of(&level(word)),
            format!(
                "log.level: expected trace, debug, info, warn, error, off or an EnvFilter directive; found {word:?}"
            )
        );
    }
    for accepted in [
        "trace",
        "WARN",
        "off",
        "warn,poynt_proxy=debug",
        "poynt_proxy=debug",
        "poynt_proxy::proxy",
    ] {
        let config = Config::parse(&level(accepted), &KeySources::default())
            .unwrap_or_else(|e| panic!("{accepted:?} refused: {e}"));
        assert_eq!(config.log.level, accepted);
    }
}

#[test]
fn listeners_that_would_bind_the_same_port_are_refused() {
    let with = |listen: &str, rest: &str| {
        base("", rest).replacen("listen: \"127.0.0.1:0\"", &format!("listen: {listen:?}"), 1)
    };
    let onboarding = |addr: &str| {
        format!("onboarding:\n  listen: {addr:?}\n  public_url: \"https://connect.example.com\"\n")
    };
    for (yaml, expected) in [
        (
            with("127.0.0.1:9090", ""),
            "admin_listen: expected an address no other listener binds; found 127.0.0.1:9090, which collides with listen (127.0.0.1:9090)",
        ),
        (
            with("0.0.0.0:8081", &onboarding("127.0.0.1:8081")),
            "onboarding.listen: expected an address no other listener binds; found 127.0.0.1:8081, which collides with listen (0.0.0.0:8081)",
        ),
        (
            with("127.0.0.1:8080", &onboarding("127.0.0.1:9090")),
            "onboarding.listen: expected an address no other listener binds; found 127.0.0.1:9090, which collides with admin_listen (127.0.0.1:9090)",
        ),
    ] {
        assert_eq!(error_of(&yaml), expected);
    }
    for fine in [
        with("127.0.0.1:8080", &onboarding("127.0.0.1:8081")),
        with("127.0.0.2:9090", ""),
        with("127.0.0.1:0", "admin_listen: \"127.0.0.1:0\"\n"),
    ] {
        Config::parse(&fine, &KeySources::default())
            .unwrap_or_else(|e| panic!("refused: {e}\n{fine}"));
    }
}

#[test]
fn the_merchant_allow_list_comes_from_the_file_and_the_list_and_names_bad_entries() {
    let a = "11111111-1111-4111-8111-111111111111";
    let b = "22222222-2222-4222-8222-222222222222";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("allow.txt");
    std::fs::write(&file, format!("# onboarded merchants\n{b}  # second\n\n")).unwrap();
    let yaml = base(
        "",
        &format!(
            "merchant:\n  allow: [\"{}\"]\n  allow_file: {:?}\n",
            a.to_uppercase(),
            file.display().to_string()
        ),
    );
    let config = Config::parse(&yaml, &KeySources::default()).unwrap();
    let allow = config.merchant.allow.expect("an allow-list");
    assert_eq!(allow.len(), 2);
    assert!(allow.contains(&a.parse().unwrap()) && allow.contains(&b.parse().unwrap()));

    let message = error_of(&base(
        "",
        &format!("merchant:\n  allow: [\"{a}\", \"nope\"]\n"),
    ));
    assert!(
        message.starts_with("merchant.allow: entry 2: expected a business ID"),
        "{message}"
    );
    std::fs::write(&file, format!("{a}\nnot-a-uuid\n")).unwrap();
    let message = error_of(&base(
        "",
        &format!(
            "merchant:\n  allow_file: {:?}\n",
            file.display().to_string()
        ),
    ));
    assert!(
        message.starts_with("merchant.allow_file: ") && message.contains("line 2"),
        "{message}"
    );
    let message = error_of(&base("", "merchant:\n  allow: []\n"));
    assert!(
        message.starts_with("merchant.allow: expected at least one business ID"),
        "{message}"
    );
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
    assert_eq!(settings.app_name, "this app");
    assert!(settings.state_key.is_none());
    assert!(on.warnings().iter().all(|w| !w.contains("redirect_uri")));
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
        (
            "  public_url: \"https://c.example.com\"\n  app_name: \" \"\n",
            "onboarding.app_name: expected the app's name as merchants know it, 1 to 100 characters; found \" \"",
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
