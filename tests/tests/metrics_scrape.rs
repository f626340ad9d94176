//! Every process kind serves its documented metrics. One test world (the
//! real broker, the real `postmap`) runs `mailfleet api`, `scheduler`,
//! `clock`, `postfix-map` and `run lifecycle`, each with its own metrics
//! port (`MAILFLEET_METRICS__LISTEN`). One registration flows through all
//! of them: the API writes it, the lifecycle activates the account, the
//! scheduler's postfix-map job makes the installer put it in the map. Then
//! each `/metrics` is scraped and must serve every name listed for that
//! process, with the type `docs/metrics.md` gives it (a histogram by its
//! `_bucket` and `_count` series), and a few counts are checked.

use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use mailfleet_api::{
    wire::{Channel, LoginRequest, RegisterRequest, Secret},
    ApiClient, ApiError,
};
use mailfleet_runtime::metrics as m;
use mailfleet_tests::{api::strong_password, ingest::MailWorld, *};

/// How long each process gets to show its traffic.
const WITHIN: Duration = Duration::from_secs(90);

/// One running process and the names it must serve.
struct Scraped {
    kind: &'static str,
    port: u16,
    names: Vec<&'static str>,
}

/// `name -> type` from the tables of `docs/metrics.md`.
fn documented_types() -> anyhow::Result<BTreeMap<String, String>> {
    let doc = std::fs::read_to_string(repo_root().join("docs/metrics.md"))?;
    Ok(doc
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            name.starts_with("mailfleet_")
                .then(|| (name.to_string(), kind.to_string()))
        })
        .collect())
}

