//! The greylisting part of `mailfleet demo`: a day of SMTP traffic
//! through Postfix (the internet's MTAs, posed with XCLIENT), which asks
//! the fleet's `mailfleet policy` at each RCPT; the policy server answers
//! from the fleet's greylist consumer's decisions. The policy server runs
//! in compressed time (`--time-scale`, [`POLICY_SCALE`]): a five-minute
//! greylisting delay passes in 42 ms, so a day's retries take seconds of
//! real time. Then a tally of what Postfix told the clients.

use std::{collections::BTreeMap, time::Duration};

use mailfleet_runtime::time::{now_ms, Clock};

use super::smtp::{postfix_addr, Client, Session};

/// How much faster than the wall clock the demo's policy server runs.
pub const POLICY_SCALE: u32 = 7200;

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

/// Run the greylist demo against Postfix, with the policy server on
/// `clock`; prints the tally of Postfix's answers per kind of sender and
/// returns how many RCPTs got 450 and 250.
pub async fn run(run_id: &str, clock: Clock) -> anyhow::Result<(u32, u32)> {
    // The greylist's state persists across demo runs (auto-whitelisted
    // clients are remembered for max-age), so this run's list server gets
    // an address of its own: it earns its auto-whitelisting afresh.
    let salt = run_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let list_ip = format!("100.64.{}.{}", salt % 256, salt / 256 % 254 + 1);
    let mut world = World {
        server: postfix_addr(),
        clock,
        run_id,
        tally: BTreeMap::new(),
    };
    world.retrying().await?;
    world.fire_and_forget().await?;
    world.big_provider().await?;
    world.postmaster().await?;
    world.mailing_list(&list_ip).await?;
    println!(
        "== greylisting: a day of SMTP traffic through Postfix ({}), which asks the fleet's mailfleet policy (in compressed time, {POLICY_SCALE} ×) at each RCPT",
        world.server
    );
    let mut codes = (0, 0);
    for ((kind, code), n) in &world.tally {
        println!("  {kind:?}: {n} x {code}");
        match code {
            450 => codes.0 += n,
            250 => codes.1 += n,
            _ => {}
        }
    }
    Ok(codes)
}

/// The SMTP clients of the demo's day, asking Postfix at RCPT as they
/// would, and the tally of its answers.
struct World<'a> {
    server: String,
    /// The policy server's clock.
    clock: Clock,
    run_id: &'a str,
    /// Postfix's RCPT answers (their codes) per kind of sender.
    tally: BTreeMap<(Sender, u16), u32>,
}

impl World<'_> {
    /// One attempt at `at` (ms on the policy server's clock; waits until
    /// then) and its tally.
    async fn ask(
        &mut self,
        kind: Sender,
        (ip, name): (&str, &str),
        from: &str,
        to: &str,
        at: i64,
    ) -> anyhow::Result<()> {
        let wait = self.clock.wall_at(at) - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let client = Client { addr: ip, name };
        let mut session = Session::open(&self.server, &client).await?;
        let code = session.envelope(from, &[to]).await?[0];
        session.quit().await;
        *self.tally.entry((kind, code)).or_default() += 1;
        Ok(())
    }

    /// Now on the policy server's clock.
    fn day(&self) -> i64 {
        self.clock.now_ms()
    }

    /// 200 real MTAs, each retrying ten minutes later.
    async fn retrying(&mut self) -> anyhow::Result<()> {
        let (run_id, day) = (self.run_id, self.day());
        for retry in [0, 600_000] {
            for i in 0..200u32 {
                let (ip, from, to) = (
                    format!("198.18.{}.{}", i / 200, i % 200 + 1),
                    format!("u{i}@mta{i}.{run_id}.example"),
                    format!("user{i}@example.test"),
                );
                let at = day + i64::from(i) * 60_000 + retry;
                self.ask(Sender::Retrying, (&ip, "mta.example"), &from, &to, at)
                    .await?;
            }
        }
        Ok(())
    }

    /// 300 spam bots, one attempt each.
    async fn fire_and_forget(&mut self) -> anyhow::Result<()> {
        let (run_id, day) = (self.run_id, self.day());
        for i in 0..300u32 {
            let ip = format!("203.0.{}.{}", 113 + i / 250, i % 250 + 1);
            self.ask(
                Sender::FireAndForget,
                (&ip, "unknown"),
                &format!("x{i}@bot.{run_id}.example"),
                &format!("user{i}@example.test"),
                day + i64::from(i) * 30_000,
            )
            .await?;
        }
        Ok(())
    }

    /// 100 mails from Gmail's servers, whitelisted by name.
    async fn big_provider(&mut self) -> anyhow::Result<()> {
        let day = self.day();
        for i in 0..100u32 {
            let name = format!("mail-wm1-f{i}.google.com");
            self.ask(
                Sender::BigProvider,
                ("209.85.128.10", &name),
                &format!("g{i}@gmail.com"),
                &format!("user{i}@example.test"),
                day + i64::from(i) * 1000,
            )
            .await?;
        }
        Ok(())
    }

    /// 20 mails to postmaster@, a whitelisted recipient.
    async fn postmaster(&mut self) -> anyhow::Result<()> {
        let (run_id, day) = (self.run_id, self.day());
        for i in 0..20u32 {
            self.ask(
                Sender::ToPostmaster,
                ("192.0.2.200", "unknown"),
                &format!("r{i}@{run_id}.example"),
                "postmaster@example.test",
                day + i64::from(i) * 1000,
            )
            .await?;
        }
        Ok(())
    }

    /// A mailing-list server at `list_ip`: 7 mails two hours apart, each
    /// retried after five minutes, until it is auto-whitelisted.
    async fn mailing_list(&mut self, list_ip: &str) -> anyhow::Result<()> {
        let (run_id, day) = (self.run_id, self.day());
        for n in 0..7i64 {
            let (from, to, at) = (
                format!("news@list.{run_id}.example"),
                format!("reader{n}@example.test"),
                day + n * 7_200_000,
            );
            for retry in [0, 300_000] {
                let client = (list_ip, "lists.example");
                self.ask(Sender::MailingList, client, &from, &to, at + retry)
                    .await?;
            }
        }
        Ok(())
    }
}
