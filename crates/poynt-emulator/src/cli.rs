//! The `emulator` subcommand: runs a Poynt emulator as its own process, for the demo and
//! for benchmarks that drive the proxy from outside.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;

use super::error::EmulatorError;
use super::{EmulatorConfig, generate_app_key, start};
use poynt_wire::MerchantId;

/// Arguments of the `emulator` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on. Port 0 picks a free port; the line printed on start names it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,

    /// Serve HTTPS with a certificate for localhost and 127.0.0.1, issued by a CA made at
    /// start (write it with --ca-out so clients can trust it).
    #[arg(long)]
    pub tls: bool,

    /// Another name the certificate covers besides localhost and 127.0.0.1 (a host name or
    /// an IP address), for clients that reach the emulator under it, e.g. a compose
    /// service. Repeatable; the first one is the host of the announced base URL (and so of
    /// the default --audience). Needs --tls.
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls")]
    pub tls_names: Vec<String>,

    /// Write the CA certificate (PEM) that clients must trust to this file. Needs --tls.
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,

    /// The registered application id (urn:aid:...): assertions' iss and sub must equal it.
    #[arg(long, value_name = "URN")]
    pub app_id: String,

    /// The registered application's RSA public key (PEM, "PUBLIC KEY" or "RSA PUBLIC KEY").
    /// If absent, a new app key pair is generated and its private key written to
    /// --app-private-key-out.
    #[arg(long, value_name = "FILE")]
    pub app_public_key: Option<PathBuf>,

    /// Where to write the generated app private key (PKCS#8 PEM, mode 0600) when
    /// --app-public-key is absent; required in that case.
    #[arg(long, value_name = "FILE")]
    pub app_private_key_out: Option<PathBuf>,

    /// A merchant (business UUID) that has authorized the app from the start. Repeatable;
    /// the first is the one /applications/authorize approves by default.
    #[arg(long = "merchant", value_name = "UUID")]
    pub merchants: Vec<MerchantId>,

    /// Lifetime of issued access tokens (expiresIn), e.g. 86400s, 24h, 90s.
    #[arg(long, value_name = "DURATION", default_value = "86400s", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// The aud that assertions must carry. Default: the emulator's own base URL.
    #[arg(long, value_name = "URL")]
    pub audience: Option<String>,
}

/// Runs the emulator until Ctrl-C or SIGTERM. Prints exactly one line to stdout once bound,
/// `poynt-emulator listening on <base_url>`, which scripts and tests wait for.
pub async fn run_cli(args: EmulatorArgs) -> Result<(), EmulatorError> {
    let stop = stop_signal()?;
    let announce = |base_url: &str| {
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "poynt-emulator listening on {base_url}");
        let _ = stdout.flush();
    };
    serve(args, announce, stop).await
}

