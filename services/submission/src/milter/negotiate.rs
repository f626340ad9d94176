//! Option negotiation (`SMFIC_OPTNEG`): what this milter asks of the MTA.
//!
//! The MTA offers a protocol version, the actions a milter may take and the
//! protocol flags it understands; the milter answers with the subset it
//! wants. We change nothing in the message (no actions) and ask:
//!
//! - to skip the steps we do not need: HELO, DATA, unknown commands and
//!   end-of-headers (`SMFIP_NO*`);
//! - not to wait for our reply where we never refuse: connect, MAIL,
//!   RCPT, headers and body chunks (`SMFIP_NR_*`), which saves a round
//!   trip per command, header and 64 KiB of body;
//! - header values with their leading space (`SMFIP_HDR_LEADSPC`), so the
//!   message rebuilt for the scan has each header as the client sent it.
//!
//! Only the end of the message is answered (the verdict). A flag the MTA
//! does not offer is not asked for; the session then answers that step
//! with `SMFIR_CONTINUE`, so any MTA from protocol version 2 on works.

use super::command::{
    Options, SMFIC_BODY, SMFIC_BODYEOB, SMFIC_CONNECT, SMFIC_DATA, SMFIC_EOH, SMFIC_HEADER,
    SMFIC_HELO, SMFIC_MAIL, SMFIC_OPTNEG, SMFIC_RCPT, SMFIC_UNKNOWN,
};

pub const SMFIP_NOCONNECT: u32 = 0x1;
pub const SMFIP_NOHELO: u32 = 0x2;
pub const SMFIP_NOMAIL: u32 = 0x4;
pub const SMFIP_NORCPT: u32 = 0x8;
pub const SMFIP_NOBODY: u32 = 0x10;
pub const SMFIP_NOHDRS: u32 = 0x20;
pub const SMFIP_NOEOH: u32 = 0x40;
pub const SMFIP_NR_HDR: u32 = 0x80;
pub const SMFIP_NOUNKNOWN: u32 = 0x100;
pub const SMFIP_NODATA: u32 = 0x200;
pub const SMFIP_NR_CONN: u32 = 0x1000;
pub const SMFIP_NR_HELO: u32 = 0x2000;
pub const SMFIP_NR_MAIL: u32 = 0x4000;
pub const SMFIP_NR_RCPT: u32 = 0x8000;
pub const SMFIP_NR_DATA: u32 = 0x1_0000;
pub const SMFIP_NR_UNKN: u32 = 0x2_0000;
pub const SMFIP_NR_EOH: u32 = 0x4_0000;
pub const SMFIP_NR_BODY: u32 = 0x8_0000;
pub const SMFIP_HDR_LEADSPC: u32 = 0x10_0000;

/// The newest protocol version, the one Postfix speaks with
/// `milter_protocol = 6`.
pub const VERSION: u32 = 6;
/// The oldest version whose options we can read.
pub const MIN_VERSION: u32 = 2;

/// Every protocol flag this milter would like, before the MTA's offer.
pub const WANTED: u32 = SMFIP_NOHELO
    | SMFIP_NODATA
    | SMFIP_NOUNKNOWN
    | SMFIP_NOEOH
    | SMFIP_NR_CONN
    | SMFIP_NR_HELO
    | SMFIP_NR_MAIL
    | SMFIP_NR_RCPT
    | SMFIP_NR_DATA
    | SMFIP_NR_UNKN
    | SMFIP_NR_EOH
    | SMFIP_NR_HDR
    | SMFIP_NR_BODY
    | SMFIP_HDR_LEADSPC;

/// The MTA speaks a version older than [`MIN_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the MTA offers milter protocol version {0}; {MIN_VERSION} or newer is needed")]
pub struct TooOld(pub u32);

/// What was agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    /// The protocol flags in force: ours, as far as the MTA offered them.
    pub protocol: u32,
}

