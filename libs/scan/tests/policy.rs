//! The attachment policy on whole messages built in the test: MIME as
//! strings, zip archives with the zip crate's writer, all in memory
//! (builders in `fixtures/policy/build.rs`).

use std::time::{Duration, Instant};

use mailfleet_scan::policy::{check, Banned, PolicyConfig, PolicyReport, Undecipherable};
use mailfleet_scan::Verdict;

#[path = "fixtures/policy/build.rs"]
mod build;

use build::{
    attachment, base64, encrypted_zip, end_record_flood, find, lying_bomb, mail,
    nested_past_the_mime_depth, part, stored_zip, zeros_bomb, zip, XorShift,
};

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

/// `undecipherable = "note"`: what cannot be inspected is only noted.
fn note_mode() -> PolicyConfig {
    PolicyConfig {
        undecipherable: Undecipherable::Note,
        ..PolicyConfig::default()
    }
}

/// By default (`undecipherable = "ban"`) `raw` is banned as `file` by
/// `rule`, with a note starting with `note`; under `"note"` it is not
/// banned and the report is otherwise the same, note included.
fn assert_undecipherable(raw: &[u8], file: &str, rule: &str, note: &str) {
    let by_default = run(raw);
    assert_eq!(by_default.banned, banned(file, rule), "{by_default:#?}");
    assert!(
        by_default.notes.iter().any(|n| n.starts_with(note)),
        "{note}: {by_default:#?}"
    );
    let noted = run_with(raw, &note_mode());
    let expected = PolicyReport {
        banned: None,
        ..by_default
    };
    assert_eq!(noted, expected, "undecipherable = \"note\"");
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
fn mime_nesting_beyond_the_limit_is_undecipherable_mime_depth() {
    assert_undecipherable(
        &nested_past_the_mime_depth(),
        "(part beyond mime depth 20)",
        "undecipherable-mime-depth",
        "mime depth limit reached",
    );
    // Within the limit the .exe itself is found.
    let config = PolicyConfig {
        max_mime_depth: 100,
        ..PolicyConfig::default()
    };
    let report = run_with(&nested_past_the_mime_depth(), &config);
    assert_eq!(
        report.banned,
        banned("deep.exe", "banned-extension"),
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
fn an_encrypted_zip_hiding_an_exe_is_undecipherable_encrypted() {
    let hidden = zip(&[("x.exe", b"MZ")]);
    let archive = encrypted_zip(&[("inner.zip", &hidden), ("notes.txt", b"hi")]);
    assert_undecipherable(
        &mail(&[attachment("a.zip", &archive)]),
        "a.zip/inner.zip",
        "undecipherable-encrypted",
        "archive member encrypted: a.zip/inner.zip",
    );
    // Any encrypted member, not only an archive: its content is as hidden.
    let archive = encrypted_zip(&[("notes.txt", b"hi")]);
    assert_undecipherable(
        &mail(&[attachment("a.zip", &archive)]),
        "a.zip/notes.txt",
        "undecipherable-encrypted",
        "archive member encrypted: a.zip/notes.txt",
    );
}

#[test]
fn an_encrypted_exe_is_banned_by_its_name_in_both_modes() {
    // Names come from the central directory, which is not encrypted.
    let raw = mail(&[attachment("a.zip", &encrypted_zip(&[("x.exe", b"MZ")]))]);
    for config in [PolicyConfig::default(), note_mode()] {
        let report = run_with(&raw, &config);
        assert_eq!(
            report.banned,
            banned("a.zip/x.exe", "banned-extension"),
            "{report:#?}"
        );
    }
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
    assert_banned(
        &mail(&[attachment("flood.zip", &end_record_flood())]),
        "flood.zip",
        "archive-limits",
    );
}

#[test]
fn an_unreadable_zip_is_undecipherable_unreadable() {
    let garbage = part(
        "Content-Type: application/zip; name=\"a.zip\"",
        b"\x8f\x12 garbage, not a zip at all \x00\xff",
    );
    assert_undecipherable(
        &mail(&[garbage]),
        "a.zip",
        "undecipherable-unreadable",
        "archive unreadable: a.zip",
    );
    let truncated = attachment("broken.zip", b"PK\x03\x04 this is not really a zip");
    assert_undecipherable(
        &mail(&[truncated]),
        "broken.zip",
        "undecipherable-unreadable",
        "archive unreadable: broken.zip",
    );
}

#[test]
fn a_zip_member_failing_its_checksum_is_undecipherable_unreadable() {
    // inner.zip stored (not deflated), so its bytes sit in the outer zip
    // as they are; one flipped byte of its member's data breaks the outer
    // member's CRC and nothing else.
    let inner = zip(&[("notes.txt", b"hello hello hello")]);
    let mut outer = stored_zip(&[("inner.zip", &inner)]);
    let data = find(&outer, &inner) + 30 + "notes.txt".len();
    outer[data] ^= 0xff;
    assert_undecipherable(
        &mail(&[attachment("a.zip", &outer)]),
        "a.zip/inner.zip",
        "undecipherable-unreadable",
        "archive member unreadable: a.zip/inner.zip",
    );
}

#[test]
fn a_banned_name_outranks_an_undecipherable_finding_before_or_after_it() {
    let unreadable = || attachment("a.zip", b"PK\x03\x04 not a zip");
    let exe = || attachment("x.exe", b"MZ");
    for parts in [[unreadable(), exe()], [exe(), unreadable()]] {
        assert_banned(&mail(&parts), "x.exe", "banned-extension");
    }
    // Within one archive, and past the mime depth.
    let good = zip(&[("x.exe", b"MZ")]);
    let archive = zip(&[("bad.zip", b"not a zip"), ("good.zip", &good)]);
    assert_banned(
        &mail(&[attachment("a.zip", &archive)]),
        "a.zip/good.zip/x.exe",
        "banned-extension",
    );
    let deep = String::from_utf8(nested_past_the_mime_depth()).expect("ascii");
    let deep = format!("Content-Type: message/rfc822\r\n\r\n{deep}");
    assert_banned(&mail(&[deep, exe()]), "x.exe", "banned-extension");
    // archive-limits is a ban of the walk's own too.
    let flood = attachment("flood.zip", &end_record_flood());
    assert_banned(&mail(&[unreadable(), flood]), "flood.zip", "archive-limits");
}

#[test]
fn the_first_undecipherable_finding_is_the_one_reported() {
    let encrypted = attachment("b.zip", &encrypted_zip(&[("notes.txt", b"hi")]));
    let raw = mail(&[attachment("a.zip", b"not a zip"), encrypted]);
    let report = run(&raw);
    assert_eq!(
        report.banned,
        banned("a.zip", "undecipherable-unreadable"),
        "{report:#?}"
    );
    // Both are noted, in both modes.
    assert_eq!(report.notes.len(), 2, "{report:#?}");
    assert_eq!(run_with(&raw, &note_mode()).notes, report.notes);
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
fn malformed_messages_do_not_panic_and_only_a_broken_zip_is_banned() {
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
    // No headers, an empty attached message, undecodable base64 that is no
    // archive: oddities, noted at most, never banned. The truncated zip is
    // the one thing that hides content.
    let broken_zip = 6;
    for (index, raw) in cases.iter().enumerate() {
        let text = String::from_utf8_lossy(raw);
        let report = run(raw);
        let expected = (index == broken_zip).then(|| Banned {
            file: "a.zip".into(),
            rule: "undecipherable-unreadable".into(),
        });
        assert_eq!(report.banned, expected, "{text:?}: {report:#?}");
        assert_eq!(run_with(raw, &note_mode()).banned, None, "{text:?}");
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
    assert_undecipherable(
        raw.as_bytes(),
        "(part beyond mime depth 20)",
        "undecipherable-mime-depth",
        "mime depth limit reached",
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
        let raw = mail(&[attachment("a.zip", &archive)]);
        let report = run(&raw);
        if let Some(banned) = &report.banned {
            let rules = [
                "archive-limits",
                "banned-extension",
                "double-extension",
                "undecipherable-encrypted",
                "undecipherable-unreadable",
            ];
            assert!(rules.contains(&banned.rule.as_str()), "{banned:?}");
        }
        // Damage the walk cannot see into is noted either way; the mode
        // decides only whether it bans.
        let noted = run_with(&raw, &note_mode());
        assert_eq!(noted.notes, report.notes);
        if noted.banned.is_none() {
            assert!(
                report.banned.is_none()
                    || report
                        .banned
                        .as_ref()
                        .is_some_and(|b| b.rule.starts_with("undecipherable-")),
                "{report:#?}"
            );
        } else {
            assert_eq!(noted.banned, report.banned);
        }
    }
}