/// The body of `run_cli`, with the announcement and the stop signal passed in so tests can
/// drive it.
async fn serve(
    args: EmulatorArgs,
    announce: impl FnOnce(&str),
    stop: impl Future<Output = Result<(), EmulatorError>>,
) -> Result<(), EmulatorError> {
    if args.ca_out.is_some() && !args.tls {
        return Err(EmulatorError::CaOutWithoutTls);
    }
    let app_public_key_pem = match (&args.app_public_key, &args.app_private_key_out) {
        (Some(path), _) => {
            std::fs::read_to_string(path).map_err(|source| EmulatorError::ReadFile {
                what: "application public key",
                path: path.clone(),
                source,
            })?
        }
        (None, Some(out)) => {
            let (private_pem, public_pem) = generate_app_key()?;
            write_private(out, &private_pem)?;
            public_pem
        }
        (None, None) => return Err(EmulatorError::MissingPrivateKeyOut),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: args.listen.to_string(),
            source,
        })?;
    let config = EmulatorConfig {
        app_id: args.app_id,
        app_public_key_pem,
        audience: args.audience,
        merchants: args.merchants,
        token_ttl: args.token_ttl,
        tls: args.tls,
        tls_names: args.tls_names,
    };
    let emulator = start(config, listener).await?;
    if let (Some(path), Some(ca_pem)) = (&args.ca_out, emulator.ca_pem()) {
        std::fs::write(path, ca_pem).map_err(|source| EmulatorError::WriteFile {
            what: "CA certificate",
            path: path.clone(),
            source,
        })?;
    }
    announce(&emulator.base_url());
    let stopped = stop.await;
    emulator.shutdown().await;
    stopped
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, pem: &str) -> Result<(), EmulatorError> {
    let error = |source| EmulatorError::WriteFile {
        what: "application private key",
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(error)?;
    file.write_all(pem.as_bytes()).map_err(error)
}

/// Installs the stop-signal handlers now (so a signal arriving during start-up is not
/// lost) and returns a future that resolves on Ctrl-C, or SIGTERM where there is one.
fn stop_signal() -> Result<impl Future<Output = Result<(), EmulatorError>>, EmulatorError> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| EmulatorError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    Ok(async move {
        let ctrl_c = async {
            tokio::signal::ctrl_c()
                .await
                .map_err(|source| EmulatorError::Signal {
                    signal: "Ctrl-C",
                    source,
                })
        };
        #[cfg(unix)]
        {
            tokio::select! {
                result = ctrl_c => result,
                _ = terminate.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            ctrl_c.await
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    #[test]
    fn defaults_and_repeatable_merchants() {
        let cli = Cli::try_parse_from([
            "x",
            "--app-id",
            "urn:aid:a",
            "--merchant",
            "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c",
            "--merchant",
            "C9580C24-B61E-4E0D-AD26-1DD1D3943D2D",
            "--token-ttl",
            "90s",
        ])
        .unwrap();
        assert_eq!(cli.args.listen, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(cli.args.merchants.len(), 2);
        assert_eq!(cli.args.token_ttl, Duration::from_secs(90));
        assert!(!cli.args.tls);
        let default_ttl = Cli::try_parse_from(["x", "--app-id", "urn:aid:a"]).unwrap();
        assert_eq!(default_ttl.args.token_ttl, Duration::from_secs(86_400));
        assert!(Cli::try_parse_from(["x", "--app-id", "urn:aid:a", "--merchant", "nope"]).is_err());
    }

    /// An emulator served by [`serve`] in the background over TLS, with its CA and app key
    /// written into a temporary directory.
    struct Served {
        base_url: String,
        port: u16,
        dir: tempfile::TempDir,
        stop: tokio::sync::oneshot::Sender<()>,
        server: tokio::task::JoinHandle<Result<(), EmulatorError>>,
    }

    impl Served {
        /// Serves with `--tls` and `extra` arguments; returns once it announced itself.
        async fn start(extra: &[&str]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca_out = dir.path().join("ca.pem");
            let key_out = dir.path().join("app.pem");
            let mut argv = vec![
                "x",
                "--listen",
                "127.0.0.1:0",
                "--tls",
                "--ca-out",
                ca_out.to_str().unwrap(),
                "--app-id",
                "urn:aid:a",
                "--app-private-key-out",
                key_out.to_str().unwrap(),
            ];
            argv.extend_from_slice(extra);
            let cli = Cli::try_parse_from(argv).unwrap();
            let (announced_tx, announced_rx) = tokio::sync::oneshot::channel();
            let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let announce = move |base_url: &str| {
                let _ = announced_tx.send(base_url.to_owned());
            };
            let stopped = async move {
                let _ = stop_rx.await;
                Ok(())
            };
            let server = tokio::spawn(serve(cli.args, announce, stopped));
            let base_url = announced_rx.await.unwrap();
            let port = base_url.rsplit(':').next().unwrap().parse().unwrap();
            Self {
                base_url,
                port,
                dir,
                stop,
                server,
            }
        }

        fn file(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }

        async fn stop(self) {
            self.stop.send(()).unwrap();
            self.server.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn serves_until_stopped_and_writes_the_key_and_ca() {
        let served = Served::start(&[]).await;
        assert!(
            served.base_url.starts_with("https://localhost:"),
            "{}",
            served.base_url
        );
        let key_out = served.file("app.pem");
        let private_pem = std::fs::read_to_string(&key_out).unwrap();
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            std::fs::read_to_string(served.file("ca.pem"))
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        let port = served.port;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        );
        served.stop().await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        );
    }

    /// A TLS handshake with the emulator at `port` as `server_name`, trusting `ca_pem` only.
    async fn handshake(port: u16, server_name: &str, ca_pem: &str) -> std::io::Result<()> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
        connector.connect(name, tcp).await.map(drop)
    }

    #[tokio::test]
    async fn a_tls_name_is_covered_by_the_certificate_and_names_the_base_url() {
        let served = Served::start(&["--tls-name", "emulator.test"]).await;
        assert!(
            served.base_url.starts_with("https://emulator.test:"),
            "{}",
            served.base_url
        );
        let ca_pem = std::fs::read_to_string(served.file("ca.pem")).unwrap();
        for name in ["emulator.test", "localhost", "127.0.0.1"] {
            let result = handshake(served.port, name, &ca_pem).await;
            assert!(result.is_ok(), "{name}: {result:?}");
        }
        assert!(handshake(served.port, "other.test", &ca_pem).await.is_err());
        served.stop().await;
    }

    #[test]
    fn a_tls_name_needs_tls() {
        assert!(
            Cli::try_parse_from(["x", "--app-id", "urn:aid:a", "--tls-name", "emulator"]).is_err()
        );
    }

    #[tokio::test]
    async fn refuses_inconsistent_key_and_ca_options() {
        let cli =
            Cli::try_parse_from(["x", "--app-id", "urn:aid:a", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(matches!(
            run_cli(cli.args).await,
            Err(EmulatorError::MissingPrivateKeyOut)
        ));
        let cli = Cli::try_parse_from([
            "x",
            "--app-id",
            "urn:aid:a",
            "--ca-out",
            "/nonexistent/ca.pem",
        ])
        .unwrap();
        assert!(matches!(
            run_cli(cli.args).await,
            Err(EmulatorError::CaOutWithoutTls)
        ));
    }
}
