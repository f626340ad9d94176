//! The content-addressed blob store: each raw message is stored once, under
//! the sha256 of its bytes, zstd-compressed (one frame, CRLF line ends as
//! received). The same bytes always get the same name, so writing a blob
//! twice is harmless and stores it once; reading one back checks its hash.
//!
//! Two backends behind one [`BlobStore`], chosen by `[blobs] backend`
//! ([`BlobConfig`]):
//! - `dir` (`dir/mod.rs`, the default): `<dir>/<h0h1>/<h2h3>/<sha256>.zst` on
//!   a local folder, written to `tmp/`, fsynced and renamed into place;
//! - `s3` (`s3/mod.rs`): the same names as keys in an S3 bucket that several
//!   hosts share; a PUT that returned success is durable.
//!
//! Who still needs a blob is recorded beside it: one marker per (blob,
//! account), so deleting an account releases its references and removes
//! the blobs nobody else holds (`dir/refs.rs`, `s3/refs.rs`, with the same
//! ordering rules).
//!
//! The API is blocking, on both backends: call it from a blocking thread
//! (`spawn_blocking`, or a consumer's effect, which runs on its own
//! thread). The S3 backend drives its client on a runtime of its own, so
//! a call never needs (or panics in) the caller's runtime.
//!
//! Start with [`BlobStore`]. The LMTP server writes blobs, the scanner and
//! the Maildir writer read them, and the account deleter releases an
//! account's references.

mod config;
mod dir;
mod s3;

pub use config::{BlobBackend, BlobConfig, S3Config};
pub use dir::STALE_TMP;

use std::{fmt, path::PathBuf};

use sha2::{Digest, Sha256};

/// The zstd level: 3 is zstd's default, fast enough for ingest.
const LEVEL: i32 = 3;

/// Blob store failures, each naming the file or object it was about.
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
    /// The object store did not do `op` (an outage, a refusal): this may
    /// pass, unlike [`BlobError::NotFound`].
    #[error("S3 {op} {location}: {source}")]
    S3 {
        op: S3Op,
        location: String,
        /// Boxed: object_store's error is large, and every `Result` of
        /// the store would carry its size.
        #[source]
        source: Box<object_store::Error>,
    },
    /// The blob is not stored (it never was, or it was released).
    #[error("blob {id} not found at {location}")]
    NotFound { id: String, location: String },
    #[error("blob id {0:?} is not 64 lower-case hex digits")]
    BadId(String),
    #[error("compressing blob {id}: zstd error {code}")]
    Compress { id: String, code: usize },
    #[error("decompressing blob {location}: {reason}")]
    Decompress { location: String, reason: String },
    #[error("blob {location} is corrupt: its content hashes to {actual}")]
    Corrupt { location: String, actual: String },
    /// The store cannot start with this config: `key = value: problem`.
    #[error("{key} = {value:?}: {problem}")]
    Refused {
        key: &'static str,
        value: String,
        problem: String,
    },
    /// `[blobs]` has problems, each naming its key and value.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The S3 client's own runtime could not start, or stopped.
    #[error("the S3 client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A local path was asked of a store that keeps no local files.
    #[error("blob {0} has no local path: the store is {1}")]
    NotLocal(String, String),
}

/// An S3 operation, as [`BlobError::S3`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Op {
    Put,
    Get,
    Head,
    List,
    Delete,
    Copy,
}

impl fmt::Display for S3Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            S3Op::Put => "PUT",
            S3Op::Get => "GET",
            S3Op::Head => "HEAD",
            S3Op::List => "LIST",
            S3Op::Delete => "DELETE",
            S3Op::Copy => "COPY",
        })
    }
}

/// What releasing an account's references did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// References the account held.
    pub references: u64,
    /// Blobs nobody held any more, now removed.
    pub blobs_removed: u64,
    /// Their stored (compressed) size, bytes.
    pub bytes_removed: u64,
}

