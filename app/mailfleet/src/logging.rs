//! The process's log: `[log]` of the config, or `MAILFLEET_LOG`, to stderr.

use tracing::{field::Field, Event, Level, Subscriber};
use tracing_subscriber::{
    layer::{Context, SubscriberExt},
    util::SubscriberInitExt,
    Layer,
};

use mailfleet_fleet::config::{Config, LogFormat};

/// Log to stderr at the configured level (`MAILFLEET_LOG` wins), as text
/// or JSON lines.
pub fn init(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().finish().with(RepeatedClose).init(),
        LogFormat::Text => builder.finish().with(RepeatedClose).init(),
    }
}

/// Drops the one false ERROR of every clean stop. rust-rdkafka's
/// `BaseConsumer` closes its consumer again when dropped, even after the
/// runtime has closed it within `runtime.close_timeout_ms`
/// (`mailfleet_runtime::shutdown::leave_group`); that second close fails
/// with BrokerDestroy ("Broker handle destroyed for termination"), and
/// rdkafka logged it as an ERROR each time a consumer stopped. A close
/// that fails for any other reason is still logged.
struct RepeatedClose;

impl<S: Subscriber> Layer<S> for RepeatedClose {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if *event.metadata().level() != Level::ERROR {
            return true;
        }
        let mut message = Message(None);
        event.record(&mut message);
        !message.0.is_some_and(|m| is_repeated_close(&m))
    }
}

/// rdkafka's line for a close of a consumer already closed.
fn is_repeated_close(message: &str) -> bool {
    message.starts_with("Failed to close consumer queue on drop")
        && message.contains("BrokerDestroy")
}

/// An event's `message` field, formatted.
struct Message(Option<String>);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Every event's message that reaches the layers below.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut message = Message(None);
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0.unwrap_or_default());
        }
    }

    #[test]
    fn only_the_close_of_a_closed_consumer_is_dropped() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(seen.clone())
            .with(RepeatedClose);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "rdkafka::consumer::base_consumer",
                "Failed to close consumer queue on drop: Consumer queue close error: BrokerDestroy (Local: Broker handle destroyed for termination)");
            tracing::error!(target: "rdkafka::consumer::base_consumer",
                "Failed to close consumer queue on drop: Consumer queue close error: Fail (Local: Communication failure with broker)");
            tracing::warn!("Failed to close consumer queue on drop: BrokerDestroy");
            tracing::error!("the store is corrupt");
        });
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].contains("Communication failure"), "{seen:?}");
        assert!(
            seen[1].starts_with("Failed to close"),
            "a warning stays: {seen:?}"
        );
        assert_eq!(seen[2], "the store is corrupt");
    }
}
