//! Accounts: the lifecycle as an explicit, replayable state machine
//! ([`lifecycle`]), the effectors that carry it out (the LDAP
//! [`directory`], the [`notifier`], the [`deleter`] saga), the account
//! [`api`] with its [`password`] policy, and the [`status`] projection the
//! LMTP server checks at RCPT.

pub mod api;
pub mod deleter;
pub mod directory;
pub mod lifecycle;
pub mod notifier;
pub mod password;
pub mod status;
