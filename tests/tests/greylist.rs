//! Greylisting through the real broker: policy servers → smtp.attempts →
//! greylist consumer → greylist.decisions → the asking policy server.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use mailfleet_events::{greylist::DeliveryAttempted, Registry};
use mailfleet_greylist::{whitelist::WhitelistFiles, Greylist, GreylistConfig};
use mailfleet_policy::{client::PolicyClient, FailMode, PolicyConfig};
use mailfleet_runtime::{admin, topology::TopicSpec, RunSpec, Shutdown, Topology};
use mailfleet_tests::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

struct Grey {
    attempts: String,
    decisions: String,
    world: PathBuf,
    shutdown: Shutdown,
}

const T0: i64 = 1_795_881_600;

impl Grey {
    async fn start(name: &str, config: GreylistConfig) -> anyhow::Result<Grey> {
        let name = unique(name);
        let (attempts, decisions, dead) = (
            format!("{name}.attempts"),
            format!("{name}.decisions"),
            format!("{name}.dead"),
        );
        let spec = TopicSpec::scratch;
        let topology = Topology {
            topics: BTreeMap::from([
                (attempts.clone(), spec(3)),
                (decisions.clone(), spec(3)),
                (dead.clone(), spec(1)),
            ]),
            consumers: BTreeMap::new(),
        };
        admin::apply(&kafka(), &topology).await?;
        let world = scratch_dir(&name);
        let root = repo_root();
        let lists = WhitelistFiles::load(
            vec![root.join("ops/greylist/whitelist_clients")],
            vec![root.join("ops/greylist/whitelist_recipients")],
        )?;
        let shutdown = Shutdown::new();
        let runtime = mailfleet_runtime::config::RuntimeConfig {
            deadletter_topic: dead,
            batch_max_wait_ms: 2,
            ..Default::default()
        };
        let spec = RunSpec::new(
            format!("{name}-greylist"),
            vec![attempts.clone()],
            &kafka(),
            &runtime,
        )
        .data_dir(world.join("state"));
        let greylist = Greylist::new(config, lists, decisions.clone());
        tokio::spawn(mailfleet_runtime::run(greylist, spec, shutdown.clone()));
        Ok(Grey {
            attempts,
            decisions,
            world,
            shutdown,
        })
    }

    /// Start a policy server named `host`; returns its address.
    async fn policy(
        &self,
        host: &str,
        tweak: impl FnOnce(&mut PolicyConfig),
    ) -> anyhow::Result<String> {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cfg = PolicyConfig {
            listen: listen.clone(),
            host: host.into(),
            accept_test_time: true,
            timeout_ms: 10_000,
            attempts_topic: self.attempts.clone(),
            decisions_topic: self.decisions.clone(),
            ..PolicyConfig::default()
        };
        tweak(&mut cfg);
        let grouping = GreylistConfig::default().grouping();
        let shutdown = self.shutdown.clone();
        let server = tokio::spawn(async move {
            mailfleet_policy::serve(cfg, grouping, &kafka(), None, shutdown).await
        });
        wait_until(
            "the policy server to listen",
            Duration::from_secs(60),
            || server.is_finished() || std::net::TcpStream::connect(&listen).is_ok(),
        )
        .await?;
        if server.is_finished() {
            server.await??;
            anyhow::bail!("the policy server stopped at once");
        }
        Ok(listen)
    }
}

impl Drop for Grey {
    fn drop(&mut self) {
        self.shutdown.trigger();
        let _ = &self.world;
    }
}

/// A Postfix-like client on one persistent connection.
struct Client(PolicyClient);

impl Client {
    async fn connect(addr: &str) -> anyhow::Result<Client> {
        Ok(Client(PolicyClient::connect(addr).await?))
    }

    async fn ask(&mut self, attrs: &[(&str, String)]) -> anyhow::Result<String> {
        let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Ok(self.0.ask(&attrs, Duration::from_secs(15)).await?)
    }
}

fn rcpt(ip: &str, name: &str, sender: &str, rcpt: &str, at: i64) -> Vec<(&'static str, String)> {
    vec![
        ("protocol_state", "RCPT".into()),
        ("client_address", ip.into()),
        ("client_name", name.into()),
        ("helo_name", name.into()),
        ("sender", sender.into()),
        ("recipient", rcpt.into()),
        ("instance", format!("{ip}.{sender}.{rcpt}.{at}")),
        ("policy_test_time", at.to_string()),
    ]
}

