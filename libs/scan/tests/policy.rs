//! The attachment policy on whole messages built in the test: MIME as
//! strings, zip archives with the zip crate's writer, all in memory
//! (builders in `fixtures/policy/build.rs`).

use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use mailfleet_scan::policy::{check, Banned, PolicyConfig, PolicyReport};
use mailfleet_scan::Verdict;
use zip::ZipWriter;

#[path = "fixtures/policy/build.rs"]
mod build;

use build::{attachment, base64, encrypted, lying_bomb, mail, part, zeros_bomb, zip, XorShift};

// ---- assertions ---------------------------------------------------------------

fn run(raw: &[u8]) -> PolicyReport {
    run_with(raw, &PolicyConfig::default())
}

/// Runs the policy and checks it returned promptly (generous: debug build).
fn run_with(raw: &[u8], config: &PolicyConfig) -> PolicyReport {
    let started = Instant::now();
    let report = check(raw, config);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    report
}

fn banned(file: &str, rule: &str) -> Option<Banned> {
    Some(Banned {
        file: file.to_owned(),
        rule: rule.to_owned(),
    })
}

fn assert_banned(raw: &[u8], file: &str, rule: &str) {
    let report = run(raw);
    assert_eq!(report.banned, banned(file, rule), "{report:#?}");
}

// ---- file names -----------------------------------------------------------------

#[test]
fn exe_attachment_is_banned_extension() {
    assert_banned(
        &mail(&[attachment("setup.exe", b"MZ")]),
        "setup.exe",
        "banned-extension",
    );
}

#[test]
fn upper_case_exe_is_banned_extension() {
    assert_banned(
        &mail(&[attachment("SETUP.EXE", b"MZ")]),
        "SETUP.EXE",
        "banned-extension",
    );
}

#[test]
fn hidden_extension_is_double_extension() {
    assert_banned(
        &mail(&[attachment("invoice.pdf.exe", b"MZ")]),
        "invoice.pdf.exe",
        "double-extension",
    );
    let padded = "invoice.pdf                  .exe";
    assert_banned(
        &mail(&[attachment(padded, b"MZ")]),
        padded,
        "double-extension",
    );
}

#[test]
fn directories_and_trailing_dots_are_stripped() {
    assert_banned(
        &mail(&[attachment("..\\\\..\\\\x.exe.", b"MZ")]),
        "..\\..\\x.exe.",
        "banned-extension",
    );
}

#[test]
fn rfc2231_encoded_names_are_decoded() {
    let single = "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=utf-8''x%2Eexe";
    assert_banned(&mail(&[part(single, b"MZ")]), "x.exe", "banned-extension");
    let continued =
        "Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n \
                     filename*0*=utf-8''x;\r\n filename*1*=%2E;\r\n filename*2=\"exe\"";
    assert_banned(
        &mail(&[part(continued, b"MZ")]),
        "x.exe",
        "banned-extension",
    );
    let in_name = "Content-Type: application/octet-stream;\r\n name*0=\"x\"; name*1*=%2Eexe";
    assert_banned(&mail(&[part(in_name, b"MZ")]), "x.exe", "banned-extension");
}

#[test]
fn rfc2047_encoded_names_are_decoded() {
    let encoded = "Content-Type: application/octet-stream; name=\"=?UTF-8?B?eC5leGU=?=\"";
    assert_banned(&mail(&[part(encoded, b"MZ")]), "x.exe", "banned-extension");
    // Split over two words: mail-parser keeps the space between them.
    let split = "Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n \
                 filename=\"=?UTF-8?B?eC5l?= =?UTF-8?B?eGU=?=\"";
    assert_banned(&mail(&[part(split, b"MZ")]), "x.exe", "banned-extension");
    let unpadded = "Content-Type: application/octet-stream; name=\"=?utf-8?b?eC5leGU?=\"";
    assert_banned(&mail(&[part(unpadded, b"MZ")]), "x.exe", "banned-extension");
}

#[test]
fn a_second_filename_parameter_is_checked_too() {
    let two = "Content-Type: application/octet-stream\r\n\
               Content-Disposition: attachment; filename=\"notes.txt\"; filename*=utf-8''x.exe";
    assert_banned(&mail(&[part(two, b"MZ")]), "x.exe", "banned-extension");
}

#[test]
fn banned_mime_type_with_an_innocent_name() {
    let headers = "Content-Type: Application/X-MSDownload; name=\"invoice.txt\"";
    assert_banned(
        &mail(&[part(headers, b"MZ")]),
        "invoice.txt",
        "banned-mime-type",
    );
    let unnamed = "Content-Type: application/hta";
    assert_banned(
        &mail(&[part(unnamed, b"x")]),
        "(unnamed part 3)",
        "banned-mime-type",
    );
}

