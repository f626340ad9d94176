//! The session over the command sequences Postfix sends.

use super::*;
use crate::milter::{
    command::{Options, SMFIC_BODYEOB, SMFIC_CONNECT, SMFIC_MAIL},
    negotiate::WANTED,
};

fn s(v: &str) -> String {
    v.to_string()
}

fn macros(stage: u8, pairs: &[(&str, &str)]) -> Command {
    Command::Macro {
        stage,
        pairs: pairs.iter().map(|(n, v)| (s(n), s(v))).collect(),
    }
}

/// A session negotiated as with Postfix 3 (every flag offered).
fn negotiated(max: u64) -> Session {
    let mut session = Session::new(max);
    let offer = Options {
        version: 6,
        actions: 0x1ff,
        protocol: 0x1f_ffff,
    };
    let step = session.handle(Command::OptNeg(offer)).unwrap();
    let Step::Reply(Reply::OptNeg(ours)) = step else {
        panic!("{step:?}")
    };
    assert_eq!((ours.version, ours.actions, ours.protocol), (6, 0, WANTED));
    session
}

/// Connect, MAIL with `auth`, one RCPT, two headers, one body chunk.
fn through_body(session: &mut Session, auth: Option<&str>) -> Vec<Step> {
    let mut mail_macros = vec![("i", "4XyZ1")];
    if let Some(login) = auth {
        mail_macros.push(("{auth_authen}", login));
    }
    let commands = [
        macros(SMFIC_CONNECT, &[("j", "mx.example.test")]),
        Command::Connect {
            hostname: s("localhost"),
            address: Address::Inet {
                ip: s("127.0.0.1"),
                port: 50000,
            },
        },
        macros(SMFIC_MAIL, &mail_macros),
        Command::Mail(vec![s("<Alice@Example.test>"), s("SIZE=100")]),
        Command::Rcpt(vec![s("<bob@example.net>")]),
        Command::Rcpt(vec![s("<carol@example.net>")]),
        Command::Header {
            name: b"Received".to_vec(),
            value: b" from localhost by mx id 4XyZ1".to_vec(),
        },
        Command::Header {
            name: b"Message-ID".to_vec(),
            value: b" <m1@example.test>".to_vec(),
        },
        Command::Body(b"hello\r\n".to_vec()),
    ];
    commands
        .into_iter()
        .map(|c| session.handle(c).unwrap())
        .collect()
}

