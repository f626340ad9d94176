//! `mailfleet_ingest::lmtp`, its pure part (see the crate doc).

#[path = "../../services/ingest/src/lmtp/command.rs"]
pub mod command;
#[path = "../../services/ingest/src/lmtp/data.rs"]
pub mod data;
#[path = "../../services/ingest/src/lmtp/line.rs"]
pub mod line;
#[path = "../../services/ingest/src/lmtp/session.rs"]
pub mod session;
