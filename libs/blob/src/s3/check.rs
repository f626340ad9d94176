//! The S3 backend's start: the key files, the bucket check, and what a
//! refusal says (the key and the value to fix, never a secret).

use std::{fs, path::Path as FsPath, time::SystemTime};

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use super::S3Store;
use crate::{BlobError, S3Config, STALE_TMP};

/// Read one key file: its one line, without the trailing newline. The
/// value is never part of an error.
pub(super) fn read_key(key: &'static str, path: &FsPath) -> Result<String, BlobError> {
    let refused = |problem: String| BlobError::Refused {
        key,
        value: path.display().to_string(),
        problem,
    };
    let text = fs::read_to_string(path).map_err(|e| refused(format!("cannot read it: {e}")))?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(refused("the file is empty".into()));
    }
    if line.chars().any(char::is_whitespace) {
        return Err(refused(
            "the key has white space or more than one line".into(),
        ));
    }
    Ok(line.to_string())
}

/// Whether a 404 was about the bucket, not the object (`NoSuchBucket`):
/// a bucket that went away is an outage, not a lost blob.
pub(super) fn no_such_bucket(e: &object_store::Error) -> bool {
    chain(e).contains("NoSuchBucket")
}

/// The error and its sources, each said once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// The refusal for a failed start: which key to fix, from S3's error code.
pub(super) fn refusal(cfg: &S3Config, e: &dyn std::error::Error) -> BlobError {
    refusal_of(cfg, &chain(e))
}

fn refusal_of(cfg: &S3Config, text: &str) -> BlobError {
    let at = &cfg.endpoint;
    let (key, value, problem) = if text.contains("NoSuchBucket") {
        (
            "blobs.s3.bucket",
            cfg.bucket.clone(),
            format!("no such bucket at {at}"),
        )
    } else if text.contains("InvalidAccessKeyId") {
        (
            "blobs.s3.access_key_id_file",
            cfg.access_key_id_file.display().to_string(),
            format!("{at} does not know the access key id in it (InvalidAccessKeyId)"),
        )
    } else if text.contains("SignatureDoesNotMatch") {
        (
            "blobs.s3.secret_access_key_file",
            cfg.secret_access_key_file.display().to_string(),
            format!("{at} refused the secret access key in it (SignatureDoesNotMatch)"),
        )
    } else if text.contains("AccessDenied") || text.contains("403 Forbidden") {
        (
            "blobs.s3.access_key_id_file",
            cfg.access_key_id_file.display().to_string(),
            format!(
                "the key may not list bucket {:?} at {at} (AccessDenied)",
                cfg.bucket
            ),
        )
    } else {
        (
            "blobs.s3.endpoint",
            cfg.endpoint.clone(),
            format!("bucket {:?} does not answer there: {text}", cfg.bucket),
        )
    };
    BlobError::Refused {
        key,
        value,
        problem,
    }
}

impl S3Store {
    /// A LIST of (at most one page of) the store's prefix: the bucket
    /// exists, the credentials sign, the endpoint answers.
    pub(super) fn check(&self, cfg: &S3Config) -> Result<(), BlobError> {
        let client = self.client.clone();
        let root = self.keys.root().clone();
        let first = self.bridge.run(async move {
            let prefix = (!root.as_ref().is_empty()).then_some(&root);
            client.list(prefix).next().await
        })?;
        match first {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(refusal(cfg, &e)),
        }
    }

    /// Remove what a release that crashed left in `tmp/` more than
    /// [`STALE_TMP`] ago, as the local store does at open. Best effort:
    /// a failure leaves them for the next start.
    pub(super) fn sweep_stale(&self) {
        let client = self.client.clone();
        let tmp = self.keys.tmp();
        let _ = self.bridge.run(async move {
            let found: Vec<_> = client.list(Some(&tmp)).try_collect().await?;
            for meta in found {
                let modified = SystemTime::from(meta.last_modified);
                let age = modified.elapsed().unwrap_or_default();
                if age > STALE_TMP {
                    client.delete(&meta.location).await?;
                }
            }
            Ok::<(), object_store::Error>(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> S3Config {
        S3Config {
            endpoint: "http://127.0.0.1:8333".into(),
            bucket: "mailfleet".into(),
            access_key_id_file: "/run/s3/access_key_id".into(),
            secret_access_key_file: "/run/s3/secret_access_key".into(),
            allow_http: true,
            ..S3Config::default()
        }
    }

    fn refused(text: &str) -> String {
        refusal_of(&cfg(), text).to_string()
    }

    #[test]
    fn each_s3_code_names_the_key_to_fix() {
        assert_eq!(
            refused("404 Not Found: <Error><Code>NoSuchBucket</Code></Error>"),
            "blobs.s3.bucket = \"mailfleet\": no such bucket at http://127.0.0.1:8333"
        );
        assert!(refused("403: <Code>InvalidAccessKeyId</Code>")
            .starts_with("blobs.s3.access_key_id_file = \"/run/s3/access_key_id\""));
        assert!(refused("403: <Code>SignatureDoesNotMatch</Code>")
            .starts_with("blobs.s3.secret_access_key_file = \"/run/s3/secret_access_key\""));
        assert!(
            refused("Server returned non-2xx status code: 403 Forbidden: ")
                .contains("may not list bucket")
        );
        let down = refused("error sending request: Connection refused (os error 111)");
        assert!(
            down.starts_with("blobs.s3.endpoint = \"http://127.0.0.1:8333\": bucket \"mailfleet\" does not answer there")
                && down.contains("Connection refused"),
            "{down}"
        );
    }

    #[test]
    fn key_files_give_one_line_and_never_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        fs::write(&file, "s3cr3t-value\n").unwrap();
        assert_eq!(read_key("k", &file).unwrap(), "s3cr3t-value");
        fs::write(&file, "s3cr3t-value\nsecond line\n").unwrap();
        let e = read_key("blobs.s3.secret_access_key_file", &file)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("blobs.s3.secret_access_key_file = \""), "{e}");
        assert!(!e.contains("s3cr3t"), "the secret leaked: {e}");
        fs::write(&file, "").unwrap();
        assert!(read_key("k", &file)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let missing = read_key("k", &dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("cannot read it"), "{missing}");
    }
}
