//! The greylisting part of `mailfleet demo`: a day of SMTP traffic through
//! the policy server and the greylist consumer on the real topics, with the
//! event times a day would have (the demo's own policy server takes them
//! from `policy_test_time`), and a tally of what Postfix would have been told.

use std::{collections::BTreeMap, time::Duration};

use mailfleet_fleet::config::Config;
use mailfleet_policy::{client::PolicyClient, PolicyConfig};
use mailfleet_runtime::{time::now_ms, Shutdown, Topology};

/// Who sends, and how they behave.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Sender {
    /// A real MTA: deferred, retries ten minutes later, passes.
    Retrying,
    /// A spam bot: one attempt, never retries.
    FireAndForget,
    /// Gmail and friends: whitelisted by name.
    BigProvider,
    /// Mail to postmaster@: whitelisted recipient.
    ToPostmaster,
    /// A mailing-list server: passes 5 times, two hours apart, then is auto-whitelisted.
    MailingList,
}

/// Run the greylist demo; returns the tally of answers per kind of sender.
pub async fn run(cfg: &Config, topology: &Topology, run_id: &str) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let listen = start_policy(cfg, topology, run_id, &shutdown)?;
    let client = connect(&listen).await?;

    // The greylist's state persists across demo runs (auto-whitelisted
    // clients are remembered for max-age), so this run's list server gets
    // an address of its own: it earns its auto-whitelisting afresh.
    let salt = run_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let list_ip = format!("100.64.{}.{}", salt % 256, salt / 256 % 254 + 1);
    let day = now_ms() / 1000;
    let mut world = World {
        client,
        run_id,
        day,
        tally: BTreeMap::new(),
    };
    world.retrying().await?;
    world.fire_and_forget().await?;
    world.big_provider().await?;
    world.postmaster().await?;
    world.mailing_list(&list_ip).await?;
    shutdown.trigger();
    println!("== greylisting: a day of SMTP traffic through a policy server and the fleet's greylist consumer");
    for ((kind, verb), n) in &world.tally {
        println!("  {kind:?}: {n} x {verb}");
    }
    Ok(())
}

/// Start the policy server Postfix would ask, in this process on a port
/// of its own, answering from the fleet's greylist consumer's decisions;
/// returns its address.
fn start_policy(
    cfg: &Config,
    topology: &Topology,
    run_id: &str,
    shutdown: &Shutdown,
) -> anyhow::Result<String> {
    let route = topology.route("greylist")?;
    let (attempts, decisions) = (
        route.reads[0].clone(),
        route.writes.first().cloned().unwrap_or_default(),
    );
    // The greylist consumer is the fleet's; the policy server Postfix would
    // ask runs here, answering from the fleet's decisions.
    let g = cfg.consumers.greylist.clone();
    let listen = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    );
    let policy = PolicyConfig {
        listen: listen.clone(),
        host: format!("demo-{run_id}"),
        accept_test_time: true,
        timeout_ms: 10_000,
        attempts_topic: attempts,
        decisions_topic: decisions,
        ..cfg.policy.clone()
    };
    let (kafka, sd, grouping) = (cfg.kafka.clone(), shutdown.clone(), g.grouping());
    tokio::spawn(async move { mailfleet_policy::serve(policy, grouping, &kafka, None, sd).await });
    Ok(listen)
}

/// The SMTP clients of the demo's day, asking the policy server as
/// Postfix would at RCPT, and the tally of its answers.
struct World<'a> {
    client: PolicyClient,
    run_id: &'a str,
    /// The day's start (seconds since the epoch): `policy_test_time`.
    day: i64,
    /// Answers (their first word) per kind of sender.
    tally: BTreeMap<(Sender, String), u32>,
}

impl World<'_> {
    /// Ask about one attempt at `at` and tally the answer.
    async fn ask(
        &mut self,
        kind: Sender,
        ip: &str,
        name: &str,
        from: &str,
        to: &str,
        at: i64,
    ) -> anyhow::Result<()> {
        let at = at.to_string();
        let attrs = [
            ("protocol_state", "RCPT"),
            ("client_address", ip),
            ("client_name", name),
            ("sender", from),
            ("recipient", to),
            ("policy_test_time", at.as_str()),
        ];
        let action = self.client.ask(&attrs, Duration::from_secs(15)).await?;
        let verb = action
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        *self.tally.entry((kind, verb)).or_default() += 1;
        Ok(())
    }

    /// 200 real MTAs, each retrying ten minutes later.
    async fn retrying(&mut self) -> anyhow::Result<()> {
        let (run_id, day) = (self.run_id, self.day);
        for i in 0..200u32 {
            let (ip, from, to) = (
                format!("198.18.{}.{}", i / 200, i % 200 + 1),
                format!("u{i}@mta{i}.{run_id}.example"),
                format!("user{i}@example.test"),
            );
            let at = day + i64::from(i) * 60;
            for retry in [0, 600] {
                self.ask(Sender::Retrying, &ip, "mta.example", &from, &to, at + retry)
                    .await?;
            }
        }
        Ok(())
    }

    /// 300 spam bots, one attempt each.
    async fn fire_and_forget(&mut self) -> anyhow::Result<()> {
        let (run_id, day) = (self.run_id, self.day);
        for i in 0..300u32 {
            let ip = format!("203.0.{}.{}", 113 + i / 250, i % 250 + 1);
            self.ask(
                Sender::FireAndForget,
                &ip,
                "unknown",
                &format!("x{i}@bot.{run_id}.example"),
                &format!("user{i}@example.test"),
                day + i64::from(i) * 30,
            )
            .await?;
        }
        Ok(())
    }

    /// 100 mails from Gmail's servers, whitelisted by name.
    async fn big_provider(&mut self) -> anyhow::Result<()> {
        let day = self.day;
        for i in 0..100u32 {
            let name = format!("mail-wm1-f{i}.google.com");
            self.ask(
                Sender::BigProvider,
                "209.85.128.10",
                &name,
                &format!("g{i}@gmail.com"),
                &format!("user{i}@example.test"),
                day + i64::from(i),
            )
            .await?;
        }
        Ok(())
    }

    /// 20 mails to postmaster@, a whitelisted recipient.
    async fn postmaster(&mut self) -> anyhow::Result<()> {
        let (run_id, day) = (self.run_id, self.day);
        for i in 0..20u32 {
            self.ask(
                Sender::ToPostmaster,
                "192.0.2.200",
                "unknown",
                &format!("r{i}@{run_id}.example"),
                "postmaster@example.test",
                day + i64::from(i),
            )
            .await?;
        }
        Ok(())
    }

    /// A mailing-list server at `list_ip`: 7 mails two hours apart, each
    /// retried after five minutes, until it is auto-whitelisted.
    async fn mailing_list(&mut self, list_ip: &str) -> anyhow::Result<()> {
        let (run_id, day) = (self.run_id, self.day);
        for n in 0..7i64 {
            let (from, to, at) = (
                format!("news@list.{run_id}.example"),
                format!("reader{n}@example.test"),
                day + n * 7200,
            );
            for retry in [0, 300] {
                self.ask(
                    Sender::MailingList,
                    list_ip,
                    "lists.example",
                    &from,
                    &to,
                    at + retry,
                )
                .await?;
            }
        }
        Ok(())
    }
}

async fn connect(addr: &str) -> anyhow::Result<PolicyClient> {
    for _ in 0..100 {
        if let Ok(c) = PolicyClient::connect(addr).await {
            return Ok(c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the demo policy server did not start on {addr}")
}
