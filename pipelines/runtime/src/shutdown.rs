//! One shutdown handle, cloned into every task.
//!
//! On SIGTERM or SIGINT the handle trips; the consumer loop stops fetching,
//! finishes and commits its in-flight batch, and leaves the group.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

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

    /// Trip this handle on SIGTERM or SIGINT. Needs a tokio runtime.
    pub fn trigger_on_signals(&self) {
        let handle = self.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
            handle.trigger();
        });
    }
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
