//! A crash fault point, for tests of the guarantee in [`super`].
//!
//! With `MAILFLEET_FAULT_CRASH_AFTER_ACK=N` set, the process aborts right
//! after the N-th batch (counted over the process, only batches that sent
//! outputs) had every output acknowledged by Kafka, and before that batch's
//! `WriteBatch` commit: the window where a crash makes the batch's outputs
//! go out twice, so the restarted consumer re-sends them with the same ids
//! and downstream consumers must drop the copies.
//!
//! Compiled into debug builds only (`debug_assertions`, which every test
//! build has): a release build has neither the variable nor the check.

/// The environment variable that arms the fault point.
#[cfg(debug_assertions)]
pub const CRASH_AFTER_ACK: &str = "MAILFLEET_FAULT_CRASH_AFTER_ACK";

/// The armed batch count, if any; a value that is not a positive whole
/// number is named as a config error at start.
#[cfg(debug_assertions)]
pub fn armed() -> Result<Option<u64>, crate::error::RuntimeError> {
    let Ok(value) = std::env::var(CRASH_AFTER_ACK) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(crate::error::RuntimeError::InvalidConfig(vec![format!(
            "{CRASH_AFTER_ACK} = {value:?}: not a batch count (a whole number, 1 or more)"
        )])),
    }
}

#[cfg(not(debug_assertions))]
pub fn armed() -> Result<Option<u64>, crate::error::RuntimeError> {
    Ok(None)
}

/// Batches with outputs acknowledged so far, over every consumer of the
/// process.
#[cfg(debug_assertions)]
static ACKED_BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Called once a batch's `outputs` (and dead letters) are all acknowledged,
/// before its commit: abort if this is the armed batch.
#[cfg(debug_assertions)]
pub fn after_ack(armed: Option<u64>, consumer: &str, outputs: usize) {
    use std::sync::atomic::Ordering;
    let Some(at) = armed.filter(|_| outputs > 0) else {
        return;
    };
    let batch = ACKED_BATCHES.fetch_add(1, Ordering::SeqCst) + 1;
    if batch == at {
        tracing::error!(consumer, batch, outputs, fault = CRASH_AFTER_ACK,
            "fault point crash_after_ack: aborting after the outputs were acknowledged, before the commit");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn after_ack(_armed: Option<u64>, _consumer: &str, _outputs: usize) {}