/// Whether the exposition has a sample of `series` (any labels).
fn has_sample(text: &str, series: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(series)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

/// The names of `p` missing from its scrape, each with what was looked for.
fn missing(p: &Scraped, text: &str, types: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for name in &p.names {
        let Some(kind) = types.get(*name) else {
            out.push(format!("{name} (not in docs/metrics.md)"));
            continue;
        };
        let series: Vec<String> = if kind == "histogram" {
            vec![format!("{name}_bucket"), format!("{name}_count")]
        } else {
            vec![name.to_string()]
        };
        for s in series {
            if !has_sample(text, &s) {
                out.push(format!("{s} ({kind})"));
            }
        }
    }
    out
}

/// The directory `ops/postfix` keeps Postfix's main.cf in (postmap reads it).
fn postfix_conf_dir() -> anyhow::Result<PathBuf> {
    let out = Command::new(repo_root().join("ops/postfix"))
        .arg("map-path")
        .output()?;
    anyhow::ensure!(out.status.success(), "ops/postfix map-path failed");
    let map = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let dir = map.parent().map(PathBuf::from).unwrap_or_default();
    anyhow::ensure!(
        dir.join("main.cf").exists(),
        "{}/main.cf is missing: run `ops/postfix start` once (ops/test does)",
        dir.display()
    );
    Ok(dir)
}

/// The config tables of the five processes: a postfix-map job every 2 s,
/// the installer writing `map`, the API and the lifecycle on this world.
fn tables(world: &MailWorld, map: &std::path::Path, api_port: u16) -> anyhow::Result<String> {
    let jobs = "[scheduler.jobs.postfix-map]\ncron = \"*/2 * * * * *\"\nkind = \"postfix-map\"\n";
    Ok(world.scheduler_tables(jobs)
        + &format!(
            "[scheduler.postfix_map]\npath = {map:?}\npostfix_config_dir = {conf:?}\nstatus_topic = {status:?}\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\nevents_topic = {accounts:?}\n\
             [consumers.lifecycle]\nevents_topic = {accounts:?}\nnotify_topic = {notify:?}\nstatus_topic = {status:?}\n",
            map = map.display().to_string(),
            conf = postfix_conf_dir()?.display().to_string(),
            status = world.status,
            accounts = world.accounts,
            notify = world.notify,
        ))
}

/// Wait until the API answers `/ready` with 200.
async fn api_ready(api: &ApiClient, log: &std::path::Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    while !api.ready().await.is_ok_and(|r| r.ready) {
        anyhow::ensure!(
            started.elapsed() < WITHIN,
            "the API was not ready within {WITHIN:?}; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Wait until `port`'s scrape has `name{labels…}` summing to at least `min`.
async fn wait_metric(port: u16, name: &str, labels: &[&str], min: f64) -> anyhow::Result<()> {
    let mut text = String::new();
    let what = format!("{name}{labels:?} >= {min} on port {port}");
    wait_until(&what, WITHIN, || {
        text = scrape(port).unwrap_or_default();
        metric_sum(&text, name, labels) >= min
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; scraped:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_process_kind_serves_its_documented_metrics() -> anyhow::Result<()> {
    let types = documented_types()?;
    let world = MailWorld::new("metrics-scrape", kafka()).await?;
    let map = world.dir.join("recipients");
    let api_port = free_port();
    let config = world.write_config("metrics.toml", 0, &tables(&world, &map, api_port)?)?;
    let runtime_and_lifecycle = [m::ALL, &[m::LIFECYCLE_TRANSITIONS]].concat();
    let processes = [
        ("api", vec!["api"], m::API_ALL.to_vec()),
        ("scheduler", vec!["scheduler"], m::SCHEDULER_ALL.to_vec()),
        ("clock", vec!["clock"], m::CLOCK_ALL.to_vec()),
        (
            "postfix-map",
            vec!["postfix-map"],
            m::POSTFIX_MAP_ALL.to_vec(),
        ),
        ("lifecycle", vec!["run", "lifecycle"], runtime_and_lifecycle),
    ];
    let mut children = Children::default();
    let mut scraped = Vec::new();
    for (kind, args, names) in processes {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = world.dir.join(format!("{kind}.log"));
        let env = [("MAILFLEET_METRICS__LISTEN", listen.as_str())];
        children.0.push(spawn_with_env(&config, &args, &env, &log)?);
        scraped.push(Scraped { kind, port, names });
    }
    let port = |kind: &str| {
        scraped
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.port)
            .unwrap_or_default()
    };

    // The API: each route's success series is there at 0 before any request.
    let api = ApiClient::new(&format!("http://127.0.0.1:{api_port}"), None)?;
    api_ready(&api, &world.dir.join("api.log")).await?;
    let before = scrape(port("api")).unwrap_or_default();
    let quota = ["route=\"PUT /accounts/{account}/quota\"", "status=\"200\""];
    assert!(
        before
            .lines()
            .any(|l| l.starts_with(m::API_REQUESTS) && quota.iter().all(|q| l.contains(q))),
        "no quota series at 0 before the first request:\n{before}"
    );

    // One registration and two logins (one refused) through the API.
    let account = format!("scrape-{:08x}@metrics.test", rand::random::<u32>());
    let secret = strong_password();
    api.register(&RegisterRequest {
        account: account.clone(),
        password: Secret::new(&secret),
        plan: None,
        display_name: None,
    })
    .await?;
    let login = |password: String| LoginRequest {
        channel: Channel::Webmail,
        ip: None,
        password: Some(Secret::new(&password)),
    };
    api.login(&account, &login(secret.clone())).await?;
    let refused = api.login(&account, &login(strong_password())).await;
    assert!(
        matches!(&refused, Err(e @ ApiError::Refused { .. }) if e.answer_status() == Some(401)),
        "a wrong password: {refused:?}"
    );

    // It flows: the lifecycle activates it, the scheduler's job runs, the
    // installer puts it in the map; the clock ticked at its start.
    wait_metric(
        port("lifecycle"),
        m::LIFECYCLE_TRANSITIONS,
        &["to=\"active\""],
        1.0,
    )
    .await?;
    wait_until("the account in the installed map", WITHIN, || {
        std::fs::read_to_string(&map).is_ok_and(|t| t.contains(&account))
    })
    .await?;
    wait_metric(port("postfix-map"), m::POSTFIX_MAP_ENTRIES, &[], 1.0).await?;
    wait_metric(port("clock"), m::CLOCK_TICKS, &[], 1.0).await?;

    // Every name, within WITHIN (lag and the like come with telemetry
    // that is published a little after the traffic).
    let mut failures = Vec::new();
    for p in &scraped {
        let (mut text, mut absent) = (String::new(), Vec::new());
        let served = wait_until(&format!("mailfleet {}", p.kind), WITHIN, || {
            text = scrape(p.port).unwrap_or_default();
            absent = missing(p, &text, &types);
            absent.is_empty()
        })
        .await;
        if served.is_err() {
            failures.push(format!(
                "mailfleet {} (port {}) does not serve {absent:?}; scraped:\n{text}",
                p.kind, p.port
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // A few counts, as the traffic above makes them.
    let api_text = scrape(port("api")).unwrap_or_default();
    let count = |route: &str, status: &str| {
        metric_sum(
            &api_text,
            m::API_REQUESTS,
            &[
                &format!("route=\"{route}\""),
                &format!("status=\"{status}\""),
            ],
        )
    };
    assert_eq!(count("POST /accounts", "201"), 1.0, "{api_text}");
    assert_eq!(count("POST /accounts/{account}/logins", "200"), 1.0);
    assert_eq!(count("POST /accounts/{account}/logins", "401"), 1.0);
    assert_eq!(count("PUT /accounts/{account}/quota", "200"), 0.0);
    assert!(
        metric_sum(
            &api_text,
            &format!("{}_count", m::API_REQUEST_DURATION),
            &[]
        ) >= 3.0,
        "{api_text}"
    );
    let scheduler = scrape(port("scheduler")).unwrap_or_default();
    assert_eq!(
        metric_sum(&scheduler, m::SCHEDULER_LEADER, &[]),
        1.0,
        "the only scheduler leads: {scheduler}"
    );
    assert!(
        metric_sum(&scheduler, m::SCHEDULER_RUNS, &["job=\"postfix-map\""]) >= 1.0,
        "{scheduler}"
    );
    assert!(
        metric_sum(&scheduler, m::CLOCK_TICKS, &["clock=\"every-1s\""]) >= 1.0,
        "{scheduler}"
    );
    let installer = scrape(port("postfix-map")).unwrap_or_default();
    assert!(
        metric_sum(&installer, m::POSTFIX_MAP_RUNS, &["result=\"installed\""]) >= 2.0,
        "installed at start and after the registration: {installer}"
    );
    children.terminate()?;
    Ok(())
}

/// Whether the scrape has a sample of `name` (a histogram by its
/// `_count`) labelled exactly `consumer="<consumer>"`.
fn served_for(samples: &[Sample], name: &str, consumer: &str) -> bool {
    let count = format!("{name}_count");
    samples.iter().any(|s| {
        (s.name == name || s.name == count)
            && s.labels.get("consumer").map(String::as_str) == Some(consumer)
    })
}

/// One `mailfleet run --all` process runs every consumer of the topology
/// (but the `counter` example) and its one `/metrics` serves each one's
/// runtime metrics under its own exact `consumer` label. One garbage
/// record on every input topic: each consumer counts one dead letter per
/// topic it reads, under its label and nobody else's.
#[tokio::test(flavor = "multi_thread")]
async fn run_all_serves_every_consumers_metrics_from_one_process() -> anyhow::Result<()> {
    use mailfleet_tests::{directory::require_slapd, full::FullWorld};
    // The directory consumer reads its bind password file at start.
    require_slapd()?;
    let world = FullWorld::new("metrics-run-all").await?;
    let port = free_port();
    let config = world.write_config("all.toml", port, &["admin@example.test"], "")?;
    let log = world.dir.join("all.log");
    let mut children = Children(vec![spawn_mailfleet(&config, &["run", "--all"], &log)?]);
    let consumers: Vec<&str> = world
        .topology
        .consumers
        .keys()
        .map(String::as_str)
        .filter(|c| *c != "counter")
        .collect();
    wait_started(&log, 0, consumers.len()).await?;

    let producer = mailfleet_runtime::producer::EventProducer::new(&world.kafka, "run-all")?;
    let mut inputs = std::collections::BTreeSet::new();
    for c in &consumers {
        inputs.extend(world.reads(c)?);
    }
    for topic in &inputs {
        producer
            .send_raw(topic, b"run-all", b"\x00\xffnot an event")
            .await?;
    }
    let want: BTreeMap<&str, f64> = consumers
        .iter()
        .map(|c| Ok((*c, world.reads(c)?.len() as f64)))
        .collect::<anyhow::Result<_>>()?;
    let dead = |text: &str, c: &str| {
        metric_sum(
            text,
            m::DEADLETTERS,
            &[&format!("consumer=\"{c}\""), "kind=\"Undecodable\""],
        )
    };
    let mut text = String::new();
    let mut missing: Vec<String> = Vec::new();
    let served = wait_until("every consumer's metrics", WITHIN, || {
        text = scrape(port).unwrap_or_default();
        let Ok(samples) = parse_exposition(&text) else {
            return false;
        };
        missing = consumers
            .iter()
            .flat_map(|c| {
                let mut out: Vec<String> = m::ALL
                    .iter()
                    .filter(|name| !served_for(&samples, name, c))
                    .map(|name| format!("{name}{{consumer=\"{c}\"}}"))
                    .collect();
                if dead(&text, c) != want[c] {
                    out.push(format!(
                        "{c}: {} dead letters of {}",
                        dead(&text, c),
                        want[c]
                    ));
                }
                out
            })
            .collect();
        missing.is_empty()
    })
    .await;
    assert!(
        served.is_ok(),
        "mailfleet run --all does not serve {missing:#?}; scraped:\n{text}"
    );
    // A consumer's own metrics in the same process: the notifier's, at 0
    // from its start.
    let sent = mailfleet_notifier::metrics::SENT;
    let samples = parse_exposition(&text)?;
    assert!(
        samples.iter().any(|s| s.name == sent
            && s.labels.get("template").map(String::as_str) == Some("deactivated")),
        "no {sent}{{template=\"deactivated\"}}:\n{text}"
    );
    let total: f64 = want.values().sum();
    assert_eq!(metric_sum(&text, m::DEADLETTERS, &[]), total, "{text}");
    eprintln!(
        "metrics-run-all: {} consumers in one process, {} dead letters on {} topics",
        consumers.len(),
        total,
        inputs.len()
    );
    children.terminate()?;
    Ok(())
}
