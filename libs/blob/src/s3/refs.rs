//! References of the `s3` backend: the local markers, as empty objects
//! (`keys.rs` has the layout), and the same ordering rules.
//!
//! - The LMTP server PUTs the markers *before* it stores the blob
//!   ([`crate::BlobStore::add_refs`], then
//!   [`crate::BlobStore::put_with_id`], which HEADs the blob and PUTs it
//!   only if it is missing).
//! - [`S3Store::release_account`] DELETEs the account's marker, then LISTs
//!   the blob's holders (the local `rmdir` that fails while a marker is
//!   left). Only if none is left does it COPY the blob aside
//!   (`tmp/<id>.released`, the local rename), DELETE it, and LIST the
//!   holders again: a delivery that PUT a marker meanwhile gets the blob
//!   COPYed back; otherwise the copy aside is DELETEd.
//!
//! Why no delivery loses its blob: a delivery's marker PUT comes before
//! its HEAD. If its HEAD found the blob, the marker was PUT before the
//! release's DELETE of the blob, so the second LIST sees it and the blob
//! is put back. If the HEAD found nothing, the delivery PUTs the blob
//! itself. Both rest on LISTs that see every PUT that returned before
//! them (strong read-after-write consistency).
//!
//! As in the local store, markers are best effort against a crash: a
//! release that dies between the DELETE and the copy back leaves the blob
//! in `tmp/` (swept after [`crate::STALE_TMP`]).

use futures::{future::join_all, StreamExt, TryStreamExt};
use object_store::{path::Path, ObjectStore, ObjectStoreExt, PutPayload};

use super::S3Store;
use crate::{check_id, BlobError, Released, S3Op};

impl S3Store {
    /// PUT the two markers of each account (by key) for blob `id`, all
    /// at once.
    pub fn add_refs(&self, id: &str, keys: &[String]) -> Result<(), BlobError> {
        let markers: Vec<Path> = keys
            .iter()
            .flat_map(|key| [self.keys.holder(id, key), self.keys.held_one(key, id)])
            .collect();
        let client = self.client.clone();
        let done = self.bridge.run(async move {
            join_all(markers.into_iter().map(|marker| {
                let client = client.clone();
                async move {
                    let put = client.put(&marker, PutPayload::new()).await;
                    (marker, put)
                }
            }))
            .await
        })?;
        for (marker, put) in done {
            put.map_err(|source| self.error(S3Op::Put, &marker, source))?;
        }
        Ok(())
    }

    /// The blobs the account `key` holds, sorted.
    pub fn refs_of(&self, key: &str) -> Result<Vec<String>, BlobError> {
        let folder = self.keys.held(key);
        let (c, f) = (self.client.clone(), folder.clone());
        let found: Vec<_> = self.call(S3Op::List, &folder, async move {
            c.list(Some(&f)).try_collect::<Vec<_>>().await
        })?;
        let mut ids: Vec<String> = found
            .iter()
            .filter_map(|meta| meta.location.filename())
            .filter(|name| check_id(name).is_ok())
            .map(str::to_string)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Drop every reference the account `key` holds and remove the blobs
    /// nobody else holds. Idempotent: a second call finds nothing.
    pub fn release_account(&self, key: &str) -> Result<Released, BlobError> {
        let mut out = Released::default();
        for id in self.refs_of(key)? {
            out.references += 1;
            self.delete(&self.keys.holder(&id, key))?;
            if let Some(bytes) = self.remove_if_unheld(&id)? {
                out.blobs_removed += 1;
                out.bytes_removed += bytes;
            }
            self.delete(&self.keys.held_one(key, &id))?;
        }
        Ok(out)
    }

    /// Remove blob `id` if nobody holds it; its stored size if so.
    fn remove_if_unheld(&self, id: &str) -> Result<Option<u64>, BlobError> {
        let holders = self.keys.holders(id);
        if self.any_under(&holders)? {
            return Ok(None); // someone else holds it
        }
        let (blob, aside) = (self.keys.blob(id), self.keys.aside(id));
        let Some(size) = self.head(&blob)? else {
            return Ok(None);
        };
        if !self.copy(&blob, &aside)? {
            return Ok(None); // released meanwhile by another deleter
        }
        self.delete(&blob)?;
        if self.any_under(&holders)? {
            // A delivery referenced it again after the first look: put
            // it back (the delivery may have PUT it too: same bytes).
            self.copy(&aside, &blob)?;
            self.delete(&aside)?;
            return Ok(None);
        }
        self.delete(&aside)?;
        Ok(Some(size))
    }

    /// Whether any object's key starts with `folder/`.
    fn any_under(&self, folder: &Path) -> Result<bool, BlobError> {
        let (c, f) = (self.client.clone(), folder.clone());
        let first = self.call(S3Op::List, folder, async move {
            c.list(Some(&f)).next().await.transpose()
        })?;
        Ok(first.is_some())
    }

    /// COPY `from` to `to`; false if `from` is gone.
    fn copy(&self, from: &Path, to: &Path) -> Result<bool, BlobError> {
        let (c, f, t) = (self.client.clone(), from.clone(), to.clone());
        match self.bridge.run(async move { c.copy(&f, &t).await })? {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(self.error(S3Op::Copy, from, source)),
        }
    }

    /// DELETE `key`; a key that is already gone is fine.
    fn delete(&self, key: &Path) -> Result<(), BlobError> {
        let (c, k) = (self.client.clone(), key.clone());
        match self.bridge.run(async move { c.delete(&k).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.error(S3Op::Delete, key, source)),
        }
    }
}
