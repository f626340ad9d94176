//! Prometheus for real (G7 §2): a private Prometheus (`ops/prometheus`,
//! its own port and run folder) scrapes a whole fleet as an operator runs
//! it (`run --all`, lmtp, policy, api, scheduler, clock, postfix-map, each
//! with its own `/metrics`, on the shipped `ops/mailfleet.toml` against a
//! private broker), after traffic through its front doors; then:
//! - `ops/prometheus check`: promtool finds the config, the alert rules and
//!   their unit tests clean;
//! - every PromQL expression of `ops/grafana/mailfleet.json` parses and
//!   returns at least one series through `/api/v1/query` (the failures are
//!   listed by panel and expression);
//! - a poison record on `mail.received` makes `MailfleetDeadLetters` fire
//!   for the scanner (`/api/v1/alerts`), and no rule fails to evaluate.
//!
//! The broker, clamd and the notifier's relay (`ops/smtp-sink`) are
//! private instances too; slapd is the shared one (`ops/ldap`), and
//! `postfix-map` needs the shared Postfix's main.cf (`ops/postfix start`).

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_api::{
    wire::{Channel, LoginRequest, RegisterRequest, Secret},
    ApiClient,
};
use mailfleet_policy::client::PolicyClient;
use mailfleet_runtime::producer::EventProducer;
use mailfleet_tests::{api::strong_password, directory, fleet::deliver, outage::Private, *};
use serde_json::Value;

/// How long the dashboard's queries get to return a series: the purge run
/// is released within its one-minute window.
const QUERIES_WITHIN: Duration = Duration::from_secs(240);
/// How long the other waits get.
const WITHIN: Duration = Duration::from_secs(120);

/// A private instance of an `ops/` script (its own run folder and port),
/// reset (stopped, state deleted) when dropped, also when the test fails.
struct Ops {
    script: &'static str,
    env: Vec<(&'static str, String)>,
}

impl Ops {
    fn new(script: &'static str, run_dir: &Path, env: &[(&'static str, String)]) -> Ops {
        let mut all = vec![("MAILFLEET_RUN_DIR", run_dir.display().to_string())];
        all.extend(env.iter().cloned());
        Ops { script, env: all }
    }

    /// `ops/<script> <action>`: its output, or an error with it.
    fn run(&self, action: &str) -> anyhow::Result<String> {
        let out = Command::new(repo_root().join("ops").join(self.script))
            .arg(action)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            out.status.success(),
            "ops/{} {action}: {}\n{text}",
            self.script,
            out.status
        );
        Ok(text)
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        if let Err(e) = self.run("reset") {
            eprintln!("resetting the private {}: {e}", self.script);
        }
    }
}

/// One process of the fleet: its command and its metrics port.
struct Proc {
    process: &'static str,
    args: &'static [&'static str],
    metrics: u16,
}

const PROCESSES: [(&str, &[&str]); 7] = [
    ("run-all", &["run", "--all"]),
    ("lmtp", &["lmtp"]),
    ("policy", &["policy"]),
    ("api", &["api"]),
    ("scheduler", &["scheduler"]),
    ("clock", &["clock"]),
    ("postfix-map", &["postfix-map"]),
];

/// Set `dotted` (e.g. `consumers.storage.mail_root`) in `doc`.
fn set(doc: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut keys: Vec<&str> = dotted.split('.').collect();
    let last = keys.pop().unwrap_or_default();
    let mut table = doc;
    for key in keys {
        table = table
            .entry(key)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("a table");
    }
    table.insert(last.to_string(), value);
}

/// Ports the fleet listens on (besides metrics).
struct Ports {
    lmtp: u16,
    policy: u16,
    api: u16,
    sink: u16,
    /// A private clamd (`ops/clamav`).
    clamd: String,
}

