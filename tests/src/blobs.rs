//! Helpers for the blob store tests: the S3 server `ops/s3 start` runs
//! (shared: each test keeps to a key prefix of its own), a private one
//! (`outage::Private::s3`), and the assertions every backend must pass.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use mailfleet_blob::{blob_id, BlobBackend, BlobConfig, BlobError, BlobStore, Released, S3Config};

use crate::{outage::Private, repo_root, unique};

/// An S3 server and where its credentials are.
#[derive(Debug, Clone)]
pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The bucket `ops/s3 start` made.
    pub bucket: String,
    /// The folder with `access_key_id` and `secret_access_key`.
    pub keys: PathBuf,
}

/// The S3 server as `ops/s3 start` runs it (127.0.0.1:8333, or
/// `MAILFLEET_S3_PORT`; bucket `mailfleet`); an error naming the command
/// when it is not running, so that the test fails, never skips.
pub fn shared_s3() -> anyhow::Result<S3Server> {
    let port = std::env::var("MAILFLEET_S3_PORT").unwrap_or_else(|_| "8333".into());
    let server = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: std::env::var("MAILFLEET_S3_BUCKET").unwrap_or_else(|_| "mailfleet".into()),
        keys: repo_root().join("run/s3"),
    };
    anyhow::ensure!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
            && server.keys.join("secret_access_key").is_file(),
        "the S3 server is not running on 127.0.0.1:{port}: run `ops/s3 start` (ops/test does)"
    );
    Ok(server)
}

/// The S3 server of a private `ops/s3` instance.
pub fn private_s3(private: &Private) -> S3Server {
    S3Server {
        endpoint: format!("http://127.0.0.1:{}", private.port),
        bucket: "mailfleet".into(),
        keys: private.run_dir.join("s3"),
    }
}

impl S3Server {
    /// `[blobs.s3]` for this server, keys under `prefix`.
    pub fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            access_key_id_file: self.keys.join("access_key_id"),
            secret_access_key_file: self.keys.join("secret_access_key"),
            allow_http: true,
            prefix: prefix.to_string(),
            ..S3Config::default()
        }
    }

    /// `[blobs]` with `backend = "s3"` for this server.
    pub fn blob_config(&self, prefix: &str) -> BlobConfig {
        BlobConfig {
            backend: BlobBackend::S3,
            s3: Some(self.config(prefix)),
            ..BlobConfig::default()
        }
    }

    /// The `[blobs.s3]` table, as a config file holds it.
    pub fn table(&self, prefix: &str) -> String {
        let path = |f: &str| self.keys.join(f).display().to_string();
        format!(
            "[blobs.s3]\nendpoint = {:?}\nbucket = {:?}\naccess_key_id_file = {:?}\n\
             secret_access_key_file = {:?}\nallow_http = true\nprefix = {prefix:?}\n",
            self.endpoint,
            self.bucket,
            path("access_key_id"),
            path("secret_access_key"),
        )
    }

    /// Open a store under a fresh prefix `name-<random>`.
    pub fn store(&self, name: &str) -> anyhow::Result<BlobStore> {
        Ok(BlobStore::from_config(&self.blob_config(&unique(name)))?)
    }
}

/// Make a config written by `MailWorld::write_config` use `backend = "s3"`
/// (its `[blobs]` table names the folder only).
pub fn use_s3(config: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    anyhow::ensure!(
        text.contains("[blobs]\n"),
        "no [blobs] in {}",
        config.display()
    );
    std::fs::write(
        config,
        text.replacen("[blobs]\n", "[blobs]\nbackend = \"s3\"\n", 1),
    )?;
    Ok(())
}

/// Bytes no other test stores.
fn fresh(what: &str) -> Vec<u8> {
    format!("Subject: {what}\r\n\r\n{}\r\n", unique(what)).into_bytes()
}

fn put_for(store: &BlobStore, raw: &[u8], accounts: &[&str]) -> anyhow::Result<String> {
    let id = blob_id(raw);
    store.add_refs(&id, accounts.iter().copied())?;
    store.put_with_id(&id, raw)?;
    Ok(id)
}