#[test]
fn an_extra_banned_extension_in_the_config_is_honoured() {
    let raw = mail(&[attachment("report.xyz", b"data")]);
    assert_eq!(run(&raw).banned, None);
    let mut config = PolicyConfig::default();
    config.banned_extensions.push("XYZ".to_owned());
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(
        run_with(&raw, &config).banned,
        banned("report.xyz", "banned-extension")
    );
}

#[test]
fn validate_rejects_empty_and_dotted_extensions_by_name() {
    let mut config = PolicyConfig {
        banned_extensions: vec!["exe".into(), String::new(), ".scr".into()],
        ..PolicyConfig::default()
    };
    config.innocuous_extensions.push("pdf.".into());
    let problems = config.validate().expect_err("invalid config");
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].contains("banned_extensions[1] = \"\""),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("banned_extensions[2] = \".scr\""),
        "{problems:#?}"
    );
    assert!(
        problems[2].contains("innocuous_extensions[") && problems[2].contains("\"pdf.\""),
        "{problems:#?}"
    );
}

#[test]
fn banned_converts_into_the_crate_verdict() {
    let verdict: Verdict = Banned {
        file: "x.exe".into(),
        rule: "banned-extension".into(),
    }
    .into();
    assert_eq!(
        verdict,
        Verdict::Banned {
            file: "x.exe".into(),
            rule: "banned-extension".into()
        }
    );
}

// ---- attached messages ------------------------------------------------------------

#[test]
fn an_attached_message_carrying_an_exe_is_banned() {
    let inner = String::from_utf8(mail(&[attachment("payload.exe", b"MZ")])).expect("ascii");
    let nested = format!("Content-Type: message/rfc822\r\n\r\n{inner}");
    assert_banned(&mail(&[nested]), "payload.exe", "banned-extension");
}

#[test]
fn raw_header_decoding_works_inside_attached_messages() {
    // Only the policy's own parser joins these two words: it reads the raw
    // header, relative to the outer input (inline) or the decoded body.
    let split =
        "Content-Type: application/octet-stream; name=\"=?UTF-8?B?eC5l?= =?UTF-8?B?eGU=?=\"";
    let inner = mail(&[part(split, b"MZ")]);
    let inline = format!(
        "Content-Type: message/rfc822\r\n\r\n{}",
        String::from_utf8_lossy(&inner)
    );
    assert_banned(&mail(&[inline]), "x.exe", "banned-extension");
    let encoded = part("Content-Type: message/rfc822", &inner);
    assert_banned(&mail(&[encoded]), "x.exe", "banned-extension");
}

#[test]
fn deeply_encoded_attached_messages_are_followed() {
    // mail-parser decodes three levels of base64 message/rfc822 itself.
    let mut raw = mail(&[attachment("payload.exe", b"MZ")]);
    for _ in 0..5 {
        raw = mail(&[part("Content-Type: message/rfc822", &raw)]);
    }
    assert_banned(&raw, "payload.exe", "banned-extension");
}

#[test]
fn mime_nesting_beyond_the_limit_is_noted_not_banned() {
    let mut raw = String::from_utf8(mail(&[attachment("deep.exe", b"MZ")])).expect("ascii");
    for _ in 0..25 {
        raw = format!("Content-Type: message/rfc822\r\n\r\n{raw}");
        raw = String::from_utf8(mail(&[raw])).expect("ascii");
    }
    let report = run(raw.as_bytes());
    assert_eq!(report.banned, None);
    assert!(
        report.notes.iter().any(|n| n == "mime depth limit reached"),
        "{report:#?}"
    );
}

// ---- archives -------------------------------------------------------------------------

#[test]
fn an_exe_inside_a_zip_is_banned() {
    let archive = zip(&[("readme.txt", b"hi"), ("x.exe", b"MZ")]);
    assert_banned(
        &mail(&[attachment("a.zip", &archive)]),
        "a.zip/x.exe",
        "banned-extension",
    );
    let in_dir = zip(&[("docs/", b""), ("docs/invoice.pdf.scr", b"MZ")]);
    assert_banned(
        &mail(&[attachment("a.zip", &in_dir)]),
        "a.zip/docs/invoice.pdf.scr",
        "double-extension",
    );
}

