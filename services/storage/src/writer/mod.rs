//! The storage writer: for each `MessageScanned`, deliver clean mail into
//! the account's Maildir (within its quota; mail flagged as spam into the
//! Spam folder, with the [`spam`] headers), quarantine infected, banned and
//! rejected-as-spam mail, and carry out `PurgeRequested`.
//!
//! `decide` is pure: idempotence by delivery id, the quota check and the
//! usage count, the events (`MessageQuarantined`, `MessageRejected` with
//! notices, `UsageChanged`). The effect carries out the [`decide::Plan`]
//! and reports `MessageStored` / `MessagesPurged` (`Outcome::Emitted`).
//! Usage goes up when a delivery is decided and down when the writer reads
//! its own `MessagesPurged` back from `stored_topic`.

mod config;
pub mod decide;
mod effects;
mod folders;
pub mod spam;
mod state;

use std::{future::Future, path::PathBuf, sync::Arc};

use mailfleet_blob::BlobStore;
use mailfleet_events::{mail::MessageRejected, Event};
use mailfleet_runtime::{
    metrics as m,
    settings::{InForce, Settings},
    Consumer, Decision, Input, Outcome, RuntimeError, StateError, StateView,
};

pub use config::{FolderRule, StorageConfig, StorageRules};
pub use decide::{Plan, StorageInput};
pub use state::{AccountQuota, Usage, UsageKey};

use crate::maildir::{Maildirs, Owner};

/// The consumer's name.
pub const NAME: &str = "storage";

/// An account's plan and explicit quota as the writer's store holds them
/// (from `PlanChanged` and `QuotaChanged`), for `mailfleet index show`;
/// the default when the account never had either.
pub fn account_quota(
    store: &mailfleet_runtime::Store,
    account: &str,
) -> Result<AccountQuota, RuntimeError> {
    use mailfleet_runtime::{StateKey, StateValue};
    let found = store
        .scan_table(state::QuotaKey::PREFIX)?
        .into_iter()
        .find(|(_, body, _)| body == account.as_bytes());
    found.map_or(Ok(AccountQuota::default()), |(_, _, value)| {
        AccountQuota::from_bytes(&value).map_err(|e| {
            RuntimeError::InvalidConfig(vec![format!("storage quota entry of {account}: {e}")])
        })
    })
}

/// The storage writer consumer.
pub struct StorageWriter {
    cfg: StorageConfig,
    /// The config file's quota plans until a `ConfigChanged`, then the log's.
    in_force: InForce<StorageConfig>,
    blobs: Arc<BlobStore>,
    maildirs: Maildirs,
    quarantine_dir: PathBuf,
    rules: folders::FolderRules,
}

impl StorageWriter {
    pub fn new(cfg: StorageConfig, blobs: Arc<BlobStore>) -> Self {
        let owner = Owner {
            uid: cfg.mail_uid,
            gid: cfg.mail_gid,
        };
        Self {
            maildirs: Maildirs::new(&cfg.mail_root, &cfg.hostname, owner, cfg.compress),
            quarantine_dir: PathBuf::from(&cfg.quarantine_dir),
            rules: folders::FolderRules::new(&cfg.folder_rules),
            blobs,
            in_force: InForce::new(NAME, cfg.clone()),
            cfg,
        }
    }

    /// The settings this config file gives, as a `ConfigChanged` records them.
    pub fn settings(&self) -> Result<Settings, RuntimeError> {
        self.in_force.settings()
    }
}

impl Consumer for StorageWriter {
    type Event = StorageInput;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<StorageInput>,
    ) -> Result<Decision, StateError> {
        if let StorageInput::Config(c) = &input.event {
            return self.in_force.take_recorded(state, c);
        }
        let (cfg, _) = self.in_force.current(state)?;
        let d = decide::decide(&cfg, state, &input.event)?;
        let partition = input.meta.partition.to_string();
        for (plan, bytes) in decide::plan_bytes_changes(&d) {
            metrics::gauge!(m::STORAGE_BYTES, "plan" => plan, "partition" => partition.clone())
                .set(bytes as f64);
        }
        if d.outputs
            .iter()
            .any(|o| o.event.name() == MessageRejected::NAME)
        {
            metrics::counter!(m::STORAGE_MESSAGES, "result" => "rejected").increment(1);
        }
        Ok(d)
    }

    fn has_effects(&self) -> bool {
        true
    }

    fn effect(
        &self,
        input: &Input<StorageInput>,
        decision: &Decision,
    ) -> impl Future<Output = Outcome> + Send {
        // File I/O, run on this consumer's own thread (the runtime calls
        // effects from its loop thread, not a tokio worker).
        let outcome = match (&input.event, decision.intent_as::<Plan>()) {
            (StorageInput::Scanned(s), Some(Plan::Deliver)) => self.deliver(s),
            (StorageInput::Scanned(s), Some(Plan::Quarantine { path })) => self.quarantine(s, path),
            (StorageInput::Purge(p), Some(Plan::Purge)) => self.purge(p),
            (StorageInput::DeleteMailbox(r), Some(Plan::DeleteMailbox)) => self.delete_mailbox(r),
            _ => Outcome::Done,
        };
        async { outcome }
    }
}

/// The storage writer as `mailfleet run storage` runs it; a live run
/// records its settings.
pub async fn build(
    cfg: &StorageConfig,
    blobs: Arc<BlobStore>,
    wiring: &mailfleet_runtime::Wiring,
) -> Result<StorageWriter, mailfleet_runtime::RuntimeError> {
    let writer = StorageWriter::new(cfg.clone(), blobs);
    let settings = writer.settings().map_err(|e| wiring.invalid(e))?;
    wiring.record_settings(&settings).await?;
    Ok(writer)
}