/// Content addressing, zstd, put twice, missing vs bad ids: the local
/// store's unit assertions, for any backend.
pub fn store_and_read(store: &BlobStore) -> anyhow::Result<()> {
    let raw = [fresh("round-trip"), b"body line\r\n".repeat(200)].concat();
    let id = store.put(&raw)?;
    anyhow::ensure!(id == blob_id(&raw), "the id is the sha256");
    anyhow::ensure!(store.put(&raw)? == id, "same bytes, same id");
    anyhow::ensure!(store.get(&id)? == raw, "read back as written");
    anyhow::ensure!(store.contains(&id), "contains what it stored");
    let empty = store.put(b"")?;
    anyhow::ensure!(
        store.get(&empty)?.is_empty(),
        "an empty message round-trips"
    );
    let missing = blob_id(&fresh("never-stored"));
    anyhow::ensure!(!store.contains(&missing));
    match store.get(&missing) {
        Err(BlobError::NotFound { id, .. }) if id == missing => {}
        other => anyhow::bail!("a missing blob must be NotFound, got {other:?}"),
    }
    match store.get("../../etc/passwd") {
        Err(e @ BlobError::BadId(_)) => {
            anyhow::ensure!(e.to_string().contains("\"../../etc/passwd\""), "{e}")
        }
        other => anyhow::bail!("a bad id must be BadId, got {other:?}"),
    }
    Ok(())
}

/// References and release: the local store's unit assertions, for any
/// backend. Addresses are unique per call.
pub fn references(store: &BlobStore) -> anyhow::Result<()> {
    let tag = unique("refs");
    let (a, b) = (format!("a-{tag}@x.test"), format!("b-{tag}@x.test"));
    let shared = put_for(store, &fresh("to both"), &[&a, &b])?;
    let own = put_for(store, &fresh("to a only"), &[&a])?;
    let mut both = vec![shared.clone(), own.clone()];
    both.sort();
    anyhow::ensure!(store.refs_of(&a)? == both, "a holds both, sorted");

    let released = store.release_account(&a)?;
    anyhow::ensure!(released.references == 2, "{released:?}");
    anyhow::ensure!(released.blobs_removed == 1, "{released:?}");
    anyhow::ensure!(released.bytes_removed > 0, "{released:?}");
    anyhow::ensure!(!store.contains(&own), "a's own blob goes");
    anyhow::ensure!(store.contains(&shared), "b still holds the shared one");
    anyhow::ensure!(store.refs_of(&a)?.is_empty());
    anyhow::ensure!(
        store.release_account(&a)? == Released::default(),
        "releasing twice finds nothing"
    );
    let released = store.release_account(&b)?;
    anyhow::ensure!(
        (released.references, released.blobs_removed) == (1, 1),
        "{released:?}"
    );
    anyhow::ensure!(!store.contains(&shared), "the last holder released it");

    let odd = format!("../../etc/passwd-{tag}");
    let id = put_for(store, &fresh("odd"), &[&odd, &format!("a/b@c-{tag}")])?;
    anyhow::ensure!(
        store.refs_of(&odd)? == vec![id],
        "odd addresses are safe names"
    );
    match store.add_refs("not-a-blob", [a.as_str()]) {
        Err(BlobError::BadId(_)) => Ok(()),
        other => anyhow::bail!("a bad id must be refused, got {other:?}"),
    }
}

/// Deliveries racing releases: in each round account `i` gets a blob
/// (markers, then the blob) while account `i - 1`, its only other holder,
/// is released. Whatever the interleaving, once a delivery returned its
/// blob must be there.
pub fn deliveries_race_releases(store: &Arc<BlobStore>, rounds: usize) -> anyhow::Result<()> {
    let raw = fresh("raced");
    let id = blob_id(&raw);
    let tag = unique("race");
    let account = |i: usize| format!("r{i}-{tag}@x.test");
    put_for(store, &raw, &[&account(0)])?;
    for i in 1..rounds {
        let delivery = {
            let (store, raw, id, to) = (store.clone(), raw.clone(), id.clone(), account(i));
            std::thread::spawn(move || -> Result<(), BlobError> {
                store.add_refs(&id, [to.as_str()])?;
                store.put_with_id(&id, &raw)
            })
        };
        store.release_account(&account(i - 1))?;
        delivery
            .join()
            .map_err(|_| anyhow::anyhow!("the delivery thread panicked"))??;
        anyhow::ensure!(
            store.contains(&id),
            "round {i}: {} holds the blob, but a racing release removed it",
            account(i)
        );
    }
    let last = store.release_account(&account(rounds - 1))?;
    anyhow::ensure!(last.blobs_removed == 1, "{last:?}");
    anyhow::ensure!(!store.contains(&id));
    Ok(())
}
