//! The mail half of `mailfleet account migrate`: copy an account's
//! Maildir tree to the target mail root, file by file, so that a repeated
//! run keeps what an earlier one copied.

use std::{
    fs::{self, File},
    os::unix::fs::chown,
    path::Path,
};

use crate::error::DirectoryError;

/// What was copied from the Maildir.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct MailCopy {
    /// Files in `new/` and `cur/` of every folder.
    pub messages: i64,
    /// Their bytes on disk.
    pub bytes: i64,
}

/// Copy a Maildir tree, without Dovecot's `dovecot*` index, cache and uid
/// list files and without `tmp/` contents (unfinished deliveries). A file
/// already at the target with the same size is kept. Each file goes in
/// under a dot name (which Dovecot skips), is synced, then renamed.
pub(super) fn copy_maildir(
    from: &Path,
    to: &Path,
    owner: (Option<u32>, Option<u32>),
) -> Result<MailCopy, DirectoryError> {
    let mut copy = MailCopy::default();
    if !from.is_dir() {
        eprintln!("note: no Maildir at {}: no mail to copy", from.display());
        return Ok(copy);
    }
    copy_dir(from, to, owner, &mut copy)?;
    Ok(copy)
}

fn copy_dir(
    from: &Path,
    to: &Path,
    owner: (Option<u32>, Option<u32>),
    copy: &mut MailCopy,
) -> Result<(), DirectoryError> {
    fs::create_dir_all(to).map_err(io("creating", to))?;
    own(to, owner)?;
    if from.file_name().is_some_and(|n| n == "tmp") {
        return Ok(());
    }
    let is_mail = from.file_name().is_some_and(|n| n == "new" || n == "cur");
    let entries = fs::read_dir(from).map_err(io("reading", from))?;
    for entry in entries {
        let entry = entry.map_err(io("reading", from))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("dovecot") {
            continue;
        }
        let kind = entry.file_type().map_err(io("reading", &entry.path()))?;
        let target = to.join(&name);
        if kind.is_dir() {
            copy_dir(&entry.path(), &target, owner, copy)?;
        } else if kind.is_file() {
            let bytes = copy_file(&entry.path(), &target, owner)?;
            if is_mail {
                copy.messages += 1;
                copy.bytes += bytes as i64;
            }
        }
    }
    File::open(to)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", to))
}

/// Copy one file (unless the target has it at the same size); its size.
fn copy_file(
    from: &Path,
    to: &Path,
    owner: (Option<u32>, Option<u32>),
) -> Result<u64, DirectoryError> {
    let size = fs::metadata(from).map_err(io("reading", from))?.len();
    if fs::metadata(to).is_ok_and(|m| m.len() == size) {
        return Ok(size);
    }
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = to.with_file_name(format!(".{name}.migrating"));
    let failed = |source| DirectoryError::CopyFile {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    };
    fs::copy(from, &partial).map_err(failed)?;
    File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(failed)?;
    own(&partial, owner)?;
    fs::rename(&partial, to).map_err(failed)?;
    Ok(size)
}

/// Give a path to the mail user (Dovecot must be able to index it).
fn own(path: &Path, (uid, gid): (Option<u32>, Option<u32>)) -> Result<(), DirectoryError> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    chown(path, uid, gid).map_err(io("chown", path))
}

/// An I/O failure of `op` on `path`.
fn io<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> DirectoryError + 'a {
    move |source| DirectoryError::MaildirIo {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maildir_copies_without_dovecot_files_or_tmp() {
        // Under the repo's run/ folder, never /tmp.
        let manifest = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        let dir = Path::new(&manifest)
            .join("../../run/tests")
            .join(format!("migrate-unit-{:08x}", rand::random::<u32>()));
        let (from, to) = (dir.join("a/Maildir"), dir.join("b/Maildir"));
        for sub in ["new", "cur", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"] {
            fs::create_dir_all(from.join(sub)).unwrap();
        }
        fs::write(from.join("new/1.M1.h,S=5"), b"hello").unwrap();
        fs::write(from.join("cur/2.M2.h,S=3:2,S"), b"abc").unwrap();
        fs::write(from.join(".Sent/cur/3.M3.h"), b"sent!!").unwrap();
        fs::write(from.join("tmp/4.M4.h"), b"partial").unwrap();
        for f in [
            "dovecot.index",
            "dovecot.index.cache",
            "dovecot-uidlist",
            ".Sent/dovecot.index.log",
        ] {
            fs::write(from.join(f), b"index").unwrap();
        }
        fs::write(from.join("subscriptions"), b"Sent\n").unwrap();
        let copy = copy_maildir(&from, &to, (None, None)).unwrap();
        assert_eq!(
            copy,
            MailCopy {
                messages: 3,
                bytes: 14
            }
        );
        assert!(to.join(".Sent/cur/3.M3.h").is_file() && to.join("subscriptions").is_file());
        assert!(to.join("tmp").is_dir() && !to.join("tmp/4.M4.h").exists());
        assert!(!to.join("dovecot.index").exists() && !to.join("dovecot-uidlist").exists());
        assert!(!to.join(".Sent/dovecot.index.log").exists());
        // Again: the same counts, nothing doubled.
        assert_eq!(copy_maildir(&from, &to, (None, None)).unwrap(), copy);
        let missing = copy_maildir(&dir.join("none"), &to, (None, None)).unwrap();
        assert_eq!(missing, MailCopy::default());
        fs::remove_dir_all(&dir).unwrap();
    }
}