#[test]
fn a_zip_is_recognised_by_type_and_by_magic() {
    let archive = zip(&[("x.exe", b"MZ")]);
    let by_type = part(
        "Content-Type: application/x-zip-compressed; name=\"data\"",
        &archive,
    );
    assert_banned(&mail(&[by_type]), "data/x.exe", "banned-extension");
    assert_banned(
        &mail(&[attachment("data.bin", &archive)]),
        "data.bin/x.exe",
        "banned-extension",
    );
    let unnamed = part("Content-Type: application/octet-stream", &archive);
    assert_banned(
        &mail(&[unnamed]),
        "(unnamed part 3)/x.exe",
        "banned-extension",
    );
}

#[test]
fn a_zip_sent_as_text_is_decoded_from_the_raw_body() {
    let archive = zip(&[("x.exe", b"MZ")]);
    let as_text = part(
        "Content-Disposition: attachment; filename=\"a.zip\"",
        &archive,
    );
    assert_banned(&mail(&[as_text]), "a.zip/x.exe", "banned-extension");
}

#[test]
fn a_zip_inside_a_zip_is_opened() {
    let inner = zip(&[("x.exe", b"MZ")]);
    let outer = zip(&[("notes.txt", b"hi"), ("inner.zip", &inner)]);
    assert_banned(
        &mail(&[attachment("a.zip", &outer)]),
        "a.zip/inner.zip/x.exe",
        "banned-extension",
    );
}

#[test]
fn a_third_archive_level_exceeds_the_default_depth() {
    let third = zip(&[("notes.txt", b"hi")]);
    let second = zip(&[("c.zip", &third)]);
    let first = zip(&[("b.zip", &second)]);
    assert_banned(
        &mail(&[attachment("a.zip", &first)]),
        "a.zip/b.zip/c.zip",
        "archive-limits",
    );
}

#[test]
fn encrypted_members_are_named_not_opened() {
    let options = encrypted();
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("inner.zip", options).expect("start");
    writer.write_all(&zip(&[("x.exe", b"MZ")])).expect("write");
    writer.start_file("notes.txt", options).expect("start");
    writer.write_all(b"hi").expect("write");
    let archive = writer.finish().expect("finish").into_inner();
    let report = run(&mail(&[attachment("a.zip", &archive)]));
    assert_eq!(report.banned, None);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("encrypted archive not opened: a.zip/inner.zip")),
        "{report:#?}"
    );

    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("x.exe", options).expect("start");
    writer.write_all(b"MZ").expect("write");
    let archive = writer.finish().expect("finish").into_inner();
    assert_banned(
        &mail(&[attachment("a.zip", &archive)]),
        "a.zip/x.exe",
        "banned-extension",
    );
}

#[test]
fn a_zip_bomb_member_is_archive_limits() {
    let report = run(&mail(&[attachment("bomb.zip", zeros_bomb())]));
    assert_eq!(
        report.banned,
        banned("bomb.zip/zeros.bin", "archive-limits"),
        "{report:#?}"
    );
}

#[test]
fn a_bomb_with_a_lying_header_is_stopped_while_reading() {
    let raw = mail(&[attachment("a.zip", lying_bomb())]);
    let limits = [
        (
            PolicyConfig {
                max_archive_ratio: 10,
                ..PolicyConfig::default()
            },
            "compression ratio",
        ),
        (
            PolicyConfig {
                max_archive_bytes: 4 << 20,
                ..PolicyConfig::default()
            },
            "total uncompressed bytes",
        ),
    ];
    for (config, note) in &limits {
        let report = run_with(&raw, config);
        assert_eq!(
            report.banned,
            banned("a.zip/inner.zip", "archive-limits"),
            "{report:#?}"
        );
        assert!(
            report.notes.iter().any(|n| n.ends_with(note)),
            "{note}: {report:#?}"
        );
    }
}

#[test]
fn too_many_entries_is_archive_limits() {
    let members: Vec<(String, Vec<u8>)> =
        (0..10).map(|i| (format!("f{i}.txt"), vec![b'x'])).collect();
    let refs: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let raw = mail(&[attachment("many.zip", &zip(&refs))]);
    assert_eq!(run(&raw).banned, None);
    let config = PolicyConfig {
        max_archive_entries: 5,
        ..PolicyConfig::default()
    };
    assert_eq!(
        run_with(&raw, &config).banned,
        banned("many.zip", "archive-limits")
    );
}

#[test]
fn end_record_flood_is_bounded() {
    let mut flood = b"PK\x03\x04".to_vec();
    for _ in 0..40_000 {
        flood.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0\x2e\0\0\0\x04\0\0\0\0\0");
    }
    assert_banned(
        &mail(&[attachment("flood.zip", &flood)]),
        "flood.zip",
        "archive-limits",
    );
}

