//! The settings in force, as part of the log (F7).
//!
//! A consumer whose decisions depend on settings (a greylist delay, the
//! inactivity thresholds) records them as a `ConfigChanged` event in its
//! own input, at the point they take effect: the live process writes one
//! into every partition of its first input topic when it starts with
//! settings whose hash differs from the one in force. Its decider keeps
//! the settings in force per partition in state ([`InForceKey`]), decides
//! with them, and stamps their hash on each decision. A replay reads the
//! same events at the same positions, so it applies the settings that were
//! in force at each point: changing a setting today does not turn
//! yesterday's decisions into audit diffs.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{StateKey, StateValue};

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
