//! Crash fault points, for tests of the guarantee in [`super`].
//!
//! - `MAILFLEET_FAULT_CRASH_AFTER_ACK=N`: the process aborts right after
//!   the N-th batch (counted over the process, only batches that sent
//!   outputs) had every output acknowledged by Kafka, and before that
//!   batch's `WriteBatch` commit: the window where a crash makes the
//!   batch's outputs go out twice, so the restarted consumer re-sends them
//!   with the same ids and downstream consumers must drop the copies.
//! - `MAILFLEET_FAULT_CRASH_PIPELINED=N`: the N-th batch with outputs is
//!   held after its acknowledgements, uncommitted, until the next batch is
//!   being decoded and decided against its pending state; the process then
//!   aborts in the middle of that next batch. Both batches must be taken
//!   again from the stored offsets, decided as before.
//!
//! Compiled into debug builds only (`debug_assertions`, which every test
//! build has): a release build has neither the variables nor the checks.

/// The environment variables that arm the fault points.
#[cfg(debug_assertions)]
pub const CRASH_AFTER_ACK: &str = "MAILFLEET_FAULT_CRASH_AFTER_ACK";
#[cfg(debug_assertions)]
pub const CRASH_PIPELINED: &str = "MAILFLEET_FAULT_CRASH_PIPELINED";

/// The armed batch counts, if any (never any in a release build).
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub struct Armed {
    after_ack: Option<u64>,
    pipelined: Option<u64>,
}

/// The armed fault points; a value that is not a positive whole number is
/// named as a config error at start.
#[cfg(debug_assertions)]
pub fn armed() -> Result<Armed, crate::error::RuntimeError> {
    Ok(Armed {
        after_ack: count(CRASH_AFTER_ACK)?,
        pipelined: count(CRASH_PIPELINED)?,
    })
}

#[cfg(debug_assertions)]
fn count(var: &str) -> Result<Option<u64>, crate::error::RuntimeError> {
    let Ok(value) = std::env::var(var) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(crate::error::RuntimeError::InvalidConfig(vec![format!(
            "{var} = {value:?}: not a batch count (a whole number, 1 or more)"
        )])),
    }
}

#[cfg(not(debug_assertions))]
pub fn armed() -> Result<Armed, crate::error::RuntimeError> {
    Ok(Armed::default())
}

#[cfg(debug_assertions)]
mod armed_points {
    use std::{
        sync::atomic::{AtomicBool, AtomicU64, Ordering},
        time::{Duration, Instant},
    };

    use super::{Armed, CRASH_AFTER_ACK, CRASH_PIPELINED};

    /// Batches with outputs acknowledged so far, over every consumer of
    /// the process.
    static ACKED_BATCHES: AtomicU64 = AtomicU64::new(0);
    /// The held batch of `CRASH_PIPELINED` is acknowledged and waits.
    static HELD: AtomicBool = AtomicBool::new(false);
    /// A batch was decided while another was in flight.
    static NEXT_DECIDED: AtomicBool = AtomicBool::new(false);

    /// Called once a batch's `outputs` (and dead letters) are all
    /// acknowledged, before its commit.
    pub fn after_ack(armed: Armed, consumer: &str, outputs: usize) {
        if outputs == 0 || (armed.after_ack.is_none() && armed.pipelined.is_none()) {
            return;
        }
        let batch = ACKED_BATCHES.fetch_add(1, Ordering::SeqCst) + 1;
        if armed.after_ack == Some(batch) {
            tracing::error!(consumer, batch, outputs, fault = CRASH_AFTER_ACK,
                "fault point crash_after_ack: aborting after the outputs were acknowledged, before the commit");
            std::process::abort();
        }
        if armed.pipelined == Some(batch) {
            tracing::warn!(
                consumer,
                batch,
                outputs,
                fault = CRASH_PIPELINED,
                "fault point crash_pipelined: holding the acknowledged batch uncommitted"
            );
            HELD.store(true, Ordering::SeqCst);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                if NEXT_DECIDED.load(Ordering::SeqCst) {
                    abort_pipelined();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            tracing::error!(
                consumer,
                batch,
                fault = CRASH_PIPELINED,
                "fault point crash_pipelined: no next batch was decided within 60 s; aborting"
            );
            std::process::abort();
        }
    }

    /// Called after each record a batch decides; `pipelined` when an
    /// earlier batch is still in flight.
    pub fn while_deciding(pipelined: bool) {
        if pipelined && HELD.load(Ordering::Relaxed) {
            abort_pipelined();
        }
    }

    /// Called when a batch is decided while another is in flight, before
    /// the loop waits for that one: the held batch aborts from its side.
    pub fn next_decided() {
        NEXT_DECIDED.store(true, Ordering::SeqCst);
        while_deciding(true);
    }

    fn abort_pipelined() -> ! {
        tracing::error!(fault = CRASH_PIPELINED,
            "fault point crash_pipelined: aborting while the next batch is decided and the held one is uncommitted");
        std::process::abort();
    }
}

#[cfg(debug_assertions)]
pub use armed_points::{after_ack, next_decided, while_deciding};

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn after_ack(_armed: Armed, _consumer: &str, _outputs: usize) {}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn while_deciding(_pipelined: bool) {}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn next_decided() {}