/// A blob's id: the lower-case hex sha256 of its raw bytes.
pub fn blob_id(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// A content-addressed store of raw messages, on a local folder or in an
/// S3 bucket. Every method blocks: see the crate doc.
pub struct BlobStore {
    backend: Backend,
}

enum Backend {
    Dir(dir::DirStore),
    S3(s3::S3Store),
}

impl fmt::Debug for BlobStore {
    /// The location only: the S3 client holds the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("at", &self.shown())
            .finish()
    }
}

impl BlobStore {
    /// Open (and create) a local store at `root`, removing temporary files
    /// a crash left more than [`STALE_TMP`] ago.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        Ok(Self {
            backend: Backend::Dir(dir::DirStore::open(root.into())?),
        })
    }

    /// Open the store `[blobs]` describes. For `s3` this reads the key
    /// files and checks that the bucket answers (a LIST); a problem is
    /// [`BlobError::Refused`], naming the key and value. Blocking.
    pub fn from_config(cfg: &BlobConfig) -> Result<Self, BlobError> {
        let backend = match (cfg.backend, &cfg.s3) {
            (BlobBackend::S3, Some(s3)) => Backend::S3(s3::S3Store::open(s3)?),
            (BlobBackend::S3, None) => {
                return Err(BlobError::Refused {
                    key: "blobs.backend",
                    value: "s3".into(),
                    problem: "no [blobs.s3] table".into(),
                })
            }
            (BlobBackend::Dir, _) => {
                Backend::Dir(dir::DirStore::open(cfg.dir.clone().into()).map_err(|e| {
                    BlobError::Refused {
                        key: "blobs.dir",
                        value: cfg.dir.clone(),
                        problem: e.to_string(),
                    }
                })?)
            }
        };
        Ok(Self { backend })
    }

    /// [`BlobStore::from_config`] on a blocking thread, for async callers.
    pub async fn connect(cfg: &BlobConfig) -> Result<Self, BlobError> {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Self::from_config(&cfg))
            .await
            .map_err(|e| BlobError::Runtime(std::io::Error::other(e)))?
    }

    /// Where the store is, for messages: a folder or `s3://bucket/prefix`.
    pub fn shown(&self) -> String {
        match &self.backend {
            Backend::Dir(d) => d.root().display().to_string(),
            Backend::S3(s) => s.shown().to_string(),
        }
    }

    /// Where the blob `id` lives on disk (the `dir` backend only).
    pub fn path_of(&self, id: &str) -> Result<PathBuf, BlobError> {
        match &self.backend {
            Backend::Dir(d) => d.path_of(id),
            Backend::S3(s) => Err(BlobError::NotLocal(id.to_string(), s.shown().to_string())),
        }
    }

    /// Store `raw` durably and return its id.
    pub fn put(&self, raw: &[u8]) -> Result<String, BlobError> {
        let id = blob_id(raw);
        self.put_with_id(&id, raw)?;
        Ok(id)
    }

    /// Store `raw` whose sha256 the caller already computed as `id`. When
    /// this returns `Ok` the blob is durable: fsynced, or PUT to S3.
    pub fn put_with_id(&self, id: &str, raw: &[u8]) -> Result<(), BlobError> {
        check_id(id)?;
        match &self.backend {
            Backend::Dir(d) => d.put_with_id(id, raw),
            Backend::S3(s) => s.put_with_id(id, raw),
        }
    }

    /// Whether the blob `id` is stored (false when the store cannot say).
    pub fn contains(&self, id: &str) -> bool {
        check_id(id).is_ok()
            && match &self.backend {
                Backend::Dir(d) => d.contains(id),
                Backend::S3(s) => s.contains(id),
            }
    }

    /// Read the raw message `id` back, checking its hash. A blob that is
    /// not stored is [`BlobError::NotFound`]; a store that does not answer
    /// is another error (retry).
    pub fn get(&self, id: &str) -> Result<Vec<u8>, BlobError> {
        check_id(id)?;
        match &self.backend {
            Backend::Dir(d) => d.get(id),
            Backend::S3(s) => s.get(id),
        }
    }

    /// Record that each of `accounts` holds blob `id`. Call it before
    /// storing the blob (see the ordering rules of the refs modules).
    pub fn add_refs<'a>(
        &self,
        id: &str,
        accounts: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), BlobError> {
        check_id(id)?;
        let keys: Vec<String> = accounts.into_iter().map(account_key).collect();
        match &self.backend {
            Backend::Dir(d) => d.add_refs(id, &keys),
            Backend::S3(s) => s.add_refs(id, &keys),
        }
    }

    /// The blobs `account` holds, sorted.
    pub fn refs_of(&self, account: &str) -> Result<Vec<String>, BlobError> {
        let key = account_key(account);
        match &self.backend {
            Backend::Dir(d) => d.refs_of(&key),
            Backend::S3(s) => s.refs_of(&key),
        }
    }

    /// Drop every reference `account` holds and remove the blobs nobody
    /// else holds. Idempotent: a second call finds nothing.
    pub fn release_account(&self, account: &str) -> Result<Released, BlobError> {
        let key = account_key(account);
        match &self.backend {
            Backend::Dir(d) => d.release_account(&key),
            Backend::S3(s) => s.release_account(&key),
        }
    }
}

