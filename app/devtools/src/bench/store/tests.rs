//! The parsers and the plan, without Postfix.

use std::collections::HashSet;

use clap::Parser;

use super::{deliver::message_id, ops::parse_delays, plan::Plan, Phase, Side, StoreLoad};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: StoreLoad,
}

#[test]
fn maillog_delays_and_message_ids_parse() {
    let line = "Nov 28 19:26:15 mx postfix/lmtp[11204]: D9BA151092C: to=<a@example.test>, \
                relay=127.0.0.1[127.0.0.1]:2424, delay=0.12, delays=0.01/0/0.02/0.09, dsn=2.0.0, status=sent (250 ok)";
    assert_eq!(parse_delays(line), Some([0.12, 0.01, 0.0, 0.02, 0.09]));
    assert_eq!(parse_delays("no delays here"), None);
    let head = b"Return-Path: <x>\r\nMESSAGE-ID: <bsab-1dp-7@bench.example.net>\r\n\r\n";
    assert_eq!(
        message_id(head).as_deref(),
        Some("bsab-1dp-7@bench.example.net")
    );
    assert_eq!(message_id(b"Subject: x\r\n\r\n"), None);
}

#[test]
fn the_plan_has_every_phase_and_messages_their_size_and_recipient() {
    let load = Cli::parse_from(["x", "--messages", "10", "--users", "3", "--rounds", "1"]).load;
    let plan = Plan::new(&load, "bsab");
    let phases: Vec<_> = plan
        .0
        .iter()
        .map(|b| (b.side, b.phase, b.messages))
        .collect();
    assert_eq!(phases.len(), 6, "{phases:?}");
    assert_eq!(phases[1], (Side::Dovecot, Phase::FlatOut, 10));
    assert_eq!(phases[5], (Side::Mailfleet, Phase::Paced, 1000));
    let tags: HashSet<_> = plan.0.iter().map(|b| b.tag.as_str()).collect();
    assert_eq!(tags.len(), 6, "{tags:?}");
    let batch = &plan.0[1];
    assert_eq!(batch.users.len(), 3);
    let (id, raw) = batch.message(4, load.bytes);
    assert!(
        raw.len() <= load.bytes && raw.len() > load.bytes - 80,
        "{}",
        raw.len()
    );
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(text.starts_with(&format!("Message-ID: <{id}>\r\n")));
    assert_eq!(
        message_id(format!("Received: x\r\n{text}").as_bytes()),
        Some(id)
    );
    assert!(text.contains(&format!("To: <{}>", batch.recipient(4))));
    assert!(text.ends_with("--b4--\r\n") && !text.contains("\n."));
    assert!(text
        .split("\r\n")
        .all(|l| !l.contains('\n') && l.len() <= 998));
    assert_ne!(raw, batch.message(5, load.bytes).1);
}
