//! The account API (`mailfleet api`) over HTTPS (`[api.tls]`) against the
//! real broker and the test CA of `ops/certs`: the bearer token (401
//! without it or with a wrong one, `WWW-Authenticate: Bearer`; 200 with
//! it), the `mailfleet account` CLI verifying the server's certificate
//! (it works with the test CA and fails with `wrong-ca.pem`, naming the
//! URL and rustls's reason), a stalled handshake that does not hold up
//! other clients, plain HTTP refused, mutual TLS (no client certificate:
//! refused; `client.pem`: served), the handshake failures logged and
//! counted, and the refusal to start on `0.0.0.0` without a token,
//! before binding.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mailfleet_api::{
    client::account_path,
    wire::{RegisterRequest, Secret},
    ApiClient, ApiError, ClientTls,
};
use mailfleet_runtime::metrics as m;
use mailfleet_tests::{api::*, *};

/// The test CA's folder. `ops/certs make` rewrites some files on every
/// run and is not safe to run twice at once, so it runs only when a file
/// is missing, under a lock shared by this binary's tests.
fn certs() -> anyhow::Result<PathBuf> {
    let script = repo_root().join("ops/certs");
    let out = Command::new(&script).arg("dir").output()?;
    anyhow::ensure!(out.status.success(), "ops/certs dir: {}", text(&out));
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let needed = [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
        "wrong-ca.pem",
    ];
    if needed.iter().all(|f| dir.join(f).is_file()) {
        return Ok(dir);
    }
    let lock = dir.with_extension("lock");
    std::fs::create_dir_all(dir.parent().unwrap_or(&dir))?;
    let out = Command::new("flock")
        .arg(&lock)
        .arg(&script)
        .arg("make")
        .output()?;
    anyhow::ensure!(out.status.success(), "ops/certs make: {}", text(&out));
    Ok(dir)
}

/// A bearer token generated for this run, in a file of the test's folder.
fn token_file(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let token = format!("{:032x}", rand::random::<u128>());
    let path = dir.join("api.token");
    std::fs::write(&path, format!("{token}\n"))?;
    Ok((path, token))
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// An HTTPS API world: the token file, `[api.tls]` with the test
/// server certificate (and with `mutual`, `client_ca_file`), and extra
/// `[api]` keys. Returns the world and the token.
async fn https_world(
    name: &str,
    certs: &Path,
    mutual: bool,
    client: &str,
) -> anyhow::Result<(ApiWorld, String)> {
    let dir = scratch_dir(&format!("{name}-token"));
    let (path, token) = token_file(&dir)?;
    let client_ca = if mutual {
        format!("client_ca_file = {}\n", quoted(&certs.join("ca.pem")))
    } else {
        String::new()
    };
    let extra = format!(
        "token_file = {}\n[api.tls]\ncert_file = {}\nkey_file = {}\n{client_ca}{client}",
        quoted(&path),
        quoted(&certs.join("server.pem")),
        quoted(&certs.join("server.key")),
    );
    Ok((ApiWorld::new(name, &extra).await?, token))
}

/// Start the world's `mailfleet api` with a Prometheus endpoint on
/// `metrics`.
fn spawn(world: &ApiWorld, metrics: u16) -> anyhow::Result<std::process::Child> {
    let listen = format!("127.0.0.1:{metrics}");
    spawn_with_env(
        &world.config,
        &["api"],
        &[("MAILFLEET_METRICS__LISTEN", &listen)],
        &world.log,
    )
}

fn https(world: &ApiWorld) -> String {
    format!("https://127.0.0.1:{}", world.port)
}

/// A client of the world's HTTPS API.
fn client(world: &ApiWorld, token: Option<&str>, tls: &ClientTls) -> anyhow::Result<ApiClient> {
    Ok(ApiClient::with_tls(
        &https(world),
        token.map(Secret::new),
        tls,
    )?)
}

fn trusting(certs: &Path) -> ClientTls {
    ClientTls {
        ca_file: Some(certs.join("ca.pem")),
        ..ClientTls::default()
    }
}

/// Wait until the API answers `/ready` with 200 over HTTPS.
async fn wait_ready(world: &ApiWorld, api: &ApiClient) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match api.ready().await {
            Ok(r) if r.ready => return Ok(()),
            other => anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the HTTPS API was not ready within 60 s ({other:?}); its log:\n{}",
                world.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The failed handshakes of `reason` the API on `metrics` counted.
fn handshake_failures(metrics: u16, reason: &str) -> f64 {
    let text = scrape(metrics).unwrap_or_default();
    let label = format!("reason=\"{reason}\"");
    metric_sum(&text, m::API_TLS_HANDSHAKE_FAILURES, &[&label])
}

/// `curl` (OpenSSL's TLS, not ours) trusting the test CA: the status
/// line and headers of `GET url`, with `header` if given.
fn curl_headers(certs: &Path, url: &str, header: Option<&str>) -> anyhow::Result<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "10"])
        .arg("--cacert")
        .arg(certs.join("ca.pem"));
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).stdin(Stdio::null()).output()?;
    anyhow::ensure!(out.status.success(), "curl {url}: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout).to_lowercase())
}