impl Negotiated {
    /// Agree on the MTA's `offer`.
    pub fn from_offer(offer: &Options) -> Result<Negotiated, TooOld> {
        if offer.version < MIN_VERSION {
            return Err(TooOld(offer.version));
        }
        Ok(Negotiated {
            version: offer.version.min(VERSION),
            protocol: WANTED & offer.protocol,
        })
    }

    /// The `SMFIR_OPTNEG` reply: the version, no actions, our flags.
    pub fn reply(&self) -> Options {
        Options {
            version: self.version,
            actions: 0,
            protocol: self.protocol,
        }
    }

    /// Whether the MTA waits for a reply to the command with code `code`.
    /// Macros, abort and quit are never answered; the option negotiation
    /// and the end of the message always are.
    pub fn expects_reply(&self, code: u8) -> bool {
        let no_reply = match code {
            SMFIC_CONNECT => SMFIP_NR_CONN,
            SMFIC_HELO => SMFIP_NR_HELO,
            SMFIC_MAIL => SMFIP_NR_MAIL,
            SMFIC_RCPT => SMFIP_NR_RCPT,
            SMFIC_DATA => SMFIP_NR_DATA,
            SMFIC_UNKNOWN => SMFIP_NR_UNKN,
            SMFIC_HEADER => SMFIP_NR_HDR,
            SMFIC_EOH => SMFIP_NR_EOH,
            SMFIC_BODY => SMFIP_NR_BODY,
            SMFIC_OPTNEG | SMFIC_BODYEOB => return true,
            _ => return false,
        };
        // NR flags exist from version 6; an older MTA waits for every reply.
        self.protocol & no_reply == 0
    }

    /// Whether header values keep the space after the colon.
    pub fn leading_space(&self) -> bool {
        self.protocol & SMFIP_HDR_LEADSPC != 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::{SMFIC_ABORT, SMFIC_MACRO, SMFIC_QUIT};
    use super::*;

    fn offer(version: u32, protocol: u32) -> Options {
        Options {
            version,
            actions: 0x1ff,
            protocol,
        }
    }

    #[test]
    fn we_take_what_we_want_of_what_is_offered() {
        // Postfix 3.x with milter_protocol = 6 offers every flag up to 0x1fffff.
        let n = Negotiated::from_offer(&offer(6, 0x1f_ffff)).unwrap();
        assert_eq!(n.protocol, WANTED);
        assert_eq!(n.reply().actions, 0, "we change nothing");
        assert!(n.leading_space());
        for silent in [
            SMFIC_CONNECT,
            SMFIC_MAIL,
            SMFIC_RCPT,
            SMFIC_HEADER,
            SMFIC_BODY,
        ] {
            assert!(!n.expects_reply(silent), "{}", silent as char);
        }
        for never in [SMFIC_MACRO, SMFIC_ABORT, SMFIC_QUIT] {
            assert!(!n.expects_reply(never), "{}", never as char);
        }
        assert!(n.expects_reply(SMFIC_BODYEOB) && n.expects_reply(SMFIC_OPTNEG));
        // A newer MTA gets version 6.
        assert_eq!(Negotiated::from_offer(&offer(7, 0)).unwrap().version, 6);
    }

    #[test]
    fn an_old_mta_is_answered_at_every_step() {
        // Version 2: the NO* flags for connect..body only, no NR flags.
        let n = Negotiated::from_offer(&offer(2, 0x7f)).unwrap();
        assert_eq!(n.version, 2);
        assert_eq!(n.protocol, SMFIP_NOHELO | SMFIP_NOEOH);
        for code in [
            SMFIC_CONNECT,
            SMFIC_MAIL,
            SMFIC_RCPT,
            SMFIC_HEADER,
            SMFIC_BODY,
        ] {
            assert!(n.expects_reply(code), "{}", code as char);
        }
        assert!(!n.leading_space());
        let err = Negotiated::from_offer(&offer(1, 0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the MTA offers milter protocol version 1; 2 or newer is needed"
        );
    }
}
