//! Maildir as Dovecot reads it: `<root>/<domain>/<user>/Maildir/` is INBOX,
//! Maildir++ folders are `.<Name>/` inside it, each with `tmp/ new/ cur/`.
//!
//! A delivery writes `tmp/<name>`, fsyncs it, renames it into `new/` and
//! fsyncs `new/`: a crash leaves the whole file in `new/` or none there
//! (a stray file in `tmp/` at worst, which Dovecot itself cleans after
//! 36 hours). File names follow Dovecot's
//! `<secs>.<unique>.<host>,S=<size>,W=<vsize>`; the unique part is derived
//! from the delivery id, so a replayed delivery finds its own file.

use std::{
    fs::{self, File},
    io::Write,
    os::unix::fs::chown,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::StorageError;

/// Who owns the files: Dovecot's mail user must be able to move and index them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A mail root.
#[derive(Debug, Clone)]
pub struct Maildirs {
    root: PathBuf,
    host: String,
    owner: Owner,
    compress: bool,
}

/// A message as it will be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// `<secs>.M<hex>.<host>`: what stays the same when Dovecot adds flags.
    pub base: String,
    /// The full name in `new/`, with `,S=` and `,W=`.
    pub full: String,
}

impl Maildirs {
    pub fn new(root: impl Into<PathBuf>, host: &str, owner: Owner, compress: bool) -> Self {
        // ':' and '/' separate flags and paths in Maildir names.
        let host = host.replace(['/', ':', ','], "_");
        Self {
            root: root.into(),
            host,
            owner,
            compress,
        }
    }

    /// The Maildir of `account` (`<root>/<domain>/<user>/Maildir`).
    pub fn mailbox(&self, account: &str) -> Result<PathBuf, StorageError> {
        // Dovecot lowercases logins and LMTP recipients: so do the paths.
        let lower = account.to_lowercase();
        let (user, domain) = lower
            .rsplit_once('@')
            .filter(|(u, d)| path_safe(u) && path_safe(d))
            .ok_or_else(|| StorageError::BadAccount(account.to_string()))?;
        Ok(self.root.join(domain).join(user).join("Maildir"))
    }

    /// The folder's directory: INBOX is the Maildir itself, others `.<Name>`.
    pub fn folder(&self, account: &str, folder: &str) -> Result<PathBuf, StorageError> {
        let mailbox = self.mailbox(account)?;
        if folder.eq_ignore_ascii_case("INBOX") {
            return Ok(mailbox);
        }
        if !path_safe(folder) || folder.contains('.') {
            return Err(StorageError::BadFolder(folder.to_string()));
        }
        Ok(mailbox.join(format!(".{folder}")))
    }

    /// The file name for a delivery: deterministic in (delivery, time, size).
    pub fn file_name(&self, delivery_id: &str, received_ms: i64, raw: &[u8]) -> FileName {
        let unique = &hex::encode(Sha256::digest(delivery_id.as_bytes()))[..16];
        let base = format!("{}.M{unique}.{}", received_ms.div_euclid(1000), self.host);
        let full = format!("{base},S={},W={}", raw.len(), virtual_size(raw));
        FileName { base, full }
    }

    /// Write `raw` into `folder` of `account` unless that delivery's file is
    /// already there: in `new/`, or (when `look_in_cur`) in `cur/`, where
    /// Dovecot moves it with flags once a client saw it. Looking in `cur/`
    /// reads the whole folder, so callers do it only for replays of older
    /// deliveries. Returns the bytes on disk, or `None` if present.
    pub fn deliver(
        &self,
        account: &str,
        folder: &str,
        name: &FileName,
        raw: &[u8],
        look_in_cur: bool,
    ) -> Result<Option<u64>, StorageError> {
        let dir = self.folder(account, folder)?;
        self.ensure(account, &dir, folder)?;
        let target = dir.join("new").join(&name.full);
        if target.exists() || (look_in_cur && in_cur(&dir, &name.base)) {
            return Ok(None);
        }
        let bytes = if self.compress {
            compress(&target, raw)?
        } else {
            raw.to_vec()
        };
        let tmp = dir.join("tmp").join(&name.full);
        let write = |path: &Path| -> std::io::Result<()> {
            let mut file = File::create(path)?;
            file.write_all(&bytes)?;
            file.sync_all()
        };
        write(&tmp).map_err(|source| StorageError::Write {
            path: tmp.clone(),
            source,
        })?;
        self.own(&tmp)?;
        fs::rename(&tmp, &target).map_err(|source| StorageError::Write {
            path: target.clone(),
            source,
        })?;
        let new = dir.join("new");
        File::open(&new)
            .and_then(|d| d.sync_all())
            .map_err(|source| StorageError::Write { path: new, source })?;
        Ok(Some(bytes.len() as u64))
    }

