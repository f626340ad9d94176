//! The milter protocol, version 6, the part Postfix's before-queue milter
//! client uses (Postfix `MILTER_README`, sendmail's libmilter). Written
//! here rather than taken from a crate: the maintained Rust milter crate is
//! GPL-3.0 and this project is Apache-2.0.
//!
//! - [`codec`]: packet framing with a bounded length, and field readers
//!   whose errors name the packet, the field and the bad value;
//! - [`command`] and [`reply`]: the `SMFIC_*` commands and `SMFIR_*`
//!   replies, each decoded and encoded (both sides, for tests);
//! - [`negotiate`]: what we ask for in `SMFIC_OPTNEG`;
//! - [`macros`]: `{auth_authen}`, `i` and the rest, per stage;
//! - [`wire`]: whole packets over a stream; [`client`]: the MTA side.
//!
//! All but [`wire`] and [`client`] are pure over bytes.

pub mod client;
pub mod codec;
pub mod command;
pub mod macros;
pub mod negotiate;
pub mod reply;
pub mod wire;
