//! What the entries hold: an account entry (inetOrgPerson +
//! mailfleetAccount), the organizationalUnits below it, and the attribute
//! changes that events make. Pure data; [`super::client`] sends it.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
};

use ldap3::{Mod, SearchEntry};

use super::dn::Rdn;

/// An entry's attributes, values as bytes so that binary ones (a
/// contact's photo) copy too. An attribute with no values in a
/// replacement removes it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attrs(BTreeMap<String, Vec<Vec<u8>>>);

impl Attrs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `name` to `values` (replacing it, whatever the case of its name).
    pub fn set<V: Into<Vec<u8>>>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = V>,
    ) -> &mut Self {
        self.0.retain(|k, _| !k.eq_ignore_ascii_case(name));
        self.0.insert(
            name.to_string(),
            values.into_iter().map(Into::into).collect(),
        );
        self
    }

    /// Set `name` to one text value.
    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.set(name, [value])
    }

    /// Set every attribute of `other` here (replacing ours).
    pub fn merge(&mut self, other: &Attrs) -> &mut Self {
        for (name, values) in &other.0 {
            self.set(name, values.iter().cloned());
        }
        self
    }

    /// The first value of `name` as text.
    pub fn get_text(&self, name: &str) -> Option<&str> {
        let (_, values) = self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        std::str::from_utf8(values.first()?).ok()
    }

    /// The attribute names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// An entry's attributes as a search returned them (text and binary).
    pub fn from_search(entry: SearchEntry) -> Self {
        let mut attrs = Self::new();
        for (name, values) in entry.attrs {
            attrs.set(&name, values);
        }
        for (name, values) in entry.bin_attrs {
            attrs.set(&name, values);
        }
        attrs
    }

    /// For an add: every attribute with values.
    pub(super) fn for_add(&self) -> Vec<(Vec<u8>, HashSet<Vec<u8>>)> {
        self.0
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone().into_bytes(), v.iter().cloned().collect()))
            .collect()
    }

    /// For a modify: replace each attribute (none left = removed; a
    /// replace of an absent attribute with nothing is no error, RFC 4511).
    pub(super) fn for_replace(&self) -> Vec<Mod<Vec<u8>>> {
        self.0
            .iter()
            .map(|(k, v)| Mod::Replace(k.clone().into_bytes(), v.iter().cloned().collect()))
            .collect()
    }
}

/// Values are not shown: one may be a password hash.
impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// A new account's entry, as `AccountRegistered` describes it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// The lower-cased address.
    pub account: String,
    /// `{SCHEME}...`: never a password.
    pub password_hash: String,
    pub plan: String,
    pub display_name: Option<String>,
    /// `pending` for a registration.
    pub status: String,
}

impl fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount")
            .field("account", &self.account)
            .field("plan", &self.plan)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl NewAccount {
    /// The entry: inetOrgPerson (cn, sn required) + mailfleetAccount;
    /// uid and mail both hold the address, so either may name it.
    pub fn attrs(&self) -> Attrs {
        let local = self.account.split('@').next().unwrap_or_default();
        let sn = if local.is_empty() {
            &self.account
        } else {
            local
        };
        let cn = self
            .display_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&self.account);
        let mut attrs = Attrs::new();
        attrs
            .set("objectClass", ["inetOrgPerson", "mailfleetAccount"])
            .text("uid", &self.account)
            .text("mail", &self.account)
            .text("cn", cn)
            .text("sn", sn)
            .text("userPassword", &self.password_hash)
            .text("mailfleetStatus", &self.status);
        if !self.plan.is_empty() {
            attrs.text("mailfleetPlan", &self.plan);
        }
        attrs
    }
}

/// A child organizationalUnit (`ou=contacts` ...).
pub fn child_attrs(rdn: &Rdn) -> Attrs {
    let mut attrs = Attrs::new();
    attrs.text("objectClass", "organizationalUnit");
    for ava in &rdn.0 {
        attrs.text(&ava.attr, &ava.value);
    }
    attrs
}

