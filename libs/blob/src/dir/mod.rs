//! The `dir` backend: blobs as files on a local folder.
//!
//! Layout: `<root>/<h0h1>/<h2h3>/<sha256 hex>.zst`. A write goes to
//! `<root>/tmp/`, is fsynced, renamed into place and the folder fsynced, so
//! a crash leaves either the whole blob or none (a stray temporary file at
//! worst, which [`DirStore::open`] removes). References: [`refs`].

mod refs;

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{check_id, compress, decode, BlobError};

/// Temporary files older than this are leftovers of a crash.
pub const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// A content-addressed store of raw messages on local disk.
#[derive(Debug)]
pub(crate) struct DirStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

impl DirStore {
    /// Open (and create) a store at `root`, removing temporary files a
    /// crash left more than [`STALE_TMP`] ago. Younger ones may be another
    /// process's write in progress: the LMTP servers and scanners of a host
    /// share the store.
    pub fn open(root: PathBuf) -> Result<Self, BlobError> {
        let tmp = root.join("tmp");
        create_dir(&tmp)?;
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if age.is_some_and(|age| age > STALE_TMP) {
                    // An unfinished write of a dead process: never announced.
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(Self {
            root,
            tmp,
            counter: AtomicU64::new(0),
        })
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `id` lives.
    pub fn path_of(&self, id: &str) -> Result<PathBuf, BlobError> {
        check_id(id)?;
        Ok(self
            .root
            .join(&id[0..2])
            .join(&id[2..4])
            .join(format!("{id}.zst")))
    }

    /// Store `raw` whose sha256 is `id`: fsynced when this returns.
    pub fn put_with_id(&self, id: &str, raw: &[u8]) -> Result<(), BlobError> {
        let path = self.path_of(id)?;
        if path.exists() {
            return Ok(()); // content-addressed: the same bytes are already there
        }
        let folder = path.parent().unwrap_or(&self.root);
        if !folder.is_dir() {
            create_dir(folder)?;
            // A new shard folder must survive a power cut too: sync the
            // folders that now name it.
            for parent in [folder.parent(), Some(self.root.as_path())]
                .into_iter()
                .flatten()
            {
                sync_dir(parent).map_err(|source| BlobError::Write {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
        }
        let compressed = compress(id, raw)?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{id}.{}.{n}", std::process::id()));
        write_synced(&tmp, &compressed).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            BlobError::Write {
                path: tmp.clone(),
                source,
            }
        })?;
        fs::rename(&tmp, &path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            BlobError::Write {
                path: path.clone(),
                source,
            }
        })?;
        sync_dir(folder).map_err(|source| BlobError::Write {
            path: folder.to_path_buf(),
            source,
        })
    }

    /// Whether the blob `id` is stored.
    pub fn contains(&self, id: &str) -> bool {
        self.path_of(id).is_ok_and(|p| p.exists())
    }

    /// Read the raw message `id` back, checking its hash.
    pub fn get(&self, id: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path_of(id)?;
        let location = path.display().to_string();
        let compressed = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound {
                    id: id.to_string(),
                    location,
                })
            }
            Err(source) => return Err(BlobError::Read { path, source }),
        };
        decode(id, &location, &compressed)
    }
}

fn create_dir(path: &Path) -> Result<(), BlobError> {
    fs::create_dir_all(path).map_err(|source| BlobError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// fsync a folder, so that a rename into it survives a power cut.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{blob_id, BlobStore};

    #[test]
    fn stores_once_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let raw = b"Subject: hi\r\n\r\nbody\r\n".repeat(100);
        let id = store.put(&raw).unwrap();
        assert_eq!(id, blob_id(&raw));
        assert_eq!(store.put(&raw).unwrap(), id, "same bytes, same id");
        assert_eq!(store.get(&id).unwrap(), raw);
        let path = store.path_of(&id).unwrap();
        assert!(path.starts_with(dir.path().join(&id[0..2]).join(&id[2..4])));
        assert!(
            fs::metadata(&path).unwrap().len() < raw.len() as u64,
            "compressed"
        );
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn empty_message_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let id = store.put(b"").unwrap();
        assert_eq!(store.get(&id).unwrap(), b"");
    }

    #[test]
    fn bad_ids_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let err = store.get("../../etc/passwd").unwrap_err().to_string();
        assert!(err.contains("\"../../etc/passwd\""), "{err}");
        let missing = "a".repeat(64);
        assert!(matches!(
            store.get(&missing),
            Err(BlobError::NotFound { .. })
        ));
    }

    #[test]
    fn corruption_is_detected_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let id = store.put(b"original").unwrap();
        let other = compress("x", b"tampered").unwrap();
        fs::write(store.path_of(&id).unwrap(), other).unwrap();
        assert!(matches!(store.get(&id), Err(BlobError::Corrupt { .. })));
    }

    #[test]
    fn only_stale_temporary_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let (stale, live) = (
            dir.path().join("tmp/crashed"),
            dir.path().join("tmp/in-progress"),
        );
        fs::write(&stale, b"x").unwrap();
        fs::write(&live, b"x").unwrap();
        let old = std::time::SystemTime::now() - STALE_TMP - std::time::Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        BlobStore::open(dir.path()).unwrap();
        assert!(!stale.exists(), "a crash's leftover goes");
        assert!(live.exists(), "another process's write in progress stays");
    }
}
