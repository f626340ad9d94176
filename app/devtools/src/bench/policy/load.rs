//! `mailfleet bench policy-load` (hidden): the load generator of `bench
//! policy`, in a process of its own so that it shares no tokio runtime (and
//! no scheduler queue) with the policy server it measures. It drives one
//! address with a seeded request sequence and prints one line:
//! `requests=N errors=E secs=S p50_us=X p99_us=Y`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mailfleet_policy::client::PolicyClient;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// One phase of the load.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The policy server to drive (`host:port`).
    #[arg(long)]
    pub addr: String,
    /// Persistent connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Requests per second in all; 0: flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[command(flatten)]
    pub sequence: Sequence,
    /// Start this far into the sequence (what earlier phases of the round sent).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
}

/// The request sequence: the same for every peer and round of one seed.
#[derive(Debug, Clone, clap::Args)]
pub struct Sequence {
    /// Distinct triplets in the request sequence.
    #[arg(long, default_value_t = 100_000)]
    pub triplets: usize,
    /// Share of requests that repeat an earlier triplet.
    #[arg(long, default_value_t = 0.5)]
    pub repeat: f64,
    /// Seed of the request sequence (the same seed, the same requests).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One RCPT request: (client address, sender, recipient).
type Request = (String, String, String);

/// Each request is a new triplet or, with probability `repeat`, one already
/// sent, drawn from a generator seeded with `seed`.
fn requests(seq: &Sequence) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(seq.seed);
    let mut seen = 0usize;
    let total = (seq.triplets as f64 / (1.0 - seq.repeat.clamp(0.0, 0.95))) as usize;
    (0..total.max(1))
        .map(|_| {
            let i = if seen > 0 && rng.random::<f64>() < seq.repeat {
                rng.random_range(0..seen)
            } else {
                seen += 1;
                seen - 1
            };
            let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            (
                ip,
                format!("s{i}@sender{}.example", i % 97),
                format!("r{i}@example.test"),
            )
        })
        .collect()
}

/// What one phase measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phase {
    pub requests: usize,
    pub errors: usize,
    /// Answers that deferred (`DEFER…`); the rest let the mail through.
    pub deferred: usize,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Phase {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs.max(1e-9)
    }

    /// The share of answers that deferred, percent.
    pub fn deferred_pct(&self) -> f64 {
        100.0 * self.deferred as f64 / self.requests.max(1) as f64
    }

    /// The generator's output line.
    fn line(&self) -> String {
        format!(
            "requests={} errors={} deferred={} secs={:.3} p50_us={:.0} p99_us={:.0}",
            self.requests,
            self.errors,
            self.deferred,
            self.secs,
            self.p50_ms * 1000.0,
            self.p99_ms * 1000.0
        )
    }

    /// Parse the generator's output line.
    pub fn parse(line: &str) -> Option<Phase> {
        let field = |name: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        Some(Phase {
            requests: field("requests")? as usize,
            errors: field("errors")? as usize,
            deferred: field("deferred").unwrap_or(0.0) as usize,
            secs: field("secs")?,
            p50_ms: field("p50_us")? / 1000.0,
            p99_ms: field("p99_us")? / 1000.0,
        })
    }
}

/// The `q` quantile of sorted latencies (µs), in ms.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[((n as f64 * q) as usize).min(n - 1)] as f64 / 1000.0,
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let reqs = Arc::new(requests(&args.sequence));
    let phase = drive(&args, reqs).await?;
    println!("{}", phase.line());
    Ok(())
}

/// Drive `args.addr` with `args.connections` clients over the sequence.
async fn drive(args: &LoadArgs, reqs: Arc<Vec<Request>>) -> anyhow::Result<Phase> {
    let next = Arc::new(AtomicUsize::new(args.skip));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    // At a fixed rate each connection sends every `gap`, staggered.
    let gap = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (addr, reqs, next) = (args.addr.clone(), reqs.clone(), next.clone());
        let offset = gap.map_or(Duration::ZERO, |g| {
            g.mul_f64(c as f64 / args.connections as f64)
        });
        tasks.push(tokio::spawn(async move {
            let mut client = PolicyClient::connect(&addr).await?;
            let (mut lat, mut errors, mut deferred) = (Vec::new(), 0usize, 0usize);
            let mut due = started + offset;
            while Instant::now() < deadline {
                if let Some(g) = gap {
                    tokio::time::sleep_until(due.into()).await;
                    due += g;
                }
                let (ip, from, to) = &reqs[next.fetch_add(1, Ordering::Relaxed) % reqs.len()];
                let attrs = [
                    ("protocol_state", "RCPT"),
                    ("protocol_name", "ESMTP"),
                    ("client_address", ip.as_str()),
                    ("client_name", "unknown"),
                    ("sender", from.as_str()),
                    ("recipient", to.as_str()),
                ];
                let t = Instant::now();
                match client.ask(&attrs, Duration::from_secs(10)).await {
                    Ok(action) => {
                        lat.push(t.elapsed().as_micros() as u64);
                        deferred += usize::from(action.starts_with("DEFER"));
                    }
                    Err(_) => {
                        errors += 1;
                        client = PolicyClient::connect(&addr).await?;
                    }
                }
            }
            anyhow::Ok((lat, errors, deferred))
        }));
    }
    let (mut all, mut errors, mut deferred) = (Vec::new(), 0, 0);
    for t in tasks {
        let (lat, e, d) = t.await??;
        all.extend(lat);
        errors += e;
        deferred += d;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(Phase {
        requests: all.len(),
        errors,
        deferred,
        secs,
        p50_ms: quantile_ms(&all, 0.5),
        p99_ms: quantile_ms(&all, 0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_sequence_and_another_seed_another() {
        let seq = |seed| Sequence {
            triplets: 1000,
            repeat: 0.5,
            seed,
        };
        assert_eq!(requests(&seq(7)), requests(&seq(7)));
        assert_ne!(requests(&seq(7)), requests(&seq(8)));
        // About half of the 2,000 requests repeat an earlier triplet.
        let distinct: std::collections::HashSet<_> = requests(&seq(7)).into_iter().collect();
        assert!((800..1200).contains(&distinct.len()), "{}", distinct.len());
    }

    #[test]
    fn the_output_line_parses_back() {
        let p = Phase {
            requests: 12,
            errors: 1,
            deferred: 5,
            secs: 2.5,
            p50_ms: 0.75,
            p99_ms: 4.5,
        };
        let q = Phase::parse(&p.line()).expect("parses");
        assert_eq!((q.requests, q.errors, q.deferred), (12, 1, 5));
        assert_eq!((q.secs, q.p50_ms, q.p99_ms), (2.5, 0.75, 4.5));
    }
}
