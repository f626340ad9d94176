//! The indexer: a pure decider over `MessageStored`, `MessagesPurged` and
//! `MessageQuarantined` keeping, per account, each message (folder, file,
//! size, received time), each folder's count and bytes, and the total.
//!
//! The index is state, so it can be rebuilt from the log into a fresh store
//! at any time (`mailfleet index rebuild`); [`digest`] makes "the rebuilt
//! index equals the live one at the same offsets" checkable.

pub mod decide;
mod state;

use mailfleet_runtime::{
    metrics as m, Consumer, Decision, Input, RuntimeError, StateError, StateView, Store,
};
use sha2::{Digest, Sha256};

pub use decide::IndexInput;
pub use state::{FolderKey, MessageEntry, MessageKey, Tally, TotalKey};

/// The consumer's name.
pub const NAME: &str = "index";

/// The indexer consumer.
pub struct Indexer {
    /// Where `DeletionStepCompleted { INDEX }` goes.
    accounts_topic: String,
}

impl Indexer {
    /// An indexer telling the deletion saga on `accounts_topic`.
    pub fn new(accounts_topic: impl Into<String>) -> Self {
        Self {
            accounts_topic: accounts_topic.into(),
        }
    }
}

impl Default for Indexer {
    fn default() -> Self {
        Self::new("accounts.events")
    }
}

impl Consumer for Indexer {
    type Event = IndexInput;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<IndexInput>,
    ) -> Result<Decision, StateError> {
        let d = decide::decide(state, &input.event, &self.accounts_topic)?;
        if let Some(stats) = decide::stats_change(&d) {
            let partition = input.meta.partition.to_string();
            metrics::gauge!(m::INDEX_MESSAGES, "partition" => partition.clone())
                .set(stats.count as f64);
            metrics::gauge!(m::INDEX_BYTES, "partition" => partition).set(stats.bytes as f64);
        }
        Ok(d)
    }
}

/// One account's index, for `mailfleet index show`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AccountIndex {
    /// (folder, count and bytes), by folder name.
    pub folders: Vec<(String, Tally)>,
    pub total: Tally,
    pub quarantined: Tally,
    /// (file base name, entry), by name.
    pub messages: Vec<(String, MessageEntry)>,
}

/// Read one account's index from an indexer store.
pub fn show(store: &Store, account: &str) -> Result<AccountIndex, RuntimeError> {
    use mailfleet_runtime::{StateKey, StateValue, ValueError};
    let mut out = AccountIndex::default();
    let with_nul = format!("{account}\0");
    let corrupt = |what: &str, e: ValueError| {
        RuntimeError::InvalidConfig(vec![format!("index entry {what}: {e}")])
    };
    for (_, body, value) in store.scan_table(FolderKey::PREFIX)? {
        if let Some(folder) = body.strip_prefix(with_nul.as_bytes()) {
            let tally = Tally::from_bytes(&value).map_err(|e| corrupt("folder", e))?;
            out.folders
                .push((String::from_utf8_lossy(folder).into_owned(), tally));
        }
    }
    for (_, body, value) in store.scan_table(MessageKey::PREFIX)? {
        if let Some(base) = body.strip_prefix(with_nul.as_bytes()) {
            let entry = MessageEntry::from_bytes(&value).map_err(|e| corrupt("message", e))?;
            out.messages
                .push((String::from_utf8_lossy(base).into_owned(), entry));
        }
    }
    let one = |table: u8| -> Result<Tally, RuntimeError> {
        let found = store
            .scan_table(table)?
            .into_iter()
            .find(|(_, body, _)| body == account.as_bytes());
        found.map_or(Ok(Tally::default()), |(_, _, v)| {
            Tally::from_bytes(&v).map_err(|e| corrupt("total", e))
        })
    };
    out.total = one(TotalKey::PREFIX)?;
    out.quarantined = one(state::QuarantineKey::PREFIX)?;
    out.folders.sort_by(|a, b| a.0.cmp(&b.0));
    out.messages.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A digest of an index's whole state (every key and value, in key
/// order) and the offsets it reflects: equal digests, equal indexes.
pub fn digest(store: &Store) -> Result<String, RuntimeError> {
    let entries = store
        .scan_state(&[])
        .map_err(|source| RuntimeError::Store {
            op: "scan state",
            source,
        })?;
    let mut hash = Sha256::new();
    for (key, value) in &entries {
        hash.update((key.len() as u64).to_le_bytes());
        hash.update(key);
        hash.update((value.len() as u64).to_le_bytes());
        hash.update(value);
    }
    Ok(hex::encode(hash.finalize()))
}

/// The indexer as `mailfleet run index` runs it: the deletion saga's
/// step results go to the first topic of its route.
pub async fn build(
    wiring: &mailfleet_runtime::Wiring,
) -> Result<Indexer, mailfleet_runtime::RuntimeError> {
    Ok(Indexer::new(wiring.first_output()))
}
