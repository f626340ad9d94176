//! References of the `dir` backend: which accounts still hold a blob.
//!
//! A message for N recipients is stored once; each recipient's account
//! holds a reference to it until the account is deleted. References are
//! empty marker files, two per (blob, account), so both questions are one
//! directory listing:
//!
//! ```text
//! <root>/refs/by-account/<account key>/<blob id>   what an account holds
//! <root>/refs/by-blob/<h0h1>/<blob id>/<account key>   who holds a blob
//! ```
//!
//! The account key is [`crate::account_key`], so any address is a safe
//! file name.
//!
//! Ordering that keeps a blob alive while anyone may still need it:
//! - the LMTP server adds the references *before* it stores the blob
//!   ([`crate::BlobStore::add_refs`] then
//!   [`crate::BlobStore::put_with_id`], which skips a blob that exists);
//! - [`DirStore::release_account`] removes the account's marker, then
//!   removes the blob's folder with `rmdir`, which fails while any other
//!   marker is in it; only then does it move the blob aside, look again for
//!   the folder (a delivery racing it has recreated it before checking the
//!   blob exists), and either put the blob back or unlink it.
//!
//! So a delivery whose marker was written before the second look keeps
//! the blob (put back), and one whose marker came after it finds the blob
//! gone and writes it again. The S3 backend keeps the same order
//! (`s3/refs.rs`).
//!
//! Markers are not fsynced: a marker lost in a power cut makes its blob
//! look unheld one deletion early, and by then the mail is in the Maildir.
//! Blobs that predate references (or whose markers were lost) are left to
//! the scheduled blob sweep.

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use super::DirStore;
use crate::{BlobError, Released};

impl DirStore {
    fn by_account(&self, key: &str) -> PathBuf {
        self.root().join("refs").join("by-account").join(key)
    }

    fn by_blob(&self, id: &str) -> PathBuf {
        self.root()
            .join("refs")
            .join("by-blob")
            .join(&id[..2])
            .join(id)
    }

    /// Record that each account (by key) holds blob `id`.
    pub fn add_refs(&self, id: &str, keys: &[String]) -> Result<(), BlobError> {
        let holders = self.by_blob(id);
        for key in keys {
            let mine = self.by_account(key);
            for (folder, name) in [(&holders, key.as_str()), (&mine, id)] {
                touch(folder, name)?;
            }
        }
        Ok(())
    }

    /// The blobs the account `key` holds, sorted.
    pub fn refs_of(&self, key: &str) -> Result<Vec<String>, BlobError> {
        let folder = self.by_account(key);
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(BlobError::Read {
                    path: folder,
                    source,
                })
            }
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| self.path_of(name).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Drop every reference the account `key` holds and remove the blobs
    /// nobody else holds. Idempotent: a second call finds nothing.
    pub fn release_account(&self, key: &str) -> Result<Released, BlobError> {
        let mut out = Released::default();
        for id in self.refs_of(key)? {
            out.references += 1;
            let holders = self.by_blob(&id);
            remove_file(&holders.join(key))?;
            if let Some(bytes) = self.remove_if_unheld(&id, &holders)? {
                out.blobs_removed += 1;
                out.bytes_removed += bytes;
            }
            remove_file(&self.by_account(key).join(&id))?;
        }
        match fs::remove_dir(self.by_account(key)) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty) => {}
            Err(source) => {
                return Err(BlobError::Write {
                    path: self.by_account(key),
                    source,
                })
            }
        }
        Ok(out)
    }

    /// Remove blob `id` if its holders' folder is empty; its size if so.
    fn remove_if_unheld(&self, id: &str, holders: &Path) -> Result<Option<u64>, BlobError> {
        match fs::remove_dir(holders) {
            Ok(()) => {}
            // Someone else holds it (or a delivery is adding a marker).
            Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BlobError::Write {
                    path: holders.to_path_buf(),
                    source,
                })
            }
        }
        let path = self.path_of(id)?;
        let aside = self.root().join("tmp").join(format!("{id}.released"));
        match fs::rename(&path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(BlobError::Write { path, source }),
        }
        if holders.exists() {
            // A delivery referenced it again after the rmdir: put it back.
            fs::rename(&aside, &path).map_err(|source| BlobError::Write { path, source })?;
            return Ok(None);
        }
        let bytes = fs::metadata(&aside).map(|m| m.len()).unwrap_or(0);
        remove_file(&aside)?;
        Ok(Some(bytes))
    }
}