/// A change to an existing account entry.
#[derive(Clone, PartialEq, Eq)]
pub enum Change {
    /// `mailfleetStatus`, lower case (slapd's constraint allows only
    /// pending|active|inactive|deleting|deleted|blocked).
    Status(String),
    /// `mailfleetQuota` in bytes; `None` removes it (the plan's quota).
    Quota(Option<i64>),
    /// `mailfleetPlan`.
    Plan(String),
    /// `userPassword`: a `{SCHEME}...` hash.
    Password(String),
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Change {
    /// The attributes it replaces.
    pub fn attrs(&self) -> Attrs {
        let mut attrs = Attrs::new();
        match self {
            Change::Status(s) => attrs.text("mailfleetStatus", s),
            Change::Quota(Some(q)) => attrs.text("mailfleetQuota", &q.to_string()),
            Change::Quota(None) => attrs.set("mailfleetQuota", Vec::<Vec<u8>>::new()),
            Change::Plan(p) if p.is_empty() => attrs.set("mailfleetPlan", Vec::<Vec<u8>>::new()),
            Change::Plan(p) => attrs.text("mailfleetPlan", p),
            Change::Password(h) => attrs.text("userPassword", h),
        };
        attrs
    }

    /// For messages: what changes, never a hash.
    pub fn describe(&self) -> String {
        match self {
            Change::Status(s) => format!("mailfleetStatus={s}"),
            Change::Quota(Some(q)) => format!("mailfleetQuota={q}"),
            Change::Quota(None) => "mailfleetQuota removed".into(),
            Change::Plan(p) => format!("mailfleetPlan={p}"),
            Change::Password(_) => "userPassword".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_entry_has_what_slapd_requires() {
        let a = NewAccount {
            account: "alice@example.test".into(),
            password_hash: "{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            plan: "free".into(),
            display_name: None,
            status: "pending".into(),
        };
        let attrs = a.attrs();
        assert_eq!(attrs.get_text("uid"), Some("alice@example.test"));
        assert_eq!(attrs.get_text("mail"), Some("alice@example.test"));
        assert_eq!(attrs.get_text("cn"), Some("alice@example.test"));
        assert_eq!(attrs.get_text("sn"), Some("alice"));
        assert_eq!(attrs.get_text("mailfleetStatus"), Some("pending"));
        assert_eq!(attrs.get_text("mailfleetPlan"), Some("free"));
        assert!(attrs
            .get_text("userPassword")
            .unwrap()
            .starts_with("{ARGON2}"));
        assert_eq!(attrs.for_add().len(), 8);
        let shown = format!("{a:?} {attrs:?}");
        assert!(
            !shown.contains("argon2id"),
            "no hash in debug output: {shown}"
        );
        let named = NewAccount {
            display_name: Some("Alice A.".into()),
            plan: String::new(),
            ..a
        };
        assert_eq!(named.attrs().get_text("cn"), Some("Alice A."));
        assert_eq!(named.attrs().get_text("mailfleetPlan"), None);
    }

    #[test]
    fn changes_replace_one_attribute_and_none_removes_it() {
        let removed = Change::Quota(None).attrs();
        assert_eq!(removed.names().collect::<Vec<_>>(), ["mailfleetQuota"]);
        assert!(removed.for_add().is_empty());
        assert_eq!(removed.for_replace().len(), 1);
        assert_eq!(
            Change::Quota(Some(5)).attrs().get_text("mailfleetQuota"),
            Some("5")
        );
        assert_eq!(
            format!("{:?}", Change::Password("{SSHA512}secret-hash".into())),
            "userPassword"
        );
        let child = child_attrs(&Rdn::single("ou", "contacts"));
        assert_eq!(child.get_text("objectClass"), Some("organizationalUnit"));
        assert_eq!(child.get_text("ou"), Some("contacts"));
    }
}
