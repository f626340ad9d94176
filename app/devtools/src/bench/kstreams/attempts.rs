//! The bench's input: a deterministic, realistic stream of
//! `DeliveryAttempted` in event-time order, keyed by client network as the
//! policy server keys them.
//!
//! Shares of the first attempts: 40% drive-by senders that never retry
//! (`NEW`); 45% from a pool of 3,000 legitimate MTAs, which retry a
//! deferred message after 5–30 minutes (`PASSED`, the first pass with the
//! header), a third of them also once too early (`TOO_EARLY`), and whose
//! clients become auto-whitelisted after 5 passes an hour apart
//! (`AUTO_WHITELISTED`); 10% from whitelisted providers
//! (`WHITELISTED_CLIENT`); 1% to `postmaster@` (`WHITELISTED_RECIPIENT`);
//! 0.5% with an unusable client address (`MISSING_ATTRIBUTES`); 3.5% more
//! MTA mail. An MTA writes to 50 recipients of its own, so sender/recipient
//! pairs repeat and pass at once (`PASSED`, no header). Some clients are
//! IPv6, some senders carry VERP numbers, BATV tags or `+extensions`, some
//! addresses are upper case: the normalisations are exercised too.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashSet},
    net::IpAddr,
};

use mailfleet_events::greylist::triplet::{client_net, Grouping};
use mailfleet_events::{greylist::DeliveryAttempted, Envelope};
use mailfleet_runtime::producer::RawRecord;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// 2026-11-01T00:00:00Z, ms: the first attempt's event time.
const T0_MS: i64 = 1_793_491_200_000;
/// Event time between two first attempts, ms.
const STEP_MS: i64 = 80;
const MTAS: u32 = 3_000;
const RECIPIENTS: u32 = 70_000;

/// One SMTP attempt before it becomes an event.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Try {
    client: String,
    name: String,
    sender: String,
    recipient: String,
}

/// The attempt stream: `next` gives attempts in event-time order.
pub struct Attempts {
    rng: StdRng,
    run_id: String,
    topic: String,
    grouping: Grouping,
    now_ms: i64,
    seq: u64,
    /// Retries due later: (due ms, tie-breaker, attempt).
    due: BinaryHeap<Reverse<(i64, u64, Try)>>,
    /// (MTA, sender, recipient) an MTA got through, so it does not retry.
    passed: HashSet<(u32, u32, u32)>,
    /// Only distinct drive-by triplets (the state-size run).
    distinct_only: bool,
}

impl Attempts {
    pub fn new(run_id: &str, topic: &str, grouping: Grouping, seed: u64) -> Self {
        Attempts {
            rng: StdRng::seed_from_u64(seed),
            run_id: run_id.to_string(),
            topic: topic.to_string(),
            grouping,
            now_ms: T0_MS,
            seq: 0,
            due: BinaryHeap::new(),
            passed: HashSet::new(),
            distinct_only: false,
        }
    }

    /// Every attempt a new triplet from a new client address, never retried.
    pub fn distinct(mut self) -> Self {
        self.distinct_only = true;
        self
    }