/// The attempt most tests make: one client, sender and recipient, at `at`.
fn usual(at: i64) -> Vec<(&'static str, String)> {
    rcpt(
        "192.0.2.1",
        "mx.sender.example",
        "a@sender.example",
        "b@example.test",
        at,
    )
}

fn config() -> GreylistConfig {
    let root = repo_root();
    GreylistConfig {
        whitelist_clients: vec![root.join("ops/greylist/whitelist_clients")],
        whitelist_recipients: vec![root.join("ops/greylist/whitelist_recipients")],
        ..GreylistConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn first_attempt_is_deferred_and_a_retry_after_the_delay_passes() -> anyhow::Result<()> {
    let grey = Grey::start("grey-basic", config()).await?;
    let mut c = Client::connect(&grey.policy("mx1", |_| {}).await?).await?;
    let first = c.ask(&usual(T0)).await?;
    assert_eq!(
        first,
        "DEFER_IF_PERMIT Greylisted, try again in 300 seconds"
    );
    let early = c.ask(&usual(T0 + 60)).await?;
    assert_eq!(
        early,
        "DEFER_IF_PERMIT Greylisted, try again in 240 seconds"
    );
    let pass = c.ask(&usual(T0 + 301)).await?;
    assert!(
        pass.starts_with("PREPEND X-Greylist: delayed 301 seconds by mailfleet"),
        "{pass}"
    );
    let later = c.ask(&usual(T0 + 400)).await?;
    assert_eq!(later, "DUNNO");
    // Other protocol states are not greylisted.
    let mut data = rcpt(
        "192.0.2.1",
        "mx.sender.example",
        "x@sender.example",
        "y@example.test",
        T0,
    );
    data[0].1 = "DATA".into();
    assert_eq!(c.ask(&data).await?, "DUNNO");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn whitelisted_clients_and_recipients_pass_at_once() -> anyhow::Result<()> {
    let grey = Grey::start("grey-wl", config()).await?;
    let mut c = Client::connect(&grey.policy("mx1", |_| {}).await?).await?;
    let google = c
        .ask(&rcpt(
            "209.85.128.1",
            "mail-wm1-f41.google.com",
            "a@gmail.com",
            "b@example.test",
            T0,
        ))
        .await?;
    assert_eq!(google, "DUNNO");
    let postmaster = c
        .ask(&rcpt(
            "192.0.2.1",
            "mx.sender.example",
            "a@sender.example",
            "postmaster@example.test",
            T0,
        ))
        .await?;
    assert_eq!(postmaster, "DUNNO");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auto_whitelist_applies_after_five_passes() -> anyhow::Result<()> {
    let grey = Grey::start("grey-awl", config()).await?;
    let mut c = Client::connect(&grey.policy("mx1", |_| {}).await?).await?;
    for n in 0..5 {
        let at = T0 + n * 7200; // two hours apart: each pass counts
        let to = format!("user{n}x@example.test");
        let deferred = c
            .ask(&rcpt(
                "192.0.2.7",
                "mx.list.example",
                "news@list.example",
                &to,
                at,
            ))
            .await?;
        assert!(deferred.starts_with("DEFER_IF_PERMIT"), "{deferred}");
        let passed = c
            .ask(&rcpt(
                "192.0.2.7",
                "mx.list.example",
                "news@list.example",
                &to,
                at + 300,
            ))
            .await?;
        assert!(passed.starts_with("PREPEND"), "{passed}");
    }
    let fresh = c
        .ask(&rcpt(
            "192.0.2.7",
            "mx.list.example",
            "other@list.example",
            "new@example.test",
            T0 + 86_400,
        ))
        .await?;
    assert_eq!(
        fresh, "DUNNO",
        "the client passed 5 times and is auto-whitelisted"
    );
    let neighbour = c
        .ask(&rcpt(
            "192.0.2.8",
            "mx2.list.example",
            "other@list.example",
            "new@example.test",
            T0 + 86_400,
        ))
        .await?;
    assert!(neighbour.starts_with("DEFER_IF_PERMIT"), "{neighbour}");
    Ok(())
}

/// The `answered` of every attempt on `topic`, in the order they came.
fn answered(topic: &str, want: usize) -> anyhow::Result<Vec<Option<String>>> {
    let records = read_topic(topic, want, Duration::from_secs(3))?;
    let mut attempts: Vec<DeliveryAttempted> = records
        .iter()
        .map(|(_, v)| Registry::builtin().decode(v))
        .collect::<Result<_, _>>()?;
    attempts.sort_by_key(|a| a.envelope.event_time);
    Ok(attempts.into_iter().map(|a| a.answered).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_of_a_passed_triplet_is_answered_at_once() -> anyhow::Result<()> {
    let grey = Grey::start("grey-repeat", config()).await?;
    let mut c = Client::connect(&grey.policy("mx1", |_| {}).await?).await?;
    assert!(c.ask(&usual(T0)).await?.starts_with("DEFER_IF_PERMIT"));
    assert!(c.ask(&usual(T0 + 301)).await?.starts_with("PREPEND"));
    // Let through by the greylist: repeats within the hour are answered as
    // soon as their attempt is acknowledged; one after it waits again.
    assert_eq!(c.ask(&usual(T0 + 400)).await?, "DUNNO");
    assert_eq!(c.ask(&usual(T0 + 500)).await?, "DUNNO");
    assert_eq!(c.ask(&usual(T0 + 500 + 3601)).await?, "DUNNO");
    // Another triplet of the same client is not let through by it.
    let other = rcpt(
        "192.0.2.1",
        "mx.sender.example",
        "z@sender.example",
        "b@example.test",
        T0 + 600,
    );
    assert!(c.ask(&other).await?.starts_with("DEFER_IF_PERMIT"));
    let dunno = Some("DUNNO".to_string());
    assert_eq!(
        answered(&grey.attempts, 6)?,
        [None, None, dunno.clone(), dunno, None, None],
        "which attempts were answered at once"
    );
    // Each was still decided, the same way.
    let decisions = read_topic(&grey.decisions, 6, Duration::from_secs(3))?;
    assert_eq!(decisions.len(), 6);

    // Off: every repeat waits for its decision.
    let grey = Grey::start("grey-repeat-off", config()).await?;
    let mut c = Client::connect(&grey.policy("mx1", |p| p.answer_repeats_s = 0).await?).await?;
    for (at, want) in [
        (T0, "DEFER_IF_PERMIT"),
        (T0 + 301, "PREPEND"),
        (T0 + 400, "DUNNO"),
    ] {
        let action = c.ask(&usual(at)).await?;
        assert!(action.starts_with(want), "{action}");
    }
    assert_eq!(answered(&grey.attempts, 3)?, [None, None, None]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_at_the_other_policy_server_passes() -> anyhow::Result<()> {
    let grey = Grey::start("grey-two", config()).await?;
    let mut mx1 = Client::connect(&grey.policy("mx1", |_| {}).await?).await?;
    let mut mx2 = Client::connect(&grey.policy("mx2", |_| {}).await?).await?;
    let first = mx1
        .ask(&rcpt(
            "2001:db8:5::25",
            "mx6.sender.example",
            "a@sender.example",
            "b@example.test",
            T0,
        ))
        .await?;
    assert!(first.starts_with("DEFER_IF_PERMIT"), "{first}");
    let retry = mx2
        .ask(&rcpt(
            "2001:db8:5::26",
            "mx6.sender.example",
            "a@sender.example",
            "b@example.test",
            T0 + 300,
        ))
        .await?;
    assert!(retry.starts_with("PREPEND"), "same /64, other MX: {retry}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_decision_the_fail_mode_answers() -> anyhow::Result<()> {
    // No greylist consumer reads these topics: decisions never come.
    let grey = Grey::start("grey-timeout", config()).await?;
    grey.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = Grey {
        shutdown: Shutdown::new(),
        attempts: grey.attempts.clone(),
        decisions: grey.decisions.clone(),
        world: grey.world.clone(),
    };
    let open = other.policy("mx1", |c| c.timeout_ms = 300).await?;
    let closed = other
        .policy("mx2", |c| {
            c.timeout_ms = 300;
            c.fail_mode = FailMode::DeferIfPermit;
        })
        .await?;
    // This test process serves its own metrics: each answer below must be
    // counted as a timeout, not as a decision.
    let metrics = free_port();
    mailfleet_runtime::metrics::install_exporter(&mailfleet_runtime::config::MetricsConfig {
        listen: format!("127.0.0.1:{metrics}"),
    })?;
    let timeouts = || {
        let text = scrape(metrics).unwrap_or_default();
        metric_sum(
            &text,
            "mailfleet_policy_requests_total",
            &["result=\"timeout\""],
        )
    };
    let ask = usual(T0);
    assert_eq!(Client::connect(&open).await?.ask(&ask).await?, "DUNNO");
    assert_eq!(timeouts(), 1.0, "the open answer was the fail mode's");
    // A real deferral also starts with DEFER_IF_PERMIT: the fail mode's own
    // text and the timeout counter tell them apart.
    let answer = Client::connect(&closed).await?.ask(&ask).await?;
    assert_eq!(answer, FailMode::DeferIfPermit.action(), "{answer}");
    assert_eq!(timeouts(), 2.0, "the closed answer was the fail mode's");
    let text = scrape(metrics).unwrap_or_default();
    let decided = metric_sum(
        &text,
        "mailfleet_policy_requests_total",
        &["result=\"decided\""],
    );
    assert_eq!(decided, 0.0, "{text}");
    Ok(())
}

/// Write raw bytes and report whether the server closed the connection
/// without answering.
async fn closed_without_answer(
    addr: &str,
    bytes: &[u8],
    then_wait: Duration,
) -> anyhow::Result<bool> {
    let mut s = TcpStream::connect(addr).await?;
    let _ = s.write_all(bytes).await; // the server may close mid-write
    tokio::time::sleep(then_wait).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    Ok(matches!(read, Ok(Ok(0)) | Ok(Err(_))) && buf.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_limit_closes_the_offending_connection_and_nothing_else() -> anyhow::Result<()> {
    // The only test of this binary that installs a recorder: the policy
    // server's metrics are checked at the end.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let grey = Grey::start("grey-limits", config()).await?;
    let addr = grey
        .policy("mx1", |c| {
            c.max_connections = 3;
            c.idle_timeout_s = 1;
            c.request_timeout_s = 1;
            c.max_line_bytes = 4096;
            c.max_request_bytes = 16_384;
        })
        .await?;
    let ask = usual(T0);
    let one_mb_line = format!("sender={}\n\n", "x".repeat(1 << 20));
    assert!(
        closed_without_answer(&addr, one_mb_line.as_bytes(), Duration::ZERO).await?,
        "1 MB line"
    );
    let big_request = "a=".to_string() + &"y".repeat(1000) + "\n";
    assert!(
        closed_without_answer(&addr, big_request.repeat(40).as_bytes(), Duration::ZERO).await?,
        "oversized request"
    );
    let many = (0..200).map(|i| format!("attr{i}=1\n")).collect::<String>() + "\n";
    assert!(
        closed_without_answer(&addr, many.as_bytes(), Duration::ZERO).await?,
        "too many attributes"
    );
    assert!(
        closed_without_answer(&addr, b"this line has no equals sign\n\n", Duration::ZERO).await?,
        "malformed"
    );

    // A slow client holds a half-sent request; others are answered meanwhile.
    let slow = tokio::spawn({
        let addr = addr.clone();
        async move {
            closed_without_answer(
                &addr,
                b"request=smtpd_access_policy\nprotocol_st",
                Duration::from_millis(1500),
            )
            .await
        }
    });
    assert!(Client::connect(&addr)
        .await?
        .ask(&ask)
        .await?
        .starts_with("DEFER_IF_PERMIT"));
    assert!(slow.await??, "slowloris");
    assert!(
        closed_without_answer(&addr, b"", Duration::from_millis(1500)).await?,
        "idle"
    );

    // The connection limit: 3 idle connections fill it, the next is closed at once.
    let held = [
        TcpStream::connect(&addr).await?,
        TcpStream::connect(&addr).await?,
        TcpStream::connect(&addr).await?,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        closed_without_answer(&addr, b"", Duration::ZERO).await?,
        "over the connection limit"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // The server is still there and still right.
    let again = usual(T0 + 301);
    assert!(Client::connect(&addr)
        .await?
        .ask(&again)
        .await?
        .starts_with("PREPEND"));

    let text = recorder.render();
    // The greylist consumer runs in this process too.
    let greylist = [mailfleet_runtime::metrics::GREYLIST_DECISIONS];
    for name in mailfleet_runtime::metrics::POLICY_ALL
        .iter()
        .chain(&greylist)
    {
        assert!(has_metric(&text, name), "{name} was never emitted:\n{text}");
    }
    // Each decided answer's wait, in its two stages.
    let wait = format!("{}_count", mailfleet_runtime::metrics::POLICY_WAIT);
    for stage in ["acknowledged", "decided"] {
        let label = format!("stage=\"{stage}\"");
        let n = metric_sum(&text, &wait, &[&label]);
        assert!(n >= 1.0, "{stage}: {n}\n{text}");
    }
    let malformed = metric_sum(&text, mailfleet_runtime::metrics::POLICY_MALFORMED, &[]);
    assert!(malformed >= 5.0, "{text}");
    let refused = metric_sum(
        &text,
        mailfleet_runtime::metrics::POLICY_CONNECTIONS_REFUSED,
        &[],
    );
    assert!(refused >= 1.0, "{text}");
    Ok(())
}
