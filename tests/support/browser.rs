//! A real browser: headless Chromium (Debian's `chromium`, which `scripts/test.sh` installs)
//! loads a URL, follows every redirect, and hands back the final page's DOM.

use std::time::Duration;

use tokio::process::Command;

/// Longest a page load may take before Chromium is killed.
const DEADLINE: Duration = Duration::from_secs(60);

/// Loads `url` in a fresh headless Chromium profile and returns the final DOM. `spki_pin`
/// (base64 SHA-256 of a certificate's SubjectPublicKeyInfo) is the one certificate trusted
/// beyond the system's: the emulator's, never a blanket ignore.
pub async fn dump_dom(url: &str, spki_pin: &str) -> String {
    let output = chromium(url, spki_pin, &["--dump-dom".to_owned()]).await;
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Loads `url` (following redirects) in a fresh profile, as a new tab or a reload would, and
/// saves what a 800×600 window shows as a PNG at `png`.
pub async fn screenshot(url: &str, spki_pin: &str, png: &std::path::Path) {
    if let Some(dir) = png.parent() {
        std::fs::create_dir_all(dir).expect("screenshot dir");
    }
    chromium(
        url,
        spki_pin,
        &[
            "--window-size=800,600".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--screenshot={}", png.display()),
        ],
    )
    .await;
    let written = std::fs::read(png).expect("chromium wrote the screenshot");
    assert!(
        written.starts_with(b"\x89PNG"),
        "{} is no PNG",
        png.display()
    );
}

/// Runs headless Chromium on `url` with `mode` (what to produce), within [`DEADLINE`].
async fn chromium(url: &str, spki_pin: &str, mode: &[String]) -> std::process::Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let child = Command::new("chromium")
        // As root, Chromium needs --no-sandbox; without the background-networking flags it
        // keeps trying to reach Google's services from this closed network.
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--ignore-certificate-errors-spki-list={spki_pin}"))
        .args(mode)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium runs (scripts/test.sh installs it)");
    // On the deadline the future is dropped, and with it the child: kill_on_drop kills it.
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("chromium did not finish loading {url} within {DEADLINE:?}"))
        .expect("chromium's output");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