fn touch(folder: &Path, name: &str) -> Result<(), BlobError> {
    let path = folder.join(name);
    // A release racing us may remove the folder between the two calls:
    // try again once with the folder recreated.
    for _ in 0..2 {
        fs::create_dir_all(folder).map_err(|source| BlobError::CreateDir {
            path: folder.to_path_buf(),
            source,
        })?;
        match fs::File::create(&path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => return Err(BlobError::Write { path, source }),
        }
    }
    Err(BlobError::Write {
        path,
        source: std::io::Error::new(ErrorKind::NotFound, "its folder keeps disappearing"),
    })
}

fn remove_file(path: &Path) -> Result<(), BlobError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BlobError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{account_key, BlobStore};

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs")).unwrap();
        (dir, store)
    }

    fn put_for(store: &BlobStore, raw: &[u8], accounts: &[&str]) -> String {
        let id = crate::blob_id(raw);
        store.add_refs(&id, accounts.iter().copied()).unwrap();
        store.put_with_id(&id, raw).unwrap();
        id
    }

    #[test]
    fn a_blob_goes_when_its_last_holder_is_released() {
        let (_dir, store) = store();
        let shared = put_for(&store, b"to both", &["a@x.test", "b@x.test"]);
        let own = put_for(&store, b"to a only", &["a@x.test"]);
        assert_eq!(store.refs_of("a@x.test").unwrap().len(), 2);

        let released = store.release_account("a@x.test").unwrap();
        assert_eq!(released.references, 2);
        assert_eq!(released.blobs_removed, 1, "{released:?}");
        assert!(released.bytes_removed > 0);
        assert!(!store.contains(&own));
        assert!(store.contains(&shared), "b still holds it");
        assert!(store.refs_of("a@x.test").unwrap().is_empty());

        assert_eq!(
            store.release_account("a@x.test").unwrap(),
            Released::default(),
            "releasing twice finds nothing"
        );
        let released = store.release_account("b@x.test").unwrap();
        assert_eq!((released.references, released.blobs_removed), (1, 1));
        assert!(!store.contains(&shared));
    }

    #[test]
    fn a_blob_held_again_after_the_check_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path().join("blobs")).unwrap();
        let id = crate::blob_id(b"raced");
        store.add_refs(&id, &[account_key("a@x.test")]).unwrap();
        store.put_with_id(&id, b"raced").unwrap();
        let holders = store.by_blob(&id);
        remove_file(&holders.join(account_key("a@x.test"))).unwrap();
        fs::remove_dir(&holders).unwrap();
        // A delivery references it again between the rmdir and the unlink.
        store.add_refs(&id, &[account_key("c@x.test")]).unwrap();
        fs::create_dir_all(&holders).unwrap();
        assert_eq!(store.remove_if_unheld(&id, &holders).unwrap(), None);
        assert!(store.contains(&id), "the blob must be put back");
    }

    #[test]
    fn odd_addresses_are_safe_file_names_and_bad_ids_are_refused() {
        let (_dir, store) = store();
        let id = put_for(&store, b"x", &["../../etc/passwd", "a/b@c"]);
        assert_eq!(store.refs_of("../../etc/passwd").unwrap(), vec![id.clone()]);
        assert!(matches!(
            store.add_refs("not-a-blob", ["a@x.test"]),
            Err(BlobError::BadId(_))
        ));
    }
}