    /// Remove the messages of `folder` whose name time is before
    /// `before_secs` (all when `None`), from `new/` and `cur/`. Returns
    /// (base name, size from `S=`) of each file removed.
    /// Remove the account's whole home (`<root>/<domain>/<user>`: the
    /// Maildir and Dovecot's index and sieve files beside it). Returns the
    /// files and bytes removed; a missing home removes nothing. Files are
    /// counted and removed one by one, so a crash half-way leaves a smaller
    /// home that a second call finishes.
    pub fn remove_home(&self, account: &str) -> Result<(u64, u64), StorageError> {
        let home = match self.mailbox(account)?.parent() {
            Some(home) => home.to_path_buf(),
            None => return Err(StorageError::BadAccount(account.to_string())),
        };
        let (mut files, mut bytes) = (0, 0);
        remove_tree(&home, &mut files, &mut bytes)?;
        Ok((files, bytes))
    }

    pub fn purge(
        &self,
        account: &str,
        folder: &str,
        before_secs: Option<i64>,
    ) -> Result<Vec<(String, u64)>, StorageError> {
        let dir = self.folder(account, folder)?;
        let mut removed = Vec::new();
        for sub in ["new", "cur"] {
            let path = dir.join(sub);
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(StorageError::Read { path, source }),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let parsed = parse_name(&name);
                // A name without its delivery time (not written by a
                // Maildir-aware program) is dated by its modification time.
                let secs = parsed.secs.or_else(|| {
                    let modified = entry.metadata().ok()?.modified().ok()?;
                    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
                    i64::try_from(since.as_secs()).ok()
                });
                if before_secs.is_some_and(|b| secs.is_none_or(|s| s >= b)) {
                    continue;
                }
                let size = parsed
                    .size
                    .or_else(|| entry.metadata().ok().map(|m| m.len()))
                    .unwrap_or(0);
                fs::remove_file(entry.path()).map_err(|source| StorageError::Remove {
                    path: entry.path(),
                    source,
                })?;
                removed.push((parsed.base.to_string(), size));
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// Create the folder's `tmp/ new/ cur/` (and the mailbox's parents),
    /// owned by the mail user.
    fn ensure(&self, account: &str, dir: &Path, folder: &str) -> Result<(), StorageError> {
        if dir.join("new").is_dir() {
            return Ok(());
        }
        let mailbox = self.mailbox(account)?;
        if dir != mailbox {
            // A folder lives inside a mailbox that must exist as INBOX too.
            self.ensure(account, &mailbox, "INBOX")?;
        }
        let domain_dir = mailbox
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        for sub in ["tmp", "new", "cur"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|source| StorageError::Create {
                path: path.clone(),
                source,
            })?;
        }
        if !folder.eq_ignore_ascii_case("INBOX") {
            // Maildir++: marks a folder, not a mailbox.
            let marker = dir.join("maildirfolder");
            File::create(&marker).map_err(|source| StorageError::Create {
                path: marker.clone(),
                source,
            })?;
            self.own(&marker)?;
        }
        // Own every level from the domain down, so Dovecot can add its files.
        for sub in ["tmp", "new", "cur"] {
            self.own(&dir.join(sub))?;
        }
        for level in dir.ancestors() {
            self.own(level)?;
            if Some(level) == domain_dir.as_deref() {
                break;
            }
        }
        Ok(())
    }

    fn own(&self, path: &Path) -> Result<(), StorageError> {
        if self.owner.uid.is_none() && self.owner.gid.is_none() {
            return Ok(());
        }
        chown(path, self.owner.uid, self.owner.gid).map_err(|source| StorageError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Whether `cur/` holds a file with this base name (any flags).
fn in_cur(dir: &Path, base: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir.join("cur")) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| parse_name(&e.file_name().to_string_lossy()).base == base)
}

/// Dovecot's `W=`: the size with every line end as CRLF.
/// Remove `dir` and everything under it, counting regular files. Symlinks
/// are removed, never followed.
fn remove_tree(dir: &Path, files: &mut u64, bytes: &mut u64) -> Result<(), StorageError> {
    let read = |source| StorageError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(read(e)),
    };
    for entry in entries {
        let entry = entry.map_err(read)?;
        let path = entry.path();
        let meta = entry.file_type().map_err(read)?;
        if meta.is_dir() {
            remove_tree(&path, files, bytes)?;
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                *files += 1;
                *bytes += size;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StorageError::Remove { path, source }),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Remove {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

pub fn virtual_size(raw: &[u8]) -> usize {
    let bare_lf = raw
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
        .count();
    raw.len() + bare_lf
}

/// The parts of a Maildir file name we use.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedName<'a> {
    /// Up to the first `,` or `:`.
    pub base: &'a str,
    /// The leading `<secs>.`.
    pub secs: Option<i64>,
    /// `,S=<size>`.
    pub size: Option<u64>,
}

/// Read a Maildir file name.
pub fn parse_name(name: &str) -> ParsedName<'_> {
    let base_end = name.find([',', ':']).unwrap_or(name.len());
    let base = &name[..base_end];
    let secs = base.split('.').next().and_then(|s| s.parse().ok());
    let info = name[base_end..].split(':').next().unwrap_or("");
    let size = info
        .split(',')
        .find_map(|f| f.strip_prefix("S="))
        .and_then(|s| s.parse().ok());
    ParsedName { base, secs, size }
}

fn path_safe(part: &str) -> bool {
    !part.is_empty() && !part.starts_with('.') && !part.contains(['/', '\0', '\\']) && part != "~"
}

fn compress(path: &Path, raw: &[u8]) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![0u8; zstd_safe::compress_bound(raw.len())];
    let n = zstd_safe::compress(&mut out[..], raw, 3).map_err(|code| StorageError::Compress {
        path: path.to_path_buf(),
        code,
    })?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maildirs(root: &Path) -> Maildirs {
        Maildirs::new(root, "mx1", Owner::default(), false)
    }

    #[test]
    fn layout_and_names() {
        let m = maildirs(Path::new("/m"));
        assert_eq!(
            m.mailbox("bob@example.org").unwrap(),
            Path::new("/m/example.org/bob/Maildir")
        );
        assert_eq!(
            m.folder("bob@example.org", "Spam").unwrap(),
            Path::new("/m/example.org/bob/Maildir/.Spam")
        );
        assert_eq!(
            m.folder("bob@example.org", "inbox").unwrap(),
            Path::new("/m/example.org/bob/Maildir")
        );
        for bad in ["bob", "../x@example.org", "bob@..", "a/b@example.org"] {
            assert!(m.mailbox(bad).is_err(), "{bad}");
        }
        assert!(m.folder("bob@example.org", "../x").is_err());
        let name = m.file_name("lmtp:ab:bob@example.org", 1_700_000_000_999, b"a\r\nb\n");
        assert!(name.base.starts_with("1700000000.M"), "{name:?}");
        assert!(name.full.ends_with(".mx1,S=5,W=6"), "{name:?}");
        assert_eq!(
            name,
            m.file_name("lmtp:ab:bob@example.org", 1_700_000_000_999, b"a\r\nb\n")
        );
    }

    #[test]
    fn removing_a_home_counts_its_files_and_spares_the_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let m = maildirs(dir.path());
        let name = m.file_name("d1", 1_700_000_000_000, b"hello");
        m.deliver("bob@example.org", "INBOX", &name, b"hello", false)
            .unwrap();
        m.deliver("bobby@example.org", "INBOX", &name, b"hello", false)
            .unwrap();
        let home = dir.path().join("example.org/bob");
        std::fs::write(home.join("dovecot.index.log"), b"0123").unwrap();
        std::os::unix::fs::symlink("/etc", home.join("Maildir/link")).unwrap();
        let (files, bytes) = m.remove_home("bob@example.org").unwrap();
        assert_eq!(
            (files, bytes),
            (3, 5 + 4 + 4),
            "mail, index and the link itself"
        );
        assert!(!home.exists());
        assert!(Path::new("/etc/hostname").exists() || Path::new("/etc").is_dir());
        assert!(dir.path().join("example.org/bobby/Maildir").is_dir());
        assert_eq!(
            m.remove_home("bob@example.org").unwrap(),
            (0, 0),
            "again: nothing"
        );
        assert!(m.remove_home("../x@example.org").is_err());
    }

