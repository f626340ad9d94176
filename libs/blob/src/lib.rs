//! The content-addressed blob store: each raw message is stored once, under
//! the sha256 of its bytes, zstd-compressed.
//!
//! Layout: `<root>/<h0h1>/<h2h3>/<sha256 hex>.zst`, one zstd frame holding
//! the raw message (CRLF line ends, as received). A write goes to
//! `<root>/tmp/`, is fsynced, renamed into place and the folder fsynced, so
//! a crash leaves either the whole blob or none (a stray temporary file at
//! worst, which [`BlobStore::open`] removes). The same bytes always land on
//! the same path, so writing a blob twice is harmless and stores it once.
//!
//! Who still needs a blob is recorded beside it, in [`refs`]: one marker
//! per (blob, account), so deleting an account releases its references and
//! removes the blobs nobody else holds.
//!
//! Start with [`BlobStore`]; [`BlobConfig`] is its `[blobs]` config. The
//! LMTP server writes blobs, the scanner and the Maildir writer read them,
//! and the account deleter releases an account's references.

mod refs;

pub use refs::Released;

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `[blobs]`: where raw messages are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    /// The blob store's folder, shared by the LMTP servers and the
    /// scanners of one host.
    pub dir: String,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            dir: "run/blobs".into(),
        }
    }
}

/// Temporary files older than this are leftovers of a crash.
pub const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// The zstd level: 3 is zstd's default, fast enough for ingest.
const LEVEL: i32 = 3;

/// Blob store failures, each naming the file it was about.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("creating blob folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing blob {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading blob {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {id} not found at {path}")]
    NotFound { id: String, path: PathBuf },
    #[error("blob id {0:?} is not 64 lower-case hex digits")]
    BadId(String),
    #[error("compressing blob {id}: zstd error {code}")]
    Compress { id: String, code: usize },
    #[error("decompressing blob {path}: {reason}")]
    Decompress { path: PathBuf, reason: String },
    #[error("blob {path} is corrupt: its content hashes to {actual}")]
    Corrupt { path: PathBuf, actual: String },
}

/// A blob's id: the lower-case hex sha256 of its raw bytes.
pub fn blob_id(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// A content-addressed store of raw messages on local disk.
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

impl BlobStore {
    /// Open (and create) a store at `root`, removing temporary files a
    /// crash left more than [`STALE_TMP`] ago. Younger ones may be another
    /// process's write in progress: the LMTP servers and scanners of a host
    /// share the store.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
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
        let valid = id.len() == 64
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(BlobError::BadId(id.to_string()));
        }
        Ok(self
            .root
            .join(&id[0..2])
            .join(&id[2..4])
            .join(format!("{id}.zst")))
    }

    /// Store `raw` durably and return its id. Blocking: call it from a
    /// blocking thread.
    pub fn put(&self, raw: &[u8]) -> Result<String, BlobError> {
        let id = blob_id(raw);
        self.put_with_id(&id, raw)?;
        Ok(id)
    }

    /// Store `raw` whose sha256 the caller already computed as `id`.
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

    /// Read the raw message `id` back, checking its hash. Blocking.
    pub fn get(&self, id: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path_of(id)?;
        let compressed = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound {
                    id: id.to_string(),
                    path,
                })
            }
            Err(source) => return Err(BlobError::Read { path, source }),
        };
        let raw = decompress(&path, &compressed)?;
        let actual = blob_id(&raw);
        if actual != id {
            return Err(BlobError::Corrupt { path, actual });
        }
        Ok(raw)
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

fn compress(id: &str, raw: &[u8]) -> Result<Vec<u8>, BlobError> {
    let mut out = vec![0u8; zstd_safe::compress_bound(raw.len())];
    let written =
        zstd_safe::compress(&mut out[..], raw, LEVEL).map_err(|code| BlobError::Compress {
            id: id.to_string(),
            code,
        })?;
    out.truncate(written);
    Ok(out)
}

fn decompress(path: &Path, compressed: &[u8]) -> Result<Vec<u8>, BlobError> {
    let fail = |reason: String| BlobError::Decompress {
        path: path.to_path_buf(),
        reason,
    };
    // The frame header records the size: our writer always sets it.
    let size = match zstd_safe::get_frame_content_size(compressed) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(fail("frame does not record its size".into())),
        Err(_) => return Err(fail("not a zstd frame".into())),
    };
    let size = usize::try_from(size).map_err(|_| fail(format!("declared size {size} too big")))?;
    let mut out = vec![0u8; size];
    let n = zstd_safe::decompress(&mut out[..], compressed)
        .map_err(|code| fail(format!("zstd error {code}")))?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
