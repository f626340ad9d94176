//! The `s3` backend: blobs as objects in an S3-compatible bucket that
//! several hosts share (`object_store`'s S3 client; no signing of ours).
//!
//! Keys mirror the local layout ([`keys`]); references are empty marker
//! objects ([`refs`]). The guarantees and what they rest on:
//! - durability: [`S3Store::put_with_id`] returns `Ok` only after the PUT
//!   of the whole object returned success, which S3 (and SeaweedFS, MinIO)
//!   give once the object is stored; the LMTP server answers 250 only
//!   after that and the event's ack;
//! - content addressing: the key is the sha256, so a second PUT of the
//!   same blob writes the same bytes (and is skipped when a HEAD finds it);
//! - a missing blob is [`BlobError::NotFound`] (S3's `NoSuchKey`), an
//!   outage or a refusal is [`BlobError::S3`]: consumers dead-letter the
//!   first and retry the second, as for a local read error;
//! - the reference rules need read-after-write consistent LISTs, which
//!   S3 (since 2020), SeaweedFS and MinIO give.
//!
//! The API is blocking ([`crate::BlobStore`]). The client runs on a small
//! runtime owned by the store ([`Bridge`]): a call spawns the request
//! there and waits on a channel, so it never enters the caller's runtime
//! (a `block_on` inside one panics). Callers stay off tokio's worker
//! threads (`spawn_blocking`), as for the local disk.

mod check;
mod keys;
mod refs;

use std::{future::Future, sync::Arc, time::Duration};

use object_store::{
    aws::{AmazonS3, AmazonS3Builder},
    path::Path,
    ClientOptions, ObjectStoreExt, RetryConfig,
};

use crate::{compress, decode, BlobError, S3Config, S3Op};
use keys::Keys;

/// One request's limit: a 50 MB message at a slow 1 MB/s fits.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A server that does not accept a connection in this time is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The client's own retries stay short: a store that is down fails the
/// LMTP transaction with a 4xx (Postfix retries) and the consumer's event
/// with a retry (the runtime backs off), instead of hanging them.
const RETRIES: usize = 3;
const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// A bucket (and prefix) of an S3-compatible store.
pub(crate) struct S3Store {
    client: Arc<AmazonS3>,
    keys: Keys,
    /// `s3://bucket/prefix`, for messages.
    shown: String,
    bucket: String,
    bridge: Bridge,
}

impl S3Store {
    /// Read the key files, build the client and check that the bucket
    /// answers a LIST; every refusal names its key and value. Blocking.
    pub fn open(cfg: &S3Config) -> Result<S3Store, BlobError> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            return Err(BlobError::Invalid(problems));
        }
        let id = check::read_key("blobs.s3.access_key_id_file", &cfg.access_key_id_file)?;
        let secret = check::read_key(
            "blobs.s3.secret_access_key_file",
            &cfg.secret_access_key_file,
        )?;
        let builder = AmazonS3Builder::new()
            .with_endpoint(&cfg.endpoint)
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: RETRIES,
                retry_timeout: RETRY_WINDOW,
                ..RetryConfig::default()
            })
            // The client options hold allow_http too: set it here, once.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(cfg.allow_http)
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT),
            );
        let bridge = Bridge::start()?;
        // Built on the bridge: the HTTP client's pool lives on its runtime.
        let client = bridge
            .run(async move { builder.build() })?
            .map_err(|e| check::refusal(cfg, &e))?;
        let keys = Keys::new(&cfg.prefix);
        let shown = match cfg.prefix.as_str() {
            "" => format!("s3://{}", cfg.bucket),
            prefix => format!("s3://{}/{prefix}", cfg.bucket),
        };
        let store = S3Store {
            client: Arc::new(client),
            keys,
            shown,
            bucket: cfg.bucket.clone(),
            bridge,
        };
        store.check(cfg)?;
        store.sweep_stale();
        Ok(store)
    }

    /// `s3://bucket/prefix`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Store `raw` whose sha256 is `id`; durable when this returns `Ok`.
    pub fn put_with_id(&self, id: &str, raw: &[u8]) -> Result<(), BlobError> {
        let key = self.keys.blob(id);
        if self.head(&key)?.is_some() {
            return Ok(()); // content-addressed: the same bytes are already there
        }
        let body = compress(id, raw)?;
        let (c, k) = (self.client.clone(), key.clone());
        self.call(S3Op::Put, &key, async move { c.put(&k, body.into()).await })
            .map(drop)
    }

    /// Whether the blob `id` is stored (false when the store cannot say).
    pub fn contains(&self, id: &str) -> bool {
        matches!(self.head(&self.keys.blob(id)), Ok(Some(_)))
    }

    /// Read the raw message `id` back, checking its hash.
    pub fn get(&self, id: &str) -> Result<Vec<u8>, BlobError> {
        let key = self.keys.blob(id);
        let (c, k) = (self.client.clone(), key.clone());
        let read = self.bridge.run(async move {
            match c.get(&k).await {
                Ok(found) => found.bytes().await,
                Err(e) => Err(e),
            }
        })?;
        match read {
            Ok(bytes) => decode(id, &self.location(&key), &bytes),
            Err(e @ object_store::Error::NotFound { .. }) if !check::no_such_bucket(&e) => {
                Err(BlobError::NotFound {
                    id: id.to_string(),
                    location: self.location(&key),
                })
            }
            Err(source) => Err(self.error(S3Op::Get, &key, source)),
        }
    }

    /// The object's size, or `None` if there is none.
    fn head(&self, key: &Path) -> Result<Option<u64>, BlobError> {
        let (c, k) = (self.client.clone(), key.clone());
        match self.bridge.run(async move { c.head(&k).await })? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.error(S3Op::Head, key, source)),
        }
    }

    /// Run one request on the bridge, naming `op` and `key` if it fails.
    fn call<T, F>(&self, op: S3Op, key: &Path, request: F) -> Result<T, BlobError>
    where
        F: Future<Output = object_store::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.bridge
            .run(request)?
            .map_err(|source| self.error(op, key, source))
    }

    fn error(&self, op: S3Op, key: &Path, source: object_store::Error) -> BlobError {
        BlobError::S3 {
            op,
            location: self.location(key),
            source: Box::new(source),
        }
    }

    fn location(&self, key: &Path) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// The runtime the S3 client runs on, owned by the store.
struct Bridge {
    handle: tokio::runtime::Handle,
    /// Taken by `drop`, which must not block (the last reference may go
    /// on an async thread): the runtime shuts down in the background.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    fn start() -> Result<Bridge, BlobError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("blob-s3")
            .enable_all()
            .build()
            .map_err(BlobError::Runtime)?;
        Ok(Bridge {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Run `work` on the store's runtime and wait for it on this thread.
    fn run<T, F>(&self, work: F) -> Result<T, BlobError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().map_err(|_| {
            BlobError::Runtime(std::io::Error::other(
                "the request's task ended without an answer",
            ))
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_answers_from_inside_and_outside_a_runtime() {
        let bridge = Bridge::start().unwrap();
        assert_eq!(bridge.run(async { 6 * 7 }).unwrap(), 42);
        // The caller's own runtime: a block_on there would panic.
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answer = outer.block_on(async { bridge.run(async { "ok" }) });
        assert_eq!(answer.unwrap(), "ok");
        // Dropped on an async thread: no panic either.
        outer.block_on(async move { drop(bridge) });
    }
}