/// `ops/mailfleet.toml` (the quickstart's config) with this test's broker,
/// folders and ports, a postfix-map run every 2 s and a Trash purge run
/// every minute, spread over that minute (a mailbox stored now is purged
/// within two).
fn fleet_config(dir: &Path, brokers: &str, ports: &Ports) -> anyhow::Result<PathBuf> {
    use toml::Value::{Float, Integer, String as Text};
    let text = std::fs::read_to_string(repo_root().join("ops/mailfleet.toml"))?;
    let mut doc: toml::Table = text.parse()?;
    let path = |p: &str| Text(dir.join(p).display().to_string());
    let local = |port: u16| Text(format!("127.0.0.1:{port}"));
    let secret = directory::service_password_file().display().to_string();
    let postfix_conf = postfix_conf_dir()?.display().to_string();
    let settings = [
        ("kafka.brokers", Text(brokers.into())),
        ("runtime.data_dir", path("state")),
        ("runtime.retry_initial_ms", Integer(100)),
        ("runtime.retry_max_ms", Integer(1000)),
        ("blobs.dir", path("blobs")),
        ("lmtp.listen", local(ports.lmtp)),
        ("policy.listen", local(ports.policy)),
        ("api.listen", local(ports.api)),
        ("clock.every_s", Integer(5)),
        ("scheduler.tick_every_s", Integer(1)),
        ("scheduler.jobs.trash.cron", Text("0 * * * * *".into())),
        ("scheduler.jobs.trash.kind", Text("purge".into())),
        ("scheduler.jobs.trash.folder", Text("Trash".into())),
        ("scheduler.jobs.trash.window_minutes", Integer(1)),
        ("scheduler.jobs.trash.max_purges_per_s", Float(1.0)),
        ("scheduler.jobs.map.cron", Text("*/2 * * * * *".into())),
        ("scheduler.jobs.map.kind", Text("postfix-map".into())),
        ("scheduler.postfix_map.path", path("recipients")),
        (
            "scheduler.postfix_map.postfix_config_dir",
            Text(postfix_conf),
        ),
        ("ldap.url", Text(directory::ldap_url())),
        ("ldap.bind_password_file", Text(secret)),
        ("consumers.scanner.clamd.address", Text(ports.clamd.clone())),
        ("consumers.storage.mail_root", path("mail")),
        ("consumers.storage.quarantine_dir", path("quarantine")),
        ("consumers.notifier.relay_port", Integer(ports.sink.into())),
    ];
    for (key, value) in settings {
        set(&mut doc, key, value);
    }
    let config = dir.join("fleet.toml");
    std::fs::write(&config, toml::to_string(&doc)?)?;
    Ok(config)
}

/// The directory `ops/postfix` keeps Postfix's main.cf in (postmap reads it).
fn postfix_conf_dir() -> anyhow::Result<PathBuf> {
    let map = stdout_of(Command::new(repo_root().join("ops/postfix")).arg("map-path"))?;
    let dir = PathBuf::from(map.trim())
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    anyhow::ensure!(
        dir.join("main.cf").exists(),
        "{}/main.cf is missing: run `ops/postfix start` once (ops/test does)",
        dir.display()
    );
    Ok(dir)
}

/// Start each process from the repository root (the config's relative
/// paths: the topology, the greylist whitelists).
fn spawn(config: &Path, procs: &[Proc], log: &Path) -> anyhow::Result<Children> {
    let mut children = Children(Vec::new());
    for p in procs {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child: Child = Command::new(mailfleet_bin())
            .current_dir(repo_root())
            .arg("--config")
            .arg(config)
            .args(p.args)
            .env(
                "MAILFLEET_METRICS__LISTEN",
                format!("127.0.0.1:{}", p.metrics),
            )
            .env("MAILFLEET_LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting mailfleet {}", p.args.join(" ")))?;
        children.0.push(child);
    }
    Ok(children)
}

/// The fleet as a file_sd target file: one target per process.
fn targets_file(procs: &[Proc]) -> String {
    procs
        .iter()
        .map(|p| {
            format!(
                "- targets: [\"127.0.0.1:{}\"]\n  labels:\n    process: {}\n",
                p.metrics, p.process
            )
        })
        .collect()
}

/// GET `path` from Prometheus: the JSON body (also of a 4xx answer).
fn prom_get(port: u16, path: &str) -> anyhow::Result<Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (_, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP body from Prometheus")?;
    serde_json::from_str(body).with_context(|| format!("GET {path}: {body}"))
}

/// Percent-encoding of a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Run one instant query: `Ok(series)` or `Err(Prometheus's error)`.
fn query(port: u16, expr: &str) -> anyhow::Result<usize> {
    let answer = prom_get(port, &format!("/api/v1/query?query={}", encode(expr)))?;
    anyhow::ensure!(
        answer["status"] == "success",
        "{}: {}",
        answer["errorType"],
        answer["error"]
    );
    let result = &answer["data"]["result"];
    Ok(match answer["data"]["resultType"].as_str() {
        Some("vector" | "matrix") => result.as_array().map_or(0, Vec::len),
        _ => usize::from(!result.is_null()), // scalar, string
    })
}