    #[test]
    fn names_parse_with_and_without_flags() {
        let p = parse_name("1700000000.Mab.mx1,S=5,W=6:2,S");
        assert_eq!(
            (p.base, p.secs, p.size),
            ("1700000000.Mab.mx1", Some(1_700_000_000), Some(5))
        );
        let p = parse_name("garbage");
        assert_eq!((p.base, p.secs, p.size), ("garbage", None, None));
    }

    #[test]
    fn delivery_is_atomic_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let m = maildirs(dir.path());
        let raw = b"Subject: x\r\n\r\nhi\r\n";
        let name = m.file_name("d1", 1_000, raw);
        assert_eq!(
            m.deliver("bob@example.org", "INBOX", &name, raw, true)
                .unwrap(),
            Some(raw.len() as u64)
        );
        assert_eq!(
            m.deliver("bob@example.org", "INBOX", &name, raw, true)
                .unwrap(),
            None,
            "replay"
        );
        let inbox = dir.path().join("example.org/bob/Maildir");
        assert_eq!(fs::read(inbox.join("new").join(&name.full)).unwrap(), raw);
        assert_eq!(fs::read_dir(inbox.join("tmp")).unwrap().count(), 0);
        m.deliver("bob@example.org", "Spam", &name, raw, false)
            .unwrap();
        assert!(inbox.join(".Spam/maildirfolder").exists());
    }

    #[test]
    fn purge_removes_only_old_files_of_one_folder() {
        let dir = tempfile::tempdir().unwrap();
        let m = maildirs(dir.path());
        for (id, secs) in [("old", 100), ("new", 900)] {
            let raw = id.as_bytes();
            m.deliver(
                "bob@example.org",
                "Trash",
                &m.file_name(id, secs * 1000, raw),
                raw,
                false,
            )
            .unwrap();
        }
        m.deliver(
            "bob@example.org",
            "INBOX",
            &m.file_name("inbox", 0, b"x"),
            b"x",
            false,
        )
        .unwrap();
        // Dovecot moved one to cur/ with flags.
        let trash = dir.path().join("example.org/bob/Maildir/.Trash");
        let old = m.file_name("old", 100_000, b"old");
        fs::rename(
            trash.join("new").join(&old.full),
            trash.join("cur").join(format!("{}:2,S", old.full)),
        )
        .unwrap();
        let again = m
            .deliver("bob@example.org", "Trash", &old, b"old", true)
            .unwrap();
        assert_eq!(again, None, "a replay finds the file in cur/");
        let removed = m.purge("bob@example.org", "Trash", Some(500)).unwrap();
        assert_eq!(removed, vec![(old.base.clone(), 3)]);
        assert_eq!(m.purge("bob@example.org", "Trash", None).unwrap().len(), 1);
        assert!(
            m.purge("bob@example.org", "Spam", None).unwrap().is_empty(),
            "no such folder yet"
        );
        let inbox = dir.path().join("example.org/bob/Maildir/new");
        assert_eq!(fs::read_dir(inbox).unwrap().count(), 1, "INBOX untouched");
        // A name without a time is dated by its modification time (now).
        fs::write(trash.join("cur/foreign"), b"abcd").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(m
            .purge("bob@example.org", "Trash", Some(now - 60))
            .unwrap()
            .is_empty());
        assert_eq!(
            m.purge("bob@example.org", "Trash", Some(now + 60)).unwrap(),
            vec![("foreign".to_string(), 4)]
        );
    }
}
