//! One shutdown handle, cloned into every task.
//!
//! On SIGTERM or SIGINT the handle trips; the consumer loop stops fetching,
//! finishes and commits its in-flight batch, and leaves the group.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use tokio::sync::Notify;

/// A shared, one-way shutdown signal.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    tripped: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    /// A new, untripped handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask everything holding this handle to stop.
    pub fn trigger(&self) {
        self.inner.tripped.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether shutdown was asked for; cheap, for polling loops.
    pub fn is_triggered(&self) -> bool {
        self.inner.tripped.load(Ordering::SeqCst)
    }

    /// Wait until shutdown is asked for.
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }

    /// Trip this handle on SIGTERM or SIGINT. Needs a tokio runtime (call
    /// it inside one, or after `Runtime::enter`). The handlers are in place
    /// when this returns, so a signal that comes at once, while the process
    /// is still starting, trips the handle instead of killing the process;
    /// one held since [`hold_signals`] is taken now.
    pub fn trigger_on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        set_signal_mask(libc::SIG_UNBLOCK);
        let handle = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            handle.trigger();
        });
        Ok(())
    }
}

/// Hold SIGTERM and SIGINT (block them in this thread and every thread it
/// starts) until [`Shutdown::trigger_on_signals`] takes them. Called first
/// thing in `main`, before any thread exists: a signal that comes while the
/// process loads its config and starts its runtime then waits for the
/// handler instead of killing the process. Child processes start with no
/// signal blocked (Rust's `Command` clears the mask).
pub fn hold_signals() {
    set_signal_mask(libc::SIG_BLOCK);
}

/// Block or unblock SIGTERM and SIGINT in the calling thread.
fn set_signal_mask(how: libc::c_int) {
    // SAFETY: plain libc calls on a local, initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Leave the consumer group of `kc` and close it, waiting at most `within`.
///
/// Dropping a `BaseConsumer` closes it and polls until librdkafka says it
/// is closed, with no bound: a group that cannot be left (its coordinator
/// unreachable, the broker down) keeps the process from ever stopping.
/// Here the wait is bounded; past it the consumer is abandoned (leaked, so
/// its drop never runs) with a log line. Callers commit their state before
/// they call this, so nothing is lost: the group drops the member after
/// `session.timeout.ms`. `who` names the consumer in the logs.
pub fn leave_group<C: ConsumerContext>(kc: BaseConsumer<C>, within: Duration, who: &str) {
    let started = Instant::now();
    if let Err(e) = kc.close_queue() {
        tracing::warn!(consumer = %who, error = %e, "closing the consumer");
        return; // the drop finds nothing to wait for
    }
    while !kc.closed() {
        if started.elapsed() >= within {
            tracing::warn!(consumer = %who, waited_ms = within.as_millis() as u64,
                "could not leave the group in time; stopping without it (state and offsets are committed)");
            std::mem::forget(kc);
            return;
        }
        // Serves the close: the revocation callback and the leave request.
        // Nothing wakes the poll once the close is done, so its timeout
        // is added to every stop: 100 ms made each close take 100 ms.
        let _ = kc.poll(Duration::from_millis(5));
    }
    tracing::debug!(consumer = %who, took_ms = started.elapsed().as_millis() as u64, "left the group");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_on_trigger() {
        let s = Shutdown::new();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        assert!(!s.is_triggered());
        s.trigger();
        waiter.await.unwrap();
        assert!(s.is_triggered());
        s.wait().await; // already tripped: returns at once
    }
}
