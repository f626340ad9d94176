//! `mailfleet index show|rebuild`: read one account's index, or rebuild
//! the whole index from the log and compare it with the live one.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context;
use clap::Subcommand;
use mailfleet_runtime::{time::now_ms, RunSpec, Shutdown, Store};
use mailfleet_storage::index::{self, Indexer};

use crate::config::Config;

#[derive(Subcommand)]
pub enum IndexAction {
    /// An account's folders, counts, bytes and quota use.
    Show {
        /// The account (address).
        account: String,
        /// List every message too.
        #[arg(long)]
        messages: bool,
    },
    /// Rebuild the index from the log into a fresh store, up to the live
    /// index's offsets, and print both digests (they must be equal).
    Rebuild {
        /// Where the fresh store goes (default: <data_dir>/index-rebuild-<time>).
        #[arg(long)]
        into: Option<PathBuf>,
    },
}

pub async fn run(action: IndexAction, cfg: &Config) -> anyhow::Result<()> {
    let live = cfg.runtime.data_dir.join(index::NAME);
    match action {
        IndexAction::Show { account, messages } => {
            show(cfg, &live, &account.to_lowercase(), messages)
        }
        IndexAction::Rebuild { into } => rebuild(cfg, &live, into).await,
    }
}

fn show(cfg: &Config, live: &std::path::Path, account: &str, messages: bool) -> anyhow::Result<()> {
    let store = Store::open_read_only(live)
        .with_context(|| format!("opening the index at {}", live.display()))?;
    let idx = index::show(&store, account)?;
    let (quota, whose) = quota_of(cfg, account)?;
    println!("{account}");
    for (folder, t) in &idx.folders {
        println!(
            "  {folder:<12} {:>8} messages {:>14} bytes",
            t.count, t.bytes
        );
    }
    let pct = if quota > 0 {
        idx.total.bytes as f64 * 100.0 / quota as f64
    } else {
        0.0
    };
    println!(
        "  {:<12} {:>8} messages {:>14} bytes ({pct:.2}% of {whose} {quota} bytes)",
        "total", idx.total.count, idx.total.bytes
    );
    if idx.quarantined.count > 0 {
        println!(
            "  quarantined  {:>8} messages {:>14} bytes",
            idx.quarantined.count, idx.quarantined.bytes
        );
    }
    if messages {
        for (base, e) in &idx.messages {
            println!(
                "    {base} {} {} bytes received {}",
                e.folder, e.size, e.received_at
            );
        }
    }
    Ok(())
}

/// The account's quota and whose it is ("the plan plus's", "its own"),
/// from the storage writer's store beside the index: the plan and quota
/// changes it has taken. Without that store (the writer runs on another
/// host) the default plan's, said so.
fn quota_of(cfg: &Config, account: &str) -> anyhow::Result<(i64, String)> {
    let storage = &cfg.consumers.storage;
    let dir = cfg.runtime.data_dir.join(mailfleet_storage::writer::NAME);
    if !dir.exists() {
        let plan = &storage.default_plan;
        return Ok((
            storage.quota(None, None),
            format!("the default plan {plan}'s (no storage writer state here)"),
        ));
    }
    let store = Store::open_read_only(&dir)
        .with_context(|| format!("opening the storage writer's state at {}", dir.display()))?;
    let q = mailfleet_storage::writer::account_quota(&store, account)?;
    let quota = storage.quota(q.plan.as_deref(), q.explicit);
    let whose = match (q.explicit, q.plan) {
        (Some(_), _) => "its own quota's".to_string(),
        (None, Some(plan)) if storage.plans.contains_key(&plan) => format!("the plan {plan}'s"),
        (None, _) => format!("the default plan {}'s", storage.default_plan),
    };
    Ok((quota, whose))
}

async fn rebuild(
    cfg: &Config,
    live: &std::path::Path,
    into: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (stop_at, live_digest) = {
        let store = Store::open_read_only(live)
            .with_context(|| format!("opening the live index at {}", live.display()))?;
        let offsets: BTreeMap<(String, i32), i64> = store
            .offsets()
            .into_iter()
            .map(|(t, p, o)| ((t, p), o))
            .collect();
        (offsets, index::digest(&store)?)
    };
    let stamp = now_ms() / 1000;
    let data_dir =
        into.unwrap_or_else(|| cfg.runtime.data_dir.join(format!("index-rebuild-{stamp}")));
    let topology = cfg.topology()?;
    let route = topology.route(index::NAME)?;
    let mut spec = RunSpec::for_route(route, &cfg.kafka, &cfg.runtime).data_dir(data_dir.clone());
    spec.group = format!("{}-rebuild-{stamp}", route.group);
    spec.run_effects = false;
    spec.stop_at = Some(stop_at.clone());
    let stats = mailfleet_runtime::run(Indexer::default(), spec, Shutdown::new()).await?;
    let rebuilt = Store::open(&data_dir.join(index::NAME), false)?;
    let rebuilt_digest = index::digest(&rebuilt)?;
    println!(
        "replayed {} events up to the live offsets {stop_at:?}",
        stats.events
    );
    println!("live    {live_digest}");
    println!(
        "rebuilt {rebuilt_digest}  ({})",
        data_dir.join(index::NAME).display()
    );
    anyhow::ensure!(
        live_digest == rebuilt_digest,
        "the rebuilt index differs from the live one"
    );
    println!("equal");
    Ok(())
}