/// Refuse anything but 64 lower-case hex digits: an id becomes a file
/// name or a key, so `../` must never get through.
pub(crate) fn check_id(id: &str) -> Result<(), BlobError> {
    let valid = id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(())
    } else {
        Err(BlobError::BadId(id.to_string()))
    }
}

/// The name-safe key of an account: the first 32 hex digits of its
/// sha256, so any address is a safe file name and key part.
pub(crate) fn account_key(account: &str) -> String {
    hex::encode(&Sha256::digest(account.as_bytes())[..16])
}

pub(crate) fn compress(id: &str, raw: &[u8]) -> Result<Vec<u8>, BlobError> {
    let mut out = vec![0u8; zstd_safe::compress_bound(raw.len())];
    let written =
        zstd_safe::compress(&mut out[..], raw, LEVEL).map_err(|code| BlobError::Compress {
            id: id.to_string(),
            code,
        })?;
    out.truncate(written);
    Ok(out)
}

/// Decompress the blob `id` read from `location` and check its hash.
pub(crate) fn decode(id: &str, location: &str, compressed: &[u8]) -> Result<Vec<u8>, BlobError> {
    let raw = decompress(location, compressed)?;
    let actual = blob_id(&raw);
    if actual != id {
        return Err(BlobError::Corrupt {
            location: location.to_string(),
            actual,
        });
    }
    Ok(raw)
}

fn decompress(location: &str, compressed: &[u8]) -> Result<Vec<u8>, BlobError> {
    let fail = |reason: String| BlobError::Decompress {
        location: location.to_string(),
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
    fn ids_are_checked_before_any_io() {
        assert!(check_id(&"a".repeat(64)).is_ok());
        for bad in ["../../etc/passwd", &"A".repeat(64), &"a".repeat(63), ""] {
            assert!(matches!(check_id(bad), Err(BlobError::BadId(_))), "{bad:?}");
        }
    }

    #[test]
    fn account_keys_are_short_hex_whatever_the_address() {
        let key = account_key("../../etc/passwd");
        assert_eq!(key.len(), 32);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(key, account_key("a@x.test"));
    }

    #[test]
    fn a_frame_round_trips_and_a_wrong_hash_is_corrupt() {
        let raw = b"Subject: hi\r\n\r\nbody\r\n".repeat(50);
        let id = blob_id(&raw);
        let frame = compress(&id, &raw).unwrap();
        assert!(frame.len() < raw.len());
        assert_eq!(decode(&id, "here", &frame).unwrap(), raw);
        let other = blob_id(b"other");
        assert!(matches!(
            decode(&other, "here", &frame),
            Err(BlobError::Corrupt { .. })
        ));
        assert!(matches!(
            decode(&id, "here", b"not zstd"),
            Err(BlobError::Decompress { .. })
        ));
    }
}
