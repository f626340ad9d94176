//! The directory half of `mailfleet account migrate`: copy an account's
//! entry and everything below it (contacts, calendar, tasks) to another
//! people base, with a new password hash on the copied account entry.

use ldap3::Scope;

use crate::{
    client::DirectoryClient,
    dn::Dn,
    entry::Attrs,
    error::{DirectoryError, Op},
};

/// What a copy did.
#[derive(Debug, Clone, PartialEq)]
pub struct Copied {
    pub source: Dn,
    pub target: Dn,
    /// Entries copied: the account entry and all below it.
    pub entries: usize,
}

impl DirectoryClient {
    /// Copy `account`'s subtree below `target_people` (see
    /// [`crate::Layout::target_people`]), setting `userPassword` of the
    /// copy to `password_hash` (the source's is never readable, and a
    /// migration resets it anyway). A repeated copy replaces what the
    /// first one wrote. The source must be an account entry
    /// (`ldap.account_filter`).
    pub async fn copy_account(
        &self,
        account: &str,
        target_people: &Dn,
        password_hash: &str,
    ) -> Result<Copied, DirectoryError> {
        let source = self.account_entry(account).await?;
        let target = self.layout().account_dn_in(target_people, account);
        let mut root = Attrs::new();
        root.text("userPassword", password_hash);
        let mut conn = self.conn().await?;
        let entries = conn.copy_subtree(&source, &target, &root).await?;
        Ok(Copied {
            source,
            target,
            entries,
        })
    }

    /// The account's entry, checked to exist and to be an account
    /// (`ldap.account_filter`): `noSuchObject` or `NotAnAccount` otherwise.
    pub async fn account_entry(&self, account: &str) -> Result<Dn, DirectoryError> {
        let layout = self.layout();
        let dn = layout.account_dn(account);
        let filter = layout.account_search_filter(account);
        let found = self
            .conn()
            .await?
            .search(&dn, Scope::Base, &filter, &["1.1"])
            .await?;
        if found.is_empty() {
            return Err(DirectoryError::NotAnAccount {
                op: Op::Search,
                dn: dn.to_string(),
                filter,
            });
        }
        Ok(dn)
    }
}
