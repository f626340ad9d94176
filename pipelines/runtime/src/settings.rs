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
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

use crate::{Decision, RuntimeError, StateError, StateKey, StateValue, StateView, ValueError};

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
    pub fn of<T: Serialize>(value: &T) -> Result<Settings, RuntimeError> {
        // serde_json's Value keeps object keys sorted (no preserve_order).
        let value = serde_json::to_value(value).map_err(RuntimeError::Settings)?;
        let json = serde_json::to_string(&value).map_err(RuntimeError::Settings)?;
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
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let json = String::from_utf8(bytes.to_vec())?;
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
    /// The settings read last, as stored bytes, with their hash and
    /// config: the same bytes come with nearly every event, and comparing
    /// them is far cheaper than hashing them again (SHA-256 of the JSON,
    /// whitelist texts included, was half of a greylist decision).
    last: Mutex<Option<Last<C>>>,
}

/// Stored settings bytes, their hash and the config they built.
struct Last<C> {
    bytes: Vec<u8>,
    hash: String,
    config: Arc<C>,
}

impl<C> InForce<C> {
    /// `file`: the config file's config, in force before any `ConfigChanged`.
    pub fn new(consumer: impl Into<String>, file: C) -> Self {
        Self {
            consumer: consumer.into(),
            file: Arc::new(file),
            cache: Mutex::default(),
            last: Mutex::default(),
        }
    }

    /// The config file's config.
    pub fn file(&self) -> &C {
        &self.file
    }

    /// The config in force in this partition and its settings hash (none
    /// before a `ConfigChanged`); `build` makes a config from recorded
    /// settings JSON, or says why it cannot (its crate's error).
    pub fn get<E: std::error::Error + Send + Sync + 'static>(
        &self,
        state: &StateView<'_>,
        build: impl Fn(&Settings) -> Result<C, E>,
    ) -> Result<(Arc<C>, Option<String>), StateError> {
        let Some(bytes) = state.get_raw(&InForceKey)? else {
            return Ok((self.file.clone(), None));
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = last.as_ref().filter(|l| l.bytes == bytes) {
            return Ok((l.config.clone(), Some(l.hash.clone())));
        }
        let settings = StateView::decode(&InForceKey, &bytes)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = match cache.get(&settings.hash) {
            Some(cfg) => cfg.clone(),
            None => {
                let cfg = Arc::new(build(&settings).map_err(|e| StateError::Corrupt {
                    key: format!("{} settings in force", self.consumer),
                    source: ValueError::invalid(e),
                })?);
                cache.insert(settings.hash.clone(), cfg.clone());
                cfg
            }
        };
        *last = Some(Last {
            bytes,
            hash: settings.hash.clone(),
            config: cfg.clone(),
        });
        Ok((cfg, Some(settings.hash)))
    }

    /// Apply a `ConfigChanged`: ignored for another consumer or settings
    /// already in force; refused (dead-lettered with the reason) when its
    /// hash is not its settings' or `build` refuses them.
    pub fn take<E: std::error::Error>(
        &self,
        state: &StateView<'_>,
        c: &ConfigChanged,
        build: impl Fn(&Settings) -> Result<C, E>,
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

/// A consumer config whose deciding part, its rules, is recorded as
/// settings: the config file gives the rules of a live run, a
/// `ConfigChanged` those of every decision after it.
pub trait RecordedRules: Sized {
    /// What is recorded.
    type Rules: Serialize + DeserializeOwned;
    /// The rules of this config.
    fn rules(&self) -> Self::Rules;
    /// This config with recorded rules (and their hash) in force.
    fn with_rules(&self, rules: Self::Rules, hash: String) -> Self;
    /// Every problem of the config, each naming its key and value.
    fn problems(&self) -> Vec<String>;
}

/// Why recorded settings make no config.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The JSON is not the consumer's rules.
    #[error("{0}")]
    Read(#[source] serde_json::Error),
    /// The rules read, but some values are wrong.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl<C: RecordedRules> InForce<C> {
    /// The settings the config file gives, as a `ConfigChanged` records them.
    pub fn settings(&self) -> Result<Settings, RuntimeError> {
        Settings::of(&self.file.rules())
    }

    /// The config recorded `settings` give, if they are valid.
    pub fn config_of(&self, settings: &Settings) -> Result<C, RulesError> {
        let rules = serde_json::from_str(&settings.json).map_err(RulesError::Read)?;
        let cfg = self.file.with_rules(rules, settings.hash.clone());
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(RulesError::Invalid(problems))
        }
    }

    /// [`InForce::get`] with the recorded rules.
    pub fn current(&self, state: &StateView<'_>) -> Result<(Arc<C>, Option<String>), StateError> {
        self.get(state, |s| self.config_of(s))
    }

    /// [`InForce::take`] with the recorded rules.
    pub fn take_recorded(
        &self,
        state: &StateView<'_>,
        c: &ConfigChanged,
    ) -> Result<Decision, StateError> {
        self.take(state, c, |s| self.config_of(s))
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
        assert_eq!(Settings::from_bytes(&s.to_bytes()).unwrap(), s);
        let other = Settings::of(&S {
            zeta: 301,
            alpha: "x",
        })
        .unwrap();
        assert_ne!(other.hash, s.hash);
    }

    #[test]
    fn the_config_in_force_follows_the_stored_settings() {
        let in_force = InForce::new("c", "file".to_string());
        let built = std::sync::atomic::AtomicUsize::new(0);
        let build = |s: &Settings| {
            built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if s.json.contains("bad") {
                Err(std::io::Error::other("refused"))
            } else {
                Ok(s.json.clone())
            }
        };
        let overlay = crate::Overlay::default();
        let view = StateView::in_memory(&overlay);
        let (cfg, hash) = in_force.get(&view, build).unwrap();
        assert_eq!((cfg.as_str(), hash), ("file", None), "none recorded yet");
        let a = Settings::from_json(r#"{"a":1}"#.into());
        let b = Settings::from_json(r#"{"b":2}"#.into());
        let with = |s: &Settings| {
            let mut o = crate::Overlay::default();
            o.insert(InForceKey.to_key_bytes(), Some(s.to_bytes()));
            o
        };
        // Two partitions with different settings, read in turns: each
        // read gives its own, and each is built once.
        let (oa, ob) = (with(&a), with(&b));
        for _ in 0..3 {
            for (o, s) in [(&oa, &a), (&ob, &b)] {
                let (cfg, hash) = in_force.get(&StateView::in_memory(o), build).unwrap();
                assert_eq!(
                    (cfg.as_str(), hash.as_deref()),
                    (s.json.as_str(), Some(s.hash.as_str()))
                );
            }
        }
        assert_eq!(built.load(std::sync::atomic::Ordering::Relaxed), 2);
        // Refused settings are an error every time, never cached.
        let bad = with(&Settings::from_json(r#"{"bad":1}"#.into()));
        for _ in 0..2 {
            let err = in_force
                .get(&StateView::in_memory(&bad), build)
                .unwrap_err();
            assert!(err.to_string().contains("refused"), "{err}");
        }
        // Bytes that are not UTF-8 are corrupt state, named as such.
        let mut corrupt = crate::Overlay::default();
        corrupt.insert(InForceKey.to_key_bytes(), Some(vec![0xff, 0xfe]));
        let err = in_force
            .get(&StateView::in_memory(&corrupt), build)
            .unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    }
}