#[test]
fn a_submission_collects_the_envelope_login_and_message() {
    let mut session = negotiated(1 << 20);
    let steps = through_body(&mut session, Some("Alice@Example.test"));
    // Nothing is answered before the end: every step is negotiated NR.
    assert!(steps.iter().all(|s| *s == Step::Silent), "{steps:?}");
    assert!(session.in_message());
    assert_eq!(session.queue_id(), Some("4XyZ1"));
    assert_eq!(session.account().as_deref(), Some("alice@example.test"));
    let end = session.handle(Command::EndOfMessage(Vec::new())).unwrap();
    let Step::Scan(sub) = end else {
        panic!("{end:?}")
    };
    assert_eq!(sub.account, "alice@example.test");
    assert_eq!(sub.sasl_username, "Alice@Example.test");
    assert_eq!(sub.sender, "Alice@Example.test");
    assert_eq!(sub.recipients, ["bob@example.net", "carol@example.net"]);
    assert_eq!(sub.queue_id.as_deref(), Some("4XyZ1"));
    assert_eq!(sub.client_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(sub.message.message_id.as_deref(), Some("<m1@example.test>"));
    assert_eq!(
        String::from_utf8(sub.message.bytes.clone()).unwrap(),
        "Received: from localhost by mx id 4XyZ1\r\nMessage-ID: <m1@example.test>\r\n\r\nhello\r\n"
    );
    // The message's macros are gone; the next message starts afresh.
    assert!(!session.in_message());
    assert_eq!(session.queue_id(), None);
    through_body(&mut session, Some("alice@example.test"));
    let Step::Scan(second) = session
        .handle(Command::EndOfMessage(b"more\r\n".to_vec()))
        .unwrap()
    else {
        panic!("no second message")
    };
    assert!(second.message.bytes.ends_with(b"hello\r\nmore\r\n"));
    assert_ne!(second.message.digest, sub.message.digest);
}

#[test]
fn without_a_login_the_end_of_the_message_is_refused_naming_the_macro() {
    let mut session = negotiated(1 << 20);
    // MAIL goes on: Postfix refuses an unauthenticated client at RCPT.
    let steps = through_body(&mut session, None);
    assert!(steps.iter().all(|s| *s == Step::Silent), "{steps:?}");
    let end = session.handle(Command::EndOfMessage(Vec::new())).unwrap();
    let Step::Refuse {
        reply,
        reason,
        queue_id,
        account,
    } = end
    else {
        panic!("{end:?}")
    };
    assert_eq!(reply, crate::decide::no_auth_reply());
    assert_eq!((queue_id.as_deref(), account), (Some("4XyZ1"), None));
    let text = reason.to_string();
    assert!(text.contains("{auth_authen}"), "{text}");
    assert!(!session.in_message());
    // A RCPT outside a message is a protocol error.
    let err = session.handle(Command::Rcpt(vec![s("<b@y>")])).unwrap_err();
    assert_eq!(err, ProtocolError::NoMessage("SMFIC_RCPT"));
}

#[test]
fn an_empty_login_at_the_end_does_not_hide_the_one_from_mail() {
    let mut session = negotiated(1 << 20);
    through_body(&mut session, Some("a@x"));
    session
        .handle(macros(SMFIC_BODYEOB, &[("{auth_authen}", "")]))
        .unwrap();
    assert!(matches!(
        session.handle(Command::EndOfMessage(Vec::new())).unwrap(),
        Step::Scan(_)
    ));
}

#[test]
fn an_oversized_message_is_refused_with_its_size() {
    let mut session = negotiated(60);
    through_body(&mut session, Some("a@x"));
    session.handle(Command::Body(vec![b'x'; 100])).unwrap();
    let step = session.handle(Command::EndOfMessage(Vec::new())).unwrap();
    let Step::Refuse {
        reply,
        reason,
        queue_id,
        account,
    } = step
    else {
        panic!("{step:?}")
    };
    assert_eq!(reply, crate::decide::too_big_reply(60));
    assert_eq!(queue_id.as_deref(), Some("4XyZ1"));
    assert_eq!(account.as_deref(), Some("a@x"));
    assert!(matches!(reason, Refusal::TooBig { max: 60, .. }));
    assert!(reason.to_string().contains("max_message_bytes = 60"));
}

#[test]
fn abort_ends_the_message_and_quit_closes() {
    let mut session = negotiated(1 << 20);
    through_body(&mut session, Some("a@x"));
    assert_eq!(session.handle(Command::Abort).unwrap(), Step::Aborted);
    assert!(!session.in_message());
    assert_eq!(session.handle(Command::Abort).unwrap(), Step::Silent);
    assert_eq!(
        session
            .handle(Command::EndOfMessage(Vec::new()))
            .unwrap_err(),
        ProtocolError::NoMessage("SMFIC_BODYEOB")
    );
    assert_eq!(
        session.handle(Command::QuitNewConnection).unwrap(),
        Step::Silent
    );
    assert_eq!(session.account(), None);
    assert_eq!(session.handle(Command::Quit).unwrap(), Step::Close);
}

#[test]
fn the_protocol_order_is_enforced() {
    let mut session = Session::new(100);
    assert_eq!(
        session.handle(Command::Mail(vec![s("<a@x>")])).unwrap_err(),
        ProtocolError::NotNegotiated("SMFIC_MAIL")
    );
    let old = Options {
        version: 1,
        actions: 0,
        protocol: 0,
    };
    assert!(matches!(
        session.handle(Command::OptNeg(old)).unwrap_err(),
        ProtocolError::TooOld(_)
    ));
    let mut session = negotiated(100);
    let again = Command::OptNeg(Options {
        version: 6,
        actions: 0,
        protocol: 0,
    });
    assert_eq!(
        session.handle(again).unwrap_err(),
        ProtocolError::NegotiatedTwice
    );
    assert_eq!(
        session.handle(Command::Body(vec![])).unwrap_err(),
        ProtocolError::NoMessage("SMFIC_BODY")
    );
    assert_eq!(
        session
            .handle(Command::Header {
                name: vec![],
                value: vec![]
            })
            .unwrap_err(),
        ProtocolError::NoMessage("SMFIC_HEADER")
    );
}

#[test]
fn an_old_mta_gets_a_reply_at_every_step() {
    let mut session = Session::new(1 << 20);
    let offer = Options {
        version: 2,
        actions: 0x3f,
        protocol: 0x7f,
    };
    session.handle(Command::OptNeg(offer)).unwrap();
    let steps = through_body(&mut session, Some("a@x"));
    let answered = steps
        .iter()
        .filter(|s| **s == Step::Reply(Reply::Continue))
        .count();
    // connect, MAIL, 2 RCPT, 2 headers, body: everything but the macros.
    assert_eq!(answered, 7);
    // Without HDR_LEADSPC the space after the colon is put back.
    let Step::Scan(sub) = session.handle(Command::EndOfMessage(Vec::new())).unwrap() else {
        panic!()
    };
    assert!(sub.message.bytes.starts_with(b"Received:  from localhost"));
}

#[test]
fn recipients_are_bounded() {
    let mut session = negotiated(1 << 20);
    through_body(&mut session, Some("a@x"));
    for _ in 2..MAX_RECIPIENTS {
        session.handle(Command::Rcpt(vec![s("<r@x>")])).unwrap();
    }
    assert_eq!(
        session.handle(Command::Rcpt(vec![s("<r@x>")])).unwrap_err(),
        ProtocolError::TooManyRecipients
    );
}
