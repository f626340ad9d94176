//! The properties each fuzz target checks, one module per target. The
//! first input bytes pick a reader buffer size and limits, so that chunk
//! boundaries and limit paths are fuzzed too; the rest is what the client
//! sends.

pub mod avro;
pub mod lmtp;
pub mod mime;
pub mod policy;

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

/// Runs a future over in-memory readers, which are always ready.
fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory reader never waits"),
    }
}

/// A buffer capacity from one byte: mostly tiny, so every state of a
/// parser meets a chunk boundary.
fn capacity(byte: u8) -> usize {
    usize::from(byte % 16) + 1
}