/// Every panel's (title, expr) of the dashboard, nested rows included,
/// with its template variables given values: `$consumer` as "All" (`.*`),
/// Grafana's intervals as fixed ones.
fn dashboard_queries() -> anyhow::Result<Vec<(String, String)>> {
    let path = repo_root().join("ops/grafana/mailfleet.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = [
                ("${consumer}", ".*"),
                ("$consumer", ".*"),
                ("$__rate_interval", "1m"),
                ("$__interval", "15s"),
                ("$__range", "1h"),
            ]
            .iter()
            .fold(expr.to_string(), |e, (var, value)| e.replace(var, value));
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            out.push((title, expr));
        }
    }
    anyhow::ensure!(!out.is_empty(), "no expression in the dashboard");
    Ok(out)
}

/// The dashboard queries that do not (yet) return a series, each with why.
fn failing_queries(port: u16, queries: &[(String, String)]) -> Vec<String> {
    queries
        .iter()
        .filter_map(|(title, expr)| match query(port, expr) {
            Ok(0) => Some(format!("{title}: {expr}\n    -> no series")),
            Ok(_) => None,
            Err(e) if expr.contains('$') => {
                Some(format!("{title}: {expr}\n    -> unknown variable: {e}"))
            }
            Err(e) => Some(format!("{title}: {expr}\n    -> {e}")),
        })
        .collect()
}

