//! The settings in force, as part of the log (F7).
//!
//! A consumer whose decisions depend on settings (a greylist delay, the
//! inactivity thresholds) records them as a `ConfigChanged` event in its
//! own input, at the point they take effect: the live process writes one
//! into every partition of its input topics when it starts with
//! settings whose hash differs from the one in force. Its decider keeps
//! the settings in force per partition in state ([`InForceKey`]), decides
//! with them, and stamps their hash on each decision. A replay reads the
//! same events at the same positions, so it applies the settings that were
//! in force at each point: changing a setting today does not turn
//! yesterday's decisions into audit diffs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use mailfleet_events::config::ConfigChanged;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Decision, StateError, StateKey, StateValue, StateView};

/// Settings as recorded: canonical JSON and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// JSON with object keys sorted.
    pub json: String,
    /// SHA-256 of `json`, hex.
    pub hash: String,
}

impl Settings {
    /// The canonical form of `value`.
    pub fn of<T: Serialize>(value: &T) -> Result<Settings, String> {
        // serde_json's Value keeps object keys sorted (no preserve_order).
        let value = serde_json::to_value(value).map_err(|e| e.to_string())?;
        let json = serde_json::to_string(&value).map_err(|e| e.to_string())?;
        Ok(Self::from_json(json))
    }

    /// Settings from their recorded JSON.
    pub fn from_json(json: String) -> Settings {
        let hash = hex::encode(Sha256::digest(json.as_bytes()));
        Settings { json, hash }
    }
}

/// The settings in force in a partition: `@` (one key per partition).
pub struct InForceKey;

impl StateKey for InForceKey {
    type Value = Settings;
    const PREFIX: u8 = b'@';
    fn encode_key(&self, _out: &mut Vec<u8>) {}
}

impl StateValue for Settings {
    fn to_bytes(&self) -> Vec<u8> {
        self.json.as_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let json = String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?;
        Ok(Settings::from_json(json))
    }
}

/// A consumer's config in force per partition: the config file's until a
/// `ConfigChanged` for the consumer is applied, then the one its settings
/// build (cached by hash).
pub struct InForce<C> {
    consumer: String,
    file: Arc<C>,
    cache: Mutex<HashMap<String, Arc<C>>>,
}

impl<C> InForce<C> {
    /// `file`: the config file's config, in force before any `ConfigChanged`.
    pub fn new(consumer: impl Into<String>, file: C) -> Self {
        Self {
            consumer: consumer.into(),
            file: Arc::new(file),
            cache: Mutex::default(),
        }
    }

    /// The config file's config.
    pub fn file(&self) -> &C {
        &self.file
    }

    /// The config in force in this partition and its settings hash (none
    /// before a `ConfigChanged`); `build` makes a config from recorded
    /// settings JSON, or says why it cannot.
    pub fn get(
        &self,
        state: &StateView<'_>,
        build: impl Fn(&Settings) -> Result<C, String>,
    ) -> Result<(Arc<C>, Option<String>), StateError> {
        let Some(settings) = state.get(&InForceKey)? else {
            return Ok((self.file.clone(), None));
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cfg) = cache.get(&settings.hash) {
            return Ok((cfg.clone(), Some(settings.hash)));
        }
        let cfg = Arc::new(build(&settings).map_err(|reason| StateError::Corrupt {
            key: format!("{} settings in force", self.consumer),
            reason,
        })?);
        cache.insert(settings.hash.clone(), cfg.clone());
        Ok((cfg, Some(settings.hash)))
    }

    /// Apply a `ConfigChanged`: ignored for another consumer or settings
    /// already in force; refused (dead-lettered with the reason) when its
    /// hash is not its settings' or `build` refuses them.
    pub fn take(
        &self,
        state: &StateView<'_>,
        c: &ConfigChanged,
        build: impl Fn(&Settings) -> Result<C, String>,
    ) -> Result<Decision, StateError> {
        if c.consumer != self.consumer {
            return Ok(Decision::ignore());
        }
        let settings = Settings::from_json(c.settings.clone());
        if settings.hash != c.hash {
            return Ok(Decision::reject(format!(
                "ConfigChanged {}: hash {} is not the SHA-256 of its settings ({})",
                c.envelope.event_id, c.hash, settings.hash
            )));
        }
        if let Err(reason) = build(&settings) {
            return Ok(Decision::reject(format!(
                "ConfigChanged {}: settings {}: {reason}",
                c.envelope.event_id, settings.json
            )));
        }
        if state
            .get(&InForceKey)?
            .is_some_and(|s| s.hash == settings.hash)
        {
            return Ok(Decision::ignore()); // already in force
        }
        let mut d = Decision::apply();
        d.put(&InForceKey, &settings);
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct S {
        zeta: u32,
        alpha: &'static str,
    }

    #[test]
    fn settings_are_canonical_and_hashed() {
        let s = Settings::of(&S {
            zeta: 300,
            alpha: "x",
        })
        .unwrap();
        assert_eq!(s.json, r#"{"alpha":"x","zeta":300}"#, "keys sorted");
        assert_eq!(s.hash.len(), 64);
        assert_eq!(Settings::from_json(s.json.clone()), s);
        assert_eq!(Settings::from_bytes(&s.to_bytes()), Ok(s.clone()));
        let other = Settings::of(&S {
            zeta: 301,
            alpha: "x",
        })
        .unwrap();
        assert_ne!(other.hash, s.hash);
    }
}