#[test]
fn an_unreadable_zip_is_noted_not_banned() {
    let report = run(&mail(&[attachment(
        "broken.zip",
        b"PK\x03\x04 this is not really a zip",
    )]));
    assert_eq!(report.banned, None);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.starts_with("archive unreadable: broken.zip")),
        "{report:#?}"
    );
}

#[test]
fn a_clean_mail_with_a_pdf_and_a_zip_of_text_files_passes() {
    let archive = zip(&[
        ("a.txt", b"one"),
        ("b.txt", b"two"),
        ("sub/c.txt", b"three"),
    ]);
    let pdf = part(
        "Content-Type: application/pdf; name=\"report.pdf\"",
        b"%PDF-1.4\n%%EOF\n",
    );
    let report = run(&mail(&[pdf, attachment("texts.zip", &archive)]));
    assert_eq!(report.banned, None, "{report:#?}");
    assert_eq!(
        (report.parts, report.attachments, report.archive_entries),
        (4, 2, 3)
    );
    assert!(report.notes.is_empty(), "{report:#?}");
}

// ---- malformed input ------------------------------------------------------------------

#[test]
fn malformed_messages_do_not_panic() {
    let exe = base64(b"MZ");
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\r\n\r\n".to_vec(),
        b"no headers at all, just text".to_vec(),
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nno end".to_vec(),
        b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\n--\r\n".to_vec(),
        b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\n--x--\r\n".to_vec(),
        format!("Content-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBBQAAAAIA{exe}").into_bytes(),
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@@====!!!!".to_vec(),
        b"Content-Type: message/rfc822\r\n\r\n".to_vec(),
        b"Content-Disposition: attachment; filename*0*=; filename*4294967295=\"\"; filename*=''\r\n\r\n".to_vec(),
        b"Content-Type: \xff\xfe\x00; name=\"\x00\"\r\n\r\n\x00\x01\x02".to_vec(),
        (0..=255u8).cycle().take(100_000).collect(),
    ];
    for raw in cases {
        let report = run(&raw);
        assert_eq!(report.banned, None, "{:?}", String::from_utf8_lossy(&raw));
    }
}

#[test]
fn a_thousand_nested_multiparts_return_promptly() {
    let mut raw = String::from("From: a@b\r\n");
    for level in 0..1000 {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n"
        ));
    }
    raw.push_str("Content-Type: application/octet-stream; name=deep.exe\r\n\r\nMZ\r\n");
    for level in (0..1000).rev() {
        raw.push_str(&format!("--b{level}--\r\n"));
    }
    let report = run(raw.as_bytes());
    assert_eq!(report.banned, None);
    assert!(
        report.notes.iter().any(|n| n == "mime depth limit reached"),
        "{report:#?}"
    );
}

#[test]
fn pseudo_random_garbage_never_panics() {
    let seeds = [
        mail(&[attachment("x.exe", b"MZ")]),
        mail(&[attachment(
            "a.zip",
            &zip(&[("inner.zip", &zip(&[("x.exe", b"MZ")]))]),
        )]),
        mail(&[format!(
            "Content-Type: message/rfc822\r\n\r\n{}",
            String::from_utf8_lossy(&mail(&[]))
        )]),
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for round in 0..2000 {
        let mut raw = seeds[round % seeds.len()].clone();
        // Flip, drop and duplicate bytes; sometimes pure noise.
        for _ in 0..(rng.next() % 32) {
            let at = (rng.next() as usize) % raw.len().max(1);
            match rng.next() % 4 {
                0 if !raw.is_empty() => raw[at] = rng.next() as u8,
                1 if !raw.is_empty() => raw.truncate(at),
                2 => raw
                    .splice(at..at, b"\r\n--=_policy_test_boundary\r\n".iter().copied())
                    .for_each(drop),
                _ => raw.extend((0..rng.next() % 64).map(|_| rng.next() as u8)),
            }
        }
        let _ = run(&raw);
    }
}

#[test]
fn pseudo_random_zip_damage_never_panics() {
    let nested = zip(&[
        ("inner.zip", &zip(&[("a.txt", b"hello hello hello")])),
        ("b.txt", b"x"),
    ]);
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..300 {
        let mut archive = nested.clone();
        for _ in 0..(1 + rng.next() % 8) {
            let at = (rng.next() as usize) % archive.len();
            archive[at] = rng.next() as u8;
        }
        let report = run(&mail(&[attachment("a.zip", &archive)]));
        if let Some(banned) = report.banned {
            assert!(
                banned.rule == "archive-limits" || banned.rule.ends_with("extension"),
                "{banned:?}"
            );
        }
    }
}
