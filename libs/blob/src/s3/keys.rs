//! Where each object of the S3 backend lives: the local layout, as keys.
//!
//! ```text
//! <prefix>/<h0h1>/<h2h3>/<blob id>.zst                  a blob
//! <prefix>/refs/by-account/<account key>/<blob id>      what an account holds
//! <prefix>/refs/by-blob/<h0h1>/<blob id>/<account key>  who holds a blob
//! <prefix>/tmp/<blob id>.released                       a blob being released
//! ```
//!
//! Markers are empty objects. `<account key>` is [`crate::account_key`],
//! so any address is a safe key part. The callers have checked the blob
//! id ([`crate::check_id`]): 64 lower-case hex digits.

use object_store::path::{Path, PathPart};

/// The key layout of one store: its prefix and the names below it.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: Path,
}

impl Keys {
    /// `prefix` as [`crate::S3Config::prefix`] allows it (checked there).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            root: prefix.split('/').filter(|p| !p.is_empty()).collect(),
        }
    }

    fn under(&self, parts: &[&str]) -> Path {
        let mut path = self.root.clone();
        for part in parts {
            path = path.join(PathPart::from(*part));
        }
        path
    }

    /// A blob: `<h0h1>/<h2h3>/<id>.zst`.
    pub fn blob(&self, id: &str) -> Path {
        self.under(&[&id[0..2], &id[2..4], &format!("{id}.zst")])
    }

    /// The folder of the markers saying who holds blob `id`.
    pub fn holders(&self, id: &str) -> Path {
        self.under(&["refs", "by-blob", &id[..2], id])
    }

    /// The marker saying that `account_key` holds blob `id`.
    pub fn holder(&self, id: &str, account_key: &str) -> Path {
        self.holders(id).join(account_key)
    }

    /// The folder of the markers of what `account_key` holds.
    pub fn held(&self, account_key: &str) -> Path {
        self.under(&["refs", "by-account", account_key])
    }

    /// The marker saying that `account_key` holds blob `id`, by account.
    pub fn held_one(&self, account_key: &str, id: &str) -> Path {
        self.held(account_key).join(id)
    }

    /// Where a blob goes while its release checks for a racing delivery.
    pub fn aside(&self, id: &str) -> Path {
        self.tmp().join(format!("{id}.released"))
    }

    /// The folder of blobs being released (a crash may leave some).
    pub fn tmp(&self) -> Path {
        self.under(&["tmp"])
    }

    /// The store's own prefix (empty: the whole bucket).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn blobs_are_content_addressed_under_the_prefix() {
        let keys = Keys::new("tenant/blobs");
        assert_eq!(
            keys.blob(ID).as_ref(),
            format!("tenant/blobs/01/23/{ID}.zst")
        );
        assert_eq!(
            Keys::new("").blob(ID).as_ref(),
            format!("01/23/{ID}.zst"),
            "no prefix: the bucket's root"
        );
        assert_eq!(keys.root().as_ref(), "tenant/blobs");
    }

    #[test]
    fn markers_mirror_the_local_layout() {
        let keys = Keys::new("p");
        let account = "00112233445566778899aabbccddeeff";
        assert_eq!(
            keys.holder(ID, account).as_ref(),
            format!("p/refs/by-blob/01/{ID}/{account}")
        );
        assert!(keys.holder(ID, account).prefix_matches(&keys.holders(ID)));
        assert_eq!(
            keys.held_one(account, ID).as_ref(),
            format!("p/refs/by-account/{account}/{ID}")
        );
        assert_eq!(keys.aside(ID).as_ref(), format!("p/tmp/{ID}.released"));
    }
}