fn register(account: &str) -> RegisterRequest {
    RegisterRequest {
        account: account.into(),
        password: Secret::new(strong_password()),
        plan: None,
        display_name: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_over_https_requires_the_token_and_the_cli_verifies_the_certificate(
) -> anyhow::Result<()> {
    let certs = certs()?;
    let (world, token) = https_world("api-tls", &certs, false, "").await?;
    let metrics = free_port();
    let mut children = Children(vec![spawn(&world, metrics)?]);
    let api = client(&world, Some(&token), &trusting(&certs))?;
    wait_ready(&world, &api).await?;
    let bob = world.address("bob");

    // With the token: 201, then 200.
    assert_eq!(api.register(&register(&bob)).await?.account, bob);
    assert_eq!(api.show(&bob).await?.account, bob);

    // Without it, or with a wrong one: 401 and `WWW-Authenticate: Bearer`.
    let wrong = format!("{:032x}", rand::random::<u128>());
    for token in [None, Some(wrong.as_str())] {
        match client(&world, token, &trusting(&certs))?.show(&bob).await {
            Err(ApiError::Refused { status: 401, .. }) => {}
            other => panic!("token {token:?}: expected 401, got {other:?}"),
        }
    }
    let url = format!("{}{}", https(&world), account_path(&bob, ""));
    for header in [None, Some(format!("Authorization: Bearer {wrong}"))] {
        let answer = curl_headers(&certs, &url, header.as_deref())?;
        assert!(answer.starts_with("http/1.1 401"), "{answer}");
        assert!(answer.contains("www-authenticate: bearer"), "{answer}");
    }

    // The CLI: the token from [api] token_file, the CA from --ca-file.
    let ca = certs.join("ca.pem").display().to_string();
    let out = world.cli(
        &["--api", &https(&world), "--ca-file", &ca, "show", &bob],
        "",
    )?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&bob),
        "{}",
        text(&out)
    );
    // The default URL is https://<[api] listen> with [api.tls].
    let out = world.cli(&["--ca-file", &ca, "show", &bob], "")?;
    assert!(out.status.success(), "{}", text(&out));

    // A CA that did not sign the server's certificate: refused, naming
    // the URL and rustls's reason; the server counts the client's alert.
    let alerts = handshake_failures(metrics, "client_alert");
    let wrong_ca = certs.join("wrong-ca.pem").display().to_string();
    let out = world.cli(&["--ca-file", &wrong_ca, "show", &bob], "")?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&https(&world))
            && stderr.contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        text(&out)
    );
    wait_until(
        "the client's alert counted",
        Duration::from_secs(10),
        || handshake_failures(metrics, "client_alert") > alerts,
    )
    .await?;

    // Plain HTTP to the HTTPS port: no answer, counted as `protocol`.
    let plain = ApiClient::new(&format!("http://127.0.0.1:{}", world.port), None)?;
    assert!(
        plain.ready().await.is_err(),
        "plain HTTP must not be served"
    );
    wait_until("plain HTTP counted", Duration::from_secs(10), || {
        handshake_failures(metrics, "protocol") >= 1.0
    })
    .await?;

    // A client that connects and never starts its handshake holds up no
    // one (a new client: a new connection, accepted after the stalled
    // one), and does not hold up the shutdown either.
    let _stalled = std::net::TcpStream::connect(("127.0.0.1", world.port))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let fresh = client(&world, Some(&token), &trusting(&certs))?;
    assert_eq!(fresh.show(&bob).await?.account, bob);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a request waited {:?} behind a stalled handshake",
        started.elapsed()
    );
    let stopping = Instant::now();
    children.terminate()?;
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );

    let log = world.log_text();
    assert!(log.contains("HTTPS"), "{log}");
    assert!(!log.contains(&token), "the log holds the token:\n{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn api_with_mutual_tls_refuses_a_client_without_a_certificate() -> anyhow::Result<()> {
    let certs = certs()?;
    let client_keys = format!(
        "[api.client]\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
        quoted(&certs.join("ca.pem")),
        quoted(&certs.join("client.pem")),
        quoted(&certs.join("client.key")),
    );
    let (world, token) = https_world("api-mtls", &certs, true, &client_keys).await?;
    let metrics = free_port();
    let mut children = Children(vec![spawn(&world, metrics)?]);
    let with_cert = ClientTls {
        cert_file: Some(certs.join("client.pem")),
        key_file: Some(certs.join("client.key")),
        ..trusting(&certs)
    };
    let api = client(&world, Some(&token), &with_cert)?;
    wait_ready(&world, &api).await?;
    let carol = world.address("carol");
    assert_eq!(api.register(&register(&carol)).await?.account, carol);

    // The right CA and the token, but no client certificate: no answer.
    let before = handshake_failures(metrics, "client_certificate");
    let bare = client(&world, Some(&token), &trusting(&certs))?;
    match bare.show(&carol).await {
        Err(e @ (ApiError::Tls { .. } | ApiError::Unreachable { .. })) => {
            assert!(e.to_string().contains(&https(&world)), "{e}");
        }
        other => panic!("a client without a certificate must be refused, got {other:?}"),
    }
    wait_until(
        "the refused client counted",
        Duration::from_secs(10),
        || handshake_failures(metrics, "client_certificate") > before,
    )
    .await?;
    let log = world.log_text();
    assert!(
        log.lines().any(|l| l.contains("TLS handshake failed")
            && l.contains("127.0.0.1:")
            && l.contains("peer sent no certificates")),
        "no handshake failure naming the peer and the reason:\n{log}"
    );

    // With client.pem: served, by the client and by the CLI ([api.client]).
    assert_eq!(api.show(&carol).await?.account, carol);
    let out = world.cli(&["show", &carol], "")?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&carol),
        "{}",
        text(&out)
    );
    children.terminate()
}

