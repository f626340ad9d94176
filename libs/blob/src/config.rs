//! `[blobs]`: which backend keeps the raw messages, and its settings.
//!
//! The checks here need no I/O; [`crate::BlobStore::from_config`] then
//! reads the key files and asks the bucket, and refuses to start with the
//! key and value named.

use std::path::PathBuf;

use serde::Deserialize;

/// `[blobs]`: where raw messages are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    /// `dir` (a local folder, the default) or `s3` (a bucket that several
    /// hosts share).
    pub backend: BlobBackend,
    /// The `dir` backend's folder, shared by the LMTP servers and the
    /// scanners of one host.
    pub dir: String,
    /// `[blobs.s3]`: the `s3` backend's bucket and credentials.
    pub s3: Option<S3Config>,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            backend: BlobBackend::Dir,
            dir: "run/blobs".into(),
            s3: None,
        }
    }
}

/// `blobs.backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobBackend {
    /// A local folder (`blobs.dir`).
    #[default]
    Dir,
    /// An S3-compatible object store (`[blobs.s3]`).
    S3,
}

/// `[blobs.s3]`: an S3-compatible bucket. The credentials are read from
/// files, so that they are in no config file, environment or log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The service's URL, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://127.0.0.1:8333` (SeaweedFS). Buckets are addressed in the
    /// path (`<endpoint>/<bucket>/<key>`), which every S3 server serves.
    pub endpoint: String,
    /// The bucket; it must exist (the store never creates it).
    pub bucket: String,
    /// The region requests are signed for (`us-east-1` for most
    /// self-hosted servers).
    pub region: String,
    /// A file holding the access key id (one trailing newline is dropped).
    pub access_key_id_file: PathBuf,
    /// A file holding the secret access key, readable by the service only.
    pub secret_access_key_file: PathBuf,
    /// Allow a plain `http://` endpoint: for a server on loopback only.
    pub allow_http: bool,
    /// A key prefix inside the bucket (no leading or trailing `/`), so
    /// that several stores can share one bucket; empty for none.
    pub prefix: String,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key_id_file: PathBuf::new(),
            secret_access_key_file: PathBuf::new(),
            allow_http: false,
            prefix: String::new(),
        }
    }
}

impl BlobConfig {
    /// Every problem of `[blobs]`, each naming its key and value.
    pub fn problems(&self) -> Vec<String> {
        match (self.backend, &self.s3) {
            (BlobBackend::Dir, _) if self.dir.is_empty() => vec!["blobs.dir is empty".into()],
            (BlobBackend::Dir, _) => Vec::new(),
            (BlobBackend::S3, None) => {
                vec![
                    "blobs.backend = \"s3\" needs a [blobs.s3] table (endpoint, bucket, key files)"
                        .into(),
                ]
            }
            (BlobBackend::S3, Some(s3)) => s3.problems(),
        }
    }
}

impl S3Config {
    /// Every problem of `[blobs.s3]`, each naming its key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(problem) = endpoint_problem(&self.endpoint, self.allow_http) {
            out.push(format!(
                "blobs.s3.endpoint = {:?}: {problem}",
                self.endpoint
            ));
        }
        if let Some(problem) = bucket_problem(&self.bucket) {
            out.push(format!("blobs.s3.bucket = {:?}: {problem}", self.bucket));
        }
        if self.region.is_empty() {
            out.push("blobs.s3.region is empty".into());
        }
        for (key, path) in [
            ("blobs.s3.access_key_id_file", &self.access_key_id_file),
            (
                "blobs.s3.secret_access_key_file",
                &self.secret_access_key_file,
            ),
        ] {
            if path.as_os_str().is_empty() {
                out.push(format!("{key} is unset: the credentials come from files"));
            }
        }
        if let Some(problem) = prefix_problem(&self.prefix) {
            out.push(format!("blobs.s3.prefix = {:?}: {problem}", self.prefix));
        }
        out
    }
}

fn endpoint_problem(endpoint: &str, allow_http: bool) -> Option<String> {
    let rest = if let Some(rest) = endpoint.strip_prefix("https://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        if !allow_http {
            return Some(
                "plain http needs blobs.s3.allow_http = true (a loopback server only)".into(),
            );
        }
        rest
    } else {
        return Some("not an http:// or https:// URL".into());
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Some("no host in the URL".into());
    }
    None
}

