//! The fuzz targets' findings and corpora as normal tests, on stable.
//!
//! Every file of `fuzz/regressions/<target>/` (an input that once crashed
//! or broke a property, kept after the fix) and of `fuzz/corpus/<target>/`
//! (the minimised corpus) goes through the check that target runs
//! (`fuzz/src/checks/`). Here the checks run against the real crates: the
//! fuzz crate compiles the policy and LMTP parser modules from their files,
//! and this test binds the same names (`policy_protocol`, `lmtp`) to the
//! crates' own modules. No server is needed.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
};

use mailfleet_ingest::lmtp;
use mailfleet_policy::protocol as policy_protocol;

#[path = "../../fuzz/src/checks/mod.rs"]
mod checks;

/// Runs `check` over every regression and corpus file of `target`, and
/// fails naming each file whose check panicked.
fn run(target: &str, check: fn(&[u8])) {
    let fuzz = mailfleet_tests::repo_root().join("fuzz");
    let regressions = files(&fuzz.join("regressions").join(target));
    let corpus = files(&fuzz.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target} is empty: the seeds are gone"
    );
    let mut failed = Vec::new();
    for path in regressions.iter().chain(&corpus) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail (panic messages above):\n{}",
        failed.len(),
        regressions.len() + corpus.len(),
        failed.join("\n")
    );
}

/// The files in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.expect("read fuzz folder").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn policy_request() {
    run("policy_request", checks::policy::check);
}

#[test]
fn lmtp_session() {
    run("lmtp_session", checks::lmtp::check);
}

#[test]
fn mime_policy() {
    run("mime_policy", checks::mime::check);
}

#[test]
fn avro_decode() {
    run("avro_decode", checks::avro::check);
}

#[test]
fn the_avro_check_knows_every_schema_in_the_registry() {
    let registry = mailfleet_events::Registry::builtin();
    let missing: Vec<_> = registry
        .names()
        .into_iter()
        .filter(|name| !checks::avro::covers(name))
        .collect();
    assert!(
        missing.is_empty(),
        "add these event types to fuzz/src/checks/avro.rs: {missing:?}"
    );
}

#[test]
fn a_broken_property_fails_the_run() {
    // The harness itself: a check that fails on some input is reported.
    let outcome = catch_unwind(|| {
        run("policy_request", |data| {
            assert!(data.len() > usize::MAX / 2)
        })
    });
    assert!(outcome.is_err(), "a failing check passed");
}
