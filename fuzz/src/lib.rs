//! What the fuzz targets run: one `check(data)` per target in [`checks`].
//! Each feeds the bytes to a parser the way its service does and panics
//! when a property fails (a panic is what libFuzzer reports).
//! `tests/tests/fuzz_regressions.rs` runs the same checks on stable over
//! `fuzz/regressions/` and `fuzz/corpus/`, against the real crates.
//!
//! The policy and LMTP parsers live in crates that link rocksdb and
//! librdkafka (minutes to build, half an hour with sanitizers). Their
//! parser modules are pure (tokio's I/O traits, `thiserror`, the event
//! types), so they are compiled here from their own files, under the names
//! the checks use (`crate::policy_protocol`, `crate::lmtp`; the test binds
//! the same names to the real crates' modules). If one of those modules
//! grows a dependency on the rest of its crate, this crate stops building:
//! keep the parser pure rather than pulling its crate in here.

#[path = "../../services/policy/src/protocol.rs"]
pub mod policy_protocol;

pub mod lmtp;

pub mod checks;