/// Run `mailfleet api` with `config` and `env`; it must exit (not serve)
/// within 30 s. Its exit code and output.
fn refused_start(config: &Path, env: &[(&str, &str)]) -> anyhow::Result<(Option<i32>, String)> {
    let log = config.with_extension("log");
    let mut child = spawn_with_env(config, &["api"], env, &log)?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "mailfleet api did not refuse to start: {}",
                std::fs::read_to_string(&log)?
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok((status.code(), std::fs::read_to_string(&log)?))
}

#[tokio::test(flavor = "multi_thread")]
async fn api_refuses_a_non_loopback_listen_without_a_token_before_binding() -> anyhow::Result<()> {
    let certs = certs()?;
    let dir = scratch_dir("api-open");
    let port = free_port();
    // Held by the test: a server that tried to bind would fail with
    // "cannot listen" rather than the refusal.
    let _held = std::net::TcpListener::bind(("0.0.0.0", port))?;
    let listen = format!("0.0.0.0:{port}");
    let expected = format!("api.listen = {listen:?} is not loopback: set api.token_file");
    let plain = dir.join("plain.toml");
    std::fs::write(&plain, "[metrics]\nlisten = \"\"\n[api]\n")?;
    let tls = dir.join("tls.toml");
    std::fs::write(
        &tls,
        format!(
            "[metrics]\nlisten = \"\"\n[api]\n[api.tls]\ncert_file = {}\nkey_file = {}\n",
            quoted(&certs.join("server.pem")),
            quoted(&certs.join("server.key")),
        ),
    )?;
    for config in [&plain, &tls] {
        let (code, output) = refused_start(config, &[("MAILFLEET_API__LISTEN", &listen)])?;
        assert_eq!(code, Some(2), "{}: {output}", config.display());
        assert!(output.contains(&expected), "{}: {output}", config.display());
        assert!(!output.contains("cannot listen"), "{output}");
        assert!(!output.contains("account API listening"), "{output}");
    }
    Ok(())
}