/// S3's bucket naming rules (the subset every server accepts).
fn bucket_problem(bucket: &str) -> Option<String> {
    if bucket.is_empty() {
        return Some("empty".into());
    }
    if !(3..=63).contains(&bucket.len()) {
        return Some("a bucket name has 3 to 63 characters".into());
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
    if !bucket.bytes().all(allowed) {
        return Some("only lower-case letters, digits, '-' and '.'".into());
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(bucket.as_bytes()[0]) || !edge(bucket.as_bytes()[bucket.len() - 1]) {
        return Some("must begin and end with a letter or a digit".into());
    }
    None
}

fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return None;
    }
    if prefix.starts_with('/') || prefix.ends_with('/') {
        return Some("no leading or trailing '/'".into());
    }
    for part in prefix.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Some(format!("the part {part:?} is not a key part"));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Some(format!(
                "the part {part:?} has characters other than letters, digits, '-', '_' and '.'"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> S3Config {
        S3Config {
            endpoint: "https://s3.example.test".into(),
            bucket: "mail-blobs".into(),
            access_key_id_file: "/etc/mailfleet/s3.id".into(),
            secret_access_key_file: "/etc/mailfleet/s3.secret".into(),
            ..S3Config::default()
        }
    }

    fn with(s3: S3Config) -> BlobConfig {
        BlobConfig {
            backend: BlobBackend::S3,
            s3: Some(s3),
            ..BlobConfig::default()
        }
    }

    #[test]
    fn the_default_is_the_local_folder_and_is_fine() {
        let cfg = BlobConfig::default();
        assert_eq!(cfg.backend, BlobBackend::Dir);
        assert!(cfg.problems().is_empty());
        assert!(
            with(s3()).problems().is_empty(),
            "{:?}",
            with(s3()).problems()
        );
    }

    #[test]
    fn toml_reads_both_backends_and_refuses_unknown_keys() {
        let cfg: BlobConfig = toml::from_str(
            "backend = \"s3\"\n[s3]\nendpoint = \"http://127.0.0.1:8333\"\nbucket = \"b12\"\n\
             access_key_id_file = \"/k\"\nsecret_access_key_file = \"/s\"\nallow_http = true\n",
        )
        .unwrap();
        assert_eq!(cfg.backend, BlobBackend::S3);
        let s3 = cfg.s3.as_ref().unwrap();
        assert_eq!((s3.region.as_str(), s3.prefix.as_str()), ("us-east-1", ""));
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        let typo = toml::from_str::<BlobConfig>("[s3]\nsecret_key = \"inline\"\n");
        assert!(typo.unwrap_err().to_string().contains("secret_key"));
        let bad = toml::from_str::<BlobConfig>("backend = \"nfs\"\n");
        assert!(bad.unwrap_err().to_string().contains("nfs"));
    }

    #[test]
    fn every_problem_names_its_key_and_value() {
        let cfg = BlobConfig {
            backend: BlobBackend::S3,
            ..BlobConfig::default()
        };
        assert!(
            cfg.problems()[0].contains("[blobs.s3]"),
            "{:?}",
            cfg.problems()
        );
        let problems = with(S3Config {
            endpoint: "http://127.0.0.1:8333".into(),
            bucket: "Bad_Bucket".into(),
            region: String::new(),
            access_key_id_file: PathBuf::new(),
            prefix: "/tenant//x".into(),
            ..s3()
        })
        .problems();
        let all = problems.join("\n");
        for expected in [
            "blobs.s3.endpoint = \"http://127.0.0.1:8333\": plain http needs blobs.s3.allow_http",
            "blobs.s3.bucket = \"Bad_Bucket\": only lower-case",
            "blobs.s3.region is empty",
            "blobs.s3.access_key_id_file is unset",
            "blobs.s3.prefix = \"/tenant//x\"",
        ] {
            assert!(all.contains(expected), "{expected:?} not in:\n{all}");
        }
        assert_eq!(problems.len(), 5, "{all}");
    }

    #[test]
    fn endpoints_buckets_and_prefixes() {
        assert!(endpoint_problem("s3.example.test", false).is_some());
        assert!(endpoint_problem("https://", false).is_some());
        assert!(endpoint_problem("http://127.0.0.1:8333", true).is_none());
        for bad in ["ab", "-abc", "abc-", "a b c", &"a".repeat(64)] {
            assert!(bucket_problem(bad).is_some(), "{bad:?}");
        }
        assert!(bucket_problem("my.bucket-1").is_none());
        assert!(prefix_problem("tenant-1/blobs").is_none());
        for bad in ["a/", "a/../b", "a/./b", "with space"] {
            assert!(prefix_problem(bad).is_some(), "{bad:?}");
        }
    }
}
