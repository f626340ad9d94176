use std::collections::BTreeMap;

use serde::Deserialize;

/// One folder rule: a header whose value matches sends the mail to a folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderRule {
    /// The header name, case-insensitive, e.g. `X-Spam-Flag`.
    pub header: String,
    /// A regular expression the (unfolded) value must match, e.g. `(?i)^yes`.
    pub pattern: String,
    /// The IMAP folder, e.g. `Spam`.
    pub folder: String,
}

/// `[consumers.storage]`: the storage writer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The mail root: `<mail_root>/<domain>/<user>/Maildir` (Dovecot's
    /// `mail_location = maildir:<mail_root>/%d/%n/Maildir`).
    pub mail_root: String,
    /// Where infected and banned mail is kept; only admins may read it.
    pub quarantine_dir: String,
    /// The host part of Maildir file names.
    pub hostname: String,
    /// Write messages zstd-compressed (Dovecot's zlib plugin reads them).
    pub compress: bool,
    /// Owner of the Maildir files and folders (Dovecot's mail user), when
    /// the writer runs as root.
    pub mail_uid: Option<u32>,
    /// Group of the Maildir files and folders.
    pub mail_gid: Option<u32>,
    /// The plan of accounts that never had a `PlanChanged`.
    pub default_plan: String,
    /// Quota per plan, bytes.
    pub plans: BTreeMap<String, u64>,
    /// Folder rules, first match wins; no match: INBOX.
    pub folder_rules: Vec<FolderRule>,
    /// Where mail the scanner flags as spam (rspamd's `add header` and
    /// `rewrite subject`, by default) goes, before any folder rule.
    pub spam_folder: String,
    /// Topic for MessageStored, MessageQuarantined, MessageRejected and
    /// MessagesPurged (the writer also reads it back for MessagesPurged).
    pub stored_topic: String,
    /// Compacted topic for UsageChanged (the LMTP server's over-quota check).
    pub usage_topic: String,
    /// Topic for NotificationRequested.
    pub notify_topic: String,
    /// Topic for the deletion saga's `DeletionStepCompleted { MAILDIR }`
    /// (the writer reads its `DeletionStepRequested` there too).
    pub accounts_topic: String,
    /// The hash of the recorded settings this config was built from
    /// (`ConfigChanged`); `None` for the config file's own.
    #[serde(skip)]
    pub settings_hash: Option<String>,
}

/// The settings the writer's quota decisions depend on: what a
/// `ConfigChanged` records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageRules {
    pub default_plan: String,
    pub plans: BTreeMap<String, u64>,
}

impl StorageConfig {
    /// The decision-relevant settings.
    pub fn rules(&self) -> StorageRules {
        StorageRules {
            default_plan: self.default_plan.clone(),
            plans: self.plans.clone(),
        }
    }

    /// This config with recorded `rules` (whose settings hash is `hash`).
    pub fn with_rules(&self, rules: StorageRules, hash: String) -> StorageConfig {
        StorageConfig {
            default_plan: rules.default_plan,
            plans: rules.plans,
            settings_hash: Some(hash),
            ..self.clone()
        }
    }
}

const GIB: u64 = 1 << 30;

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            mail_root: "run/mail".into(),
            quarantine_dir: "run/quarantine".into(),
            hostname: "localhost".into(),
            compress: false,
            mail_uid: None,
            mail_gid: None,
            default_plan: "free".into(),
            plans: BTreeMap::from([
                ("free".to_string(), 10 * GIB),
                ("plus".to_string(), 50 * GIB),
                ("pro".to_string(), 200 * GIB),
            ]),
            folder_rules: vec![FolderRule {
                header: "X-Spam-Flag".into(),
                pattern: "(?i)^\\s*yes".into(),
                folder: "Spam".into(),
            }],
            spam_folder: "Spam".into(),
            stored_topic: "mail.stored".into(),
            usage_topic: "accounts.usage".into(),
            notify_topic: "notify.requests".into(),
            accounts_topic: "accounts.events".into(),
            settings_hash: None,
        }
    }
}

impl StorageConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let key = |k: &str| format!("consumers.storage.{k}");
        for (k, v) in [
            ("mail_root", &self.mail_root),
            ("quarantine_dir", &self.quarantine_dir),
            ("hostname", &self.hostname),
            ("spam_folder", &self.spam_folder),
            ("stored_topic", &self.stored_topic),
            ("usage_topic", &self.usage_topic),
            ("notify_topic", &self.notify_topic),
            ("accounts_topic", &self.accounts_topic),
        ] {
            if v.is_empty() {
                out.push(format!("{} is empty", key(k)));
            }
        }
        if !self.plans.contains_key(&self.default_plan) {
            out.push(format!(
                "{} = {:?}: not in consumers.storage.plans ({:?})",
                key("default_plan"),
                self.default_plan,
                self.plans.keys().collect::<Vec<_>>()
            ));
        }
        for (i, rule) in self.folder_rules.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&rule.pattern) {
                out.push(format!(
                    "{}[{i}].pattern = {:?}: {e}",
                    key("folder_rules"),
                    rule.pattern
                ));
            }
            let bad_folder = rule.folder.is_empty()
                || rule.folder.contains(['/', '.', '\0'])
                || rule.folder.eq_ignore_ascii_case("INBOX");
            if bad_folder {
                out.push(format!(
                    "{}[{i}].folder = {:?}: not a folder name",
                    key("folder_rules"),
                    rule.folder
                ));
            }
        }
        out
    }

    /// The quota of an account on `plan` (the default plan when `None` or
    /// unknown) unless `explicit` overrides it.
    pub fn quota(&self, plan: Option<&str>, explicit: Option<i64>) -> i64 {
        if let Some(q) = explicit {
            return q;
        }
        let plan = plan
            .filter(|p| self.plans.contains_key(*p))
            .unwrap_or(&self.default_plan);
        self.plans
            .get(plan)
            .map_or(i64::MAX, |&q| i64::try_from(q).unwrap_or(i64::MAX))
    }
}

impl mailfleet_runtime::settings::RecordedRules for StorageConfig {
    type Rules = StorageRules;

    fn rules(&self) -> StorageRules {
        StorageConfig::rules(self)
    }

    fn with_rules(&self, rules: StorageRules, hash: String) -> StorageConfig {
        StorageConfig::with_rules(self, rules, hash)
    }

    fn problems(&self) -> Vec<String> {
        StorageConfig::problems(self)
    }
}