    fn drive_by(&mut self) -> Try {
        let n = self.seq;
        let client = if self.rng.random_bool(0.05) {
            format!(
                "2001:db8:{:x}:{:x}::{:x}",
                n >> 16 & 0xffff,
                n & 0xffff,
                n % 251 + 1
            )
        } else {
            format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255)
        };
        let sender = match if self.distinct_only { 2 } else { n % 7 } {
            0 => format!("bounce-{}-{}@lists{}.example", n, n % 13, n % 50),
            1 => format!("Promo+{n}@Spam{}.Example", n % 90),
            _ => format!("s{n}@d{}.example", n % 1000),
        };
        Try {
            client,
            name: "unknown".into(),
            sender,
            recipient: format!("user{}@example.test", self.rng.random_range(0..RECIPIENTS)),
        }
    }

    /// The MTA's address: IPv4 in a /24 of its own or (every 10th) IPv6 in a /64.
    fn mta(&mut self) -> (u32, Try) {
        let m = self.rng.random_range(0..MTAS);
        let s = self.rng.random_range(0..20);
        // Each MTA writes to 50 recipients of its own: pairs repeat.
        let r = (m * 37 + self.rng.random_range(0..50)) % RECIPIENTS;
        let client = if m % 10 == 0 {
            format!("2001:db8:ffff:{:x}::25", m)
        } else {
            format!("198.{}.{}.25", 18 + m / 256, m % 256)
        };
        let sender = match s {
            0 => format!("prvs=0a1b2c3d4e=news@corp{m}.example"),
            1 => format!("Alerts{s}@Corp{m}.Example"),
            _ => format!("user{s}@corp{m}.example"),
        };
        let t = Try {
            client,
            name: format!("mx{}.corp{m}.example", m % 3),
            sender,
            recipient: format!("user{r}@example.test"),
        };
        if self.passed.contains(&(m, s, r)) {
            return (m, t);
        }
        // Deferred: the MTA retries, sometimes too early first.
        let first = self.now_ms;
        if self.rng.random_bool(1.0 / 3.0) {
            let early = first + self.rng.random_range(60_000..240_000);
            self.schedule(early, t.clone());
        }
        let later = first + self.rng.random_range(300_000..1_800_000);
        self.schedule(later, t.clone());
        self.passed.insert((m, s, r));
        (m, t)
    }

    fn schedule(&mut self, at: i64, t: Try) {
        self.seq += 1;
        self.due.push(Reverse((at, self.seq, t)));
    }

    fn whitelisted(&mut self) -> Try {
        let n = self.rng.random_range(0..100_000u32);
        let (name, net) = match n % 3 {
            0 => (format!("mail-yw1-f{}.google.com", n % 200), "209.85"),
            1 => (
                format!("mail-{}.eur.protection.outlook.com", n % 500),
                "40.107",
            ),
            _ => ("mout.gmx.net".to_string(), "212.227"),
        };
        Try {
            client: format!("{net}.{}.{}", n % 256, n / 256 % 256),
            name,
            sender: format!("someone{n}@{}.example", n % 300),
            recipient: format!("user{}@example.test", n % RECIPIENTS),
        }
    }

    /// The next first attempt (not a retry).
    fn first_attempt(&mut self) -> Try {
        if self.distinct_only {
            return self.drive_by();
        }
        let x: f64 = self.rng.random();
        match x {
            x if x < 0.40 => self.drive_by(),
            x if x < 0.85 => self.mta().1,
            x if x < 0.95 => self.whitelisted(),
            x if x < 0.96 => Try {
                recipient: "Postmaster@example.test".into(),
                ..self.drive_by()
            },
            x if x < 0.965 => Try {
                client: "unknown".into(),
                ..self.drive_by()
            },
            _ => self.mta().1,
        }
    }

    fn record(&mut self, t: Try, at_ms: i64) -> anyhow::Result<RawRecord> {
        self.seq += 1;
        let key = match t.client.parse::<IpAddr>() {
            Ok(ip) => client_net(ip, self.grouping),
            Err(_) => t.client.clone(),
        };
        let attempt = DeliveryAttempted {
            envelope: Envelope::new(
                format!("{}:{}", self.run_id, self.seq),
                at_ms,
                "bench-kstreams",
            ),
            client_address: Some(t.client),
            client_name: Some(t.name.clone()),
            reverse_client_name: Some(t.name),
            helo_name: Some("helo.example".into()),
            sender: Some(t.sender),
            recipient: Some(t.recipient),
            instance: Some(format!("{:X}", self.seq)),
            size: Some(self.rng.random_range(1_000..200_000)),
            queue_id: None,
            policy_host: "bench".into(),
            answered: None,
        };
        Ok(RawRecord {
            topic: self.topic.clone(),
            key: key.into_bytes(),
            payload: mailfleet_events::encode(&attempt)?,
        })
    }
}

impl Iterator for Attempts {
    type Item = anyhow::Result<RawRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let retry_due = self
            .due
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= self.now_ms);
        if retry_due {
            let Reverse((at, _, t)) = self.due.pop()?;
            return Some(self.record(t, at));
        }
        self.now_ms += STEP_MS;
        let t = self.first_attempt();
        let at = self.now_ms;
        Some(self.record(t, at))
    }
}
