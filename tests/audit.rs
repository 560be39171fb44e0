//! The audit trail through the real proxy and emulator: grants, a policy refusal, admin
//! calls (with and without the admin secret), an eviction and an onboarding outcome are
//! written as chained JSON lines with no secret in them; the real binary's `audit verify`
//! passes on the file as written and names the line where an edited, an inserted or a
//! deleted line breaks the chain; rotation keeps the chain verifiable across files.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use poynt_proxy::callers::api_key;
use poynt_wire::MerchantId;
use serde_json::Value;
use support::process::BIN;
use support::{Builder, HEADER, Harness, eventually};

const ADMIN_SECRET: &str = "admin-secret-for-the-audit-test";

/// A proxy with callers, an admin secret and an audit file, and the keys its callers use.
struct Trail {
    h: Harness,
    path: PathBuf,
    payments_key: String,
    analytics_key: String,
    _dir: tempfile::TempDir,
}

/// Starts the proxy with `audit` lines (keys of the `audit:` section, beside `output` and
/// `path`).
async fn trail(audit: &str) -> Trail {
    let merchants: Vec<MerchantId> = (0..2).map(|_| support::merchant()).collect();
    let dir = tempfile::tempdir().unwrap();
    let (payments_key, payments_line) = api_key::generate("payments").unwrap();
    let (analytics_key, analytics_line) = api_key::generate("analytics").unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{payments_line}\n{analytics_line}\n")).unwrap();
    let secret = dir.path().join("admin-secret");
    std::fs::write(&secret, ADMIN_SECRET).unwrap();
    let path = dir.path().join("audit.log");
    let yaml = format!(
        "callers:\n  mode: enforce\n  authentication:\n    api_keys:\n      file: {keys:?}\n  policy:\n    payments:\n      merchants: all\n      allow: [\"GET /businesses/*\"]\n    analytics:\n      merchants: [\"{m0}\"]\n      allow: [\"GET /businesses/*/orders*\"]\nadmin:\n  bearer_token_file: {secret:?}\naudit:\n  output: file\n  path: {path:?}\n{audit}",
        m0 = merchants[0],
    );
    let h = Builder::default()
        .merchant_ids(&merchants)
        .onboarding("  code_key: {EMULATOR_KEY_FILE}\n")
        .yaml(&yaml)
        .start()
        .await;
    Trail {
        h,
        path,
        payments_key,
        analytics_key,
        _dir: dir,
    }
}

