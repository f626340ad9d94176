use serde::Deserialize;

/// `[consumers.counter]` in the mailfleet config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CounterConfig {
    /// Emit a `Counted` event per input; off in the consume benchmark, which
    /// measures state keeping alone.
    pub emit: bool,
}

impl Default for CounterConfig {
    fn default() -> Self {
        Self { emit: true }
    }
}

impl CounterConfig {
    /// Every problem of the table: it has none (any `emit` is valid).
    pub fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}