/// Register an account through the API and log in once.
async fn register(api: &ApiClient, account: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while !api.ready().await.is_ok_and(|r| r.ready) {
        anyhow::ensure!(
            started.elapsed() < WITHIN,
            "the API was not ready in {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let secret = strong_password();
    api.register(&RegisterRequest {
        account: account.to_string(),
        password: Secret::new(&secret),
        plan: None,
        display_name: None,
    })
    .await?;
    let login = LoginRequest {
        channel: Channel::Webmail,
        ip: None,
        password: Some(Secret::new(&secret)),
    };
    api.login(account, &login).await?;
    Ok(())
}

/// Deliver over LMTP until the account is open there (the lifecycle
/// activates it, the status projection follows): the last reply.
async fn deliver_when_open(port: u16, to: &str, subject: &str) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let reply = deliver(port, to, subject, "hello from the prometheus test")?;
        if reply.starts_with("250") || started.elapsed() > WITHIN {
            return Ok(reply);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One RCPT through the policy server, as Postfix's smtpd asks.
async fn policy_request(port: u16, to: &str) -> anyhow::Result<String> {
    let mut client = PolicyClient::connect(&format!("127.0.0.1:{port}")).await?;
    let attrs = [
        ("protocol_state", "RCPT"),
        ("protocol_name", "ESMTP"),
        ("client_address", "192.0.2.7"),
        ("client_name", "mx.sender.example"),
        ("helo_name", "mx.sender.example"),
        ("sender", "alice@sender.example"),
        ("recipient", to),
        ("instance", "prometheus.1"),
    ];
    Ok(client.ask(&attrs, Duration::from_secs(15)).await?)
}

/// The traffic through the front doors: two registrations and logins
/// (API); a delivery to the first account, stored; a quota of 10 bytes for
/// the second, then a delivery to it, refused over quota by the storage
/// writer (two notices through the notifier to the relay); one RCPT
/// through the policy server (greylist).
async fn traffic(ports: &Ports) -> anyhow::Result<()> {
    let api = ApiClient::new(&format!("http://127.0.0.1:{}", ports.api), None)?;
    let account = |n: u8| format!("prom{n}-{:08x}@example.test", rand::random::<u32>());
    let (stored, full) = (account(1), account(2));
    register(&api, &stored).await?;
    register(&api, &full).await?;
    api.set_quota(&full, Some(10)).await?;
    for to in [&stored, &full] {
        let reply = deliver_when_open(ports.lmtp, to, "hello").await?;
        anyhow::ensure!(reply.starts_with("250"), "delivering to {to}: {reply}");
    }
    let action = policy_request(ports.policy, &stored).await?;
    anyhow::ensure!(!action.is_empty(), "the policy server answered nothing");
    Ok(())
}

/// Whether `alert` fires with `label`=`value`.
fn firing(port: u16, alert: &str, label: &str, value: &str) -> anyhow::Result<bool> {
    let answer = prom_get(port, "/api/v1/alerts")?;
    Ok(answer["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| {
            a["labels"]["alertname"] == alert
                && a["labels"][label] == value
                && a["state"] == "firing"
        }))
}

/// Rules that failed to evaluate, with their error.
fn broken_rules(port: u16) -> anyhow::Result<Vec<String>> {
    let answer = prom_get(port, "/api/v1/rules")?;
    let groups = answer["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(!groups.is_empty(), "Prometheus loaded no rules: {answer}");
    Ok(groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect())
}

/// The private Prometheus (scraping and evaluating every second, no
/// quickstart targets) with `procs` in its targets folder, checked by
/// promtool; not started yet.
fn prometheus(dir: &Path, port: u16, procs: &[Proc]) -> anyhow::Result<Ops> {
    let prometheus = Ops::new(
        "prometheus",
        &dir.join("ops"),
        &[
            ("MAILFLEET_PROMETHEUS_PORT", port.to_string()),
            ("MAILFLEET_PROMETHEUS_QUICKSTART", "0".into()),
            ("MAILFLEET_PROMETHEUS_SCRAPE_INTERVAL", "1s".into()),
            ("MAILFLEET_PROMETHEUS_EVAL_INTERVAL", "1s".into()),
        ],
    );
    let targets = PathBuf::from(prometheus.run("targets")?.trim());
    std::fs::create_dir_all(&targets)?;
    std::fs::write(targets.join("fleet.yml"), targets_file(procs))?;
    let checked = prometheus.run("check")?;
    anyhow::ensure!(
        !checked.contains("WARNING") && !checked.contains("FAILED"),
        "promtool is not clean:\n{checked}"
    );
    Ok(prometheus)
}

/// Wait until every dashboard query returns a series; fail listing those
/// that do not, by panel and expression.
async fn every_dashboard_query_answers(port: u16, log: &Path) -> anyhow::Result<()> {
    let queries = dashboard_queries()?;
    let started = Instant::now();
    let mut failing = failing_queries(port, &queries);
    while !failing.is_empty() && started.elapsed() < QUERIES_WITHIN {
        tokio::time::sleep(Duration::from_secs(3)).await;
        failing = failing_queries(port, &queries);
    }
    anyhow::ensure!(
        failing.is_empty(),
        "{} of {} dashboard queries failed after {:?} (fleet log: {}):\n{}",
        failing.len(),
        queries.len(),
        started.elapsed(),
        log.display(),
        failing.join("\n")
    );
    eprintln!(
        "all {} dashboard queries answered after {:?}",
        queries.len(),
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_fleet_answers_every_dashboard_query_and_fires_an_alert(
) -> anyhow::Result<()> {
    let dir = scratch_dir("prometheus");
    let procs: Vec<Proc> = PROCESSES
        .iter()
        .map(|(process, args)| Proc {
            process,
            args,
            metrics: free_port(),
        })
        .collect();
    let prom_port = free_port();
    let prometheus = prometheus(&dir, prom_port, &procs)?;

    let kafka = Private::kafka("prometheus");
    kafka.start()?;
    let clamd = Private::clamd("prometheus");
    clamd.start()?;
    let sink = free_port();
    let smtp_sink = Ops::new(
        "smtp-sink",
        &dir.join("ops"),
        &[("MAILFLEET_SINK_PORT", sink.to_string())],
    );
    smtp_sink.run("start")?;
    let ports = Ports {
        lmtp: free_port(),
        policy: free_port(),
        api: free_port(),
        sink,
        clamd: clamd.address(),
    };
    let config = fleet_config(&dir, &kafka.address(), &ports)?;
    run_cli(&config, &["topics", "apply"])?;
    let log = dir.join("fleet.log");
    let mut children = spawn(&config, &procs, &log)?;
    prometheus.run("start")?;

    traffic(&ports).await?;
    // A poison record: the scanner dead-letters it.
    let producer = EventProducer::new(&kafka.kafka_config(), "prometheus-test")?;
    producer
        .send_raw("mail.received", b"poison", b"\x00\xffnot an event at all")
        .await?;
    every_dashboard_query_answers(prom_port, &log).await?;

    wait_until(
        "MailfleetDeadLetters firing for the scanner",
        WITHIN,
        || firing(prom_port, "MailfleetDeadLetters", "consumer", "scanner").unwrap_or(false),
    )
    .await?;
    eprintln!("MailfleetDeadLetters fires for the scanner");
    let broken = broken_rules(prom_port)?;
    anyhow::ensure!(broken.is_empty(), "rules that do not evaluate: {broken:?}");

    children.terminate()?;
    prometheus.run("stop")?;
    Ok(())
}