impl Trail {
    async fn call(&self, key: &str, merchant: MerchantId, path: &str) -> u16 {
        self.h
            .client
            .get(self.h.url(path))
            .header(HEADER, merchant.to_string())
            .header("x-poynt-proxy-key", key)
            .send()
            .await
            .expect("proxy answers")
            .status()
            .as_u16()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, bearer: Option<&str>) -> u16 {
        let mut request = self.h.client.request(method, self.h.admin_url(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request
            .send()
            .await
            .expect("admin answers")
            .status()
            .as_u16()
    }

    /// The audit lines written so far, parsed.
    fn events(&self) -> Vec<Value> {
        lines(&self.path)
            .iter()
            .map(|line| serde_json::from_str(line).expect("an audit line is JSON"))
            .collect()
    }

    /// Waits until an event has every field of `want`.
    async fn wait_for(&self, want: Value) {
        let want = want.as_object().unwrap().clone();
        eventually(
            &format!("audit event {want:?}"),
            Duration::from_secs(10),
            || {
                let found = self
                    .events()
                    .iter()
                    .any(|event| want.iter().all(|(k, v)| event.get(k) == Some(v)));
                async move { found }
            },
        )
        .await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs the real binary's `audit verify` on `files`: whether it passed, and what it said.
fn verify(files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(BIN)
        .arg("audit")
        .arg("verify")
        .args(files)
        .output()
        .expect("run audit verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// Writes `lines` to a new file beside `path` named `name`.
fn tampered(path: &Path, name: &str, lines: &[String]) -> PathBuf {
    let out = path.with_file_name(name);
    std::fs::write(&out, format!("{}\n", lines.join("\n"))).unwrap();
    out
}

#[tokio::test]
async fn every_event_kind_is_written_without_a_secret_and_tampering_is_found() {
    let t = trail("").await;
    let (m0, m1) = (t.h.merchants[0], t.h.merchants[1]);
    assert_eq!(
        t.call(&t.payments_key, m0, &format!("/businesses/{m0}"))
            .await,
        200
    );
    assert_eq!(
        t.call(&t.payments_key, m1, &format!("/businesses/{m1}"))
            .await,
        200
    );
    // analytics may act for m0 only, and only on orders.
    let refused = format!("/businesses/{m1}/orders");
    assert_eq!(t.call(&t.analytics_key, m1, &refused).await, 403);
    let evict = format!("/admin/tokens/{m0}");
    assert_eq!(
        t.admin(reqwest::Method::DELETE, &evict, Some(ADMIN_SECRET))
            .await,
        200
    );
    assert_eq!(
        t.admin(reqwest::Method::GET, "/admin/tokens", Some("wrong-secret"))
            .await,
        401
    );
    let callback =
        t.h.onboarding_url("/oauth/callback?state=forged&code=forged");
    let onboarding = t.h.client.get(callback).send().await.unwrap();
    assert!(
        onboarding.status().is_client_error(),
        "{}",
        onboarding.status()
    );

    let m0s = m0.to_string();
    let m1s = m1.to_string();
    t.wait_for(serde_json::json!({"event": "grant", "grant": "jwt_bearer", "merchant": m0s, "outcome": "success"})).await;
    t.wait_for(serde_json::json!({"event": "acted", "caller": "payments", "merchant": m0s, "method": "GET", "path": "/businesses/{id}", "status": 200})).await;
    t.wait_for(serde_json::json!({"event": "refusal", "caller": "analytics", "merchant": m1s, "rule": "merchants", "mode": "enforce"})).await;
    t.wait_for(serde_json::json!({"event": "acted", "caller": "analytics", "merchant": m1s, "path": "/businesses/{id}/orders", "status": 403})).await;
    t.wait_for(serde_json::json!({"event": "admin", "credential": "admin.bearer_token", "method": "DELETE", "path": evict, "status": 200})).await;
    t.wait_for(serde_json::json!({"event": "eviction", "merchant": m0s, "evicted": true}))
        .await;
    t.wait_for(serde_json::json!({"event": "admin", "credential": "none", "path": "/admin/tokens", "status": 401})).await;
    t.wait_for(serde_json::json!({"event": "onboarding", "outcome": "bad_state"}))
        .await;

    // Nothing secret: not a token the emulator issued, not a caller's key, not the admin
    // secret, not the wrong secret presented.
    let text = std::fs::read_to_string(&t.path).unwrap();
    let issued = t.h.emulator.issued_secrets();
    assert!(!issued.is_empty(), "the emulator issued tokens");
    for secret in issued.iter().map(String::as_str).chain([
        t.payments_key.as_str(),
        t.analytics_key.as_str(),
        ADMIN_SECRET,
        "wrong-secret",
    ]) {
        assert!(!text.contains(secret), "a secret in the audit trail");
    }

    let (ok, said) = verify(std::slice::from_ref(&t.path));
    assert!(ok, "the file as written verifies: {said}");
    let written = lines(&t.path);
    assert!(written.len() >= 8, "{} lines", written.len());

    // Line 2 edited: line 3 no longer carries its hash.
    let mut edited = written.clone();
    edited[1] = edited[1].replacen("\"ts\":\"", "\"ts\":\"1", 1);
    let file = tampered(&t.path, "edited.log", &edited);
    let (ok, said) = verify(std::slice::from_ref(&file));
    assert!(!ok, "an edited line is found");
    assert!(said.contains(&format!("{}:3:", file.display())), "{said}");

    // A copy of line 2 inserted after it, as line 3.
    let mut inserted = written.clone();
    inserted.insert(2, written[1].clone());
    let file = tampered(&t.path, "inserted.log", &inserted);
    let (ok, said) = verify(std::slice::from_ref(&file));
    assert!(!ok, "an inserted line is found");
    assert!(said.contains(&format!("{}:3:", file.display())), "{said}");

    // Line 2 deleted: what is now line 2 does not follow line 1.
    let mut deleted = written.clone();
    deleted.remove(1);
    let file = tampered(&t.path, "deleted.log", &deleted);
    let (ok, said) = verify(std::slice::from_ref(&file));
    assert!(!ok, "a deleted line is found");
    assert!(said.contains(&format!("{}:2:", file.display())), "{said}");

    t.h.stop().await;
}

#[tokio::test]
async fn rotated_files_verify_as_one_chain_and_a_missing_one_is_found() {
    let t = trail("  max_bytes: 4096\n  keep: 20\n").await;
    let m0 = t.h.merchants[0];
    for n in 0..40 {
        let path = format!("/businesses/{m0}/orders/{n}");
        assert_eq!(t.call(&t.payments_key, m0, &path).await, 200);
    }
    t.wait_for(serde_json::json!({"event": "acted", "path": "/businesses/{id}/orders/{id}"}))
        .await;
    let rotated = |n: usize| PathBuf::from(format!("{}.{n}", t.path.display()));
    eventually(
        "41 audit lines across the files",
        Duration::from_secs(10),
        || {
            let total: usize = (1..=20)
                .map(rotated)
                .chain([t.path.clone()])
                .map(|p| lines(&p).len())
                .sum();
            async move { total == 41 }
        },
    )
    .await;
    let count = (1..=20).take_while(|&n| rotated(n).exists()).count();
    assert!(
        count >= 2,
        "the file rotated more than once ({count} rotated files)"
    );
    let mut files: Vec<PathBuf> = (1..=count).rev().map(rotated).collect();
    files.push(t.path.clone());
    for file in &files {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(size <= 4096, "{} is {size} bytes", file.display());
    }
    let (ok, said) = verify(&files);
    assert!(ok, "rotated files verify in order: {said}");

    // A rotated file left out breaks the chain at the first line of the file after it.
    let missing = files.remove(1);
    let (ok, said) = verify(&files);
    assert!(
        !ok,
        "a missing file is found (left out {})",
        missing.display()
    );
    assert!(
        said.contains(&format!("{}:1:", files[1].display())),
        "{said}"
    );

    t.h.stop().await;
}

/// The example's commented-out `audit:` section, uncommented, is valid and says what it
/// documents; a wrong output or a file without a path is refused naming the key.
#[test]
fn the_audit_section_is_checked() {
    use poynt_proxy::config::{AuditOutput, Config, KeySources};
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml"))
            .unwrap();
    let start = example.find("\n# audit:").expect("audit example");
    let end = start + example[start..].find("\n\n").expect("its end");
    let section = example[start..end]
        .replace("\n# audit:", "\naudit:")
        .replace("\n#   ", "\n  ");
    let base = format!(
        "poynt:\n  application_id: \"urn:aid:test\"\n  private_key_file: {:?}\n",
        support::fixture("app-key-pkcs1.pem").display().to_string()
    );
    let config = Config::parse(&format!("{base}{section}\n"), &KeySources::default())
        .expect("the example's audit section is valid");
    let audit = config.audit.expect("audit on");
    assert_eq!(audit.queue, 8192);
    let AuditOutput::File(file) = audit.output else {
        panic!("expected a file output");
    };
    assert_eq!(
        (file.max_bytes, file.keep),
        (64 << 20, 5),
        "the example shows the defaults"
    );
    for (yaml, key) in [
        ("audit:\n  output: syslog\n", "audit.output"),
        ("audit:\n  output: file\n", "audit.path"),
        ("audit:\n  output: stdout\n  keep: 3\n", "audit.output"),
        (
            "audit:\n  output: file\n  path: a.log\n  max_bytes: 1k\n",
            "audit.max_bytes",
        ),
    ] {
        let error = Config::parse(&format!("{base}{yaml}"), &KeySources::default())
            .expect_err(yaml)
            .to_string();
        assert!(error.contains(key), "{yaml}: {error}");
    }
    let off = Config::parse(&base, &KeySources::default()).unwrap();
    assert_eq!(off.audit, None, "off by default");
}
