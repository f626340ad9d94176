//! Accounts: the lifecycle as an explicit, replayable state machine
//! ([`lifecycle`]), and the LDAP directory it keeps in step ([`ldap`]).

pub mod ldap;
pub mod lifecycle;
