//! `docs/metrics.md` is the telemetry contract: it lists every metric name
//! the code defines, and nothing else.

use std::collections::BTreeSet;

use mailfleet_runtime::metrics as m;
use mailfleet_tests::repo_root;

#[test]
fn the_metrics_doc_lists_exactly_the_defined_names() -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(repo_root().join("docs/metrics.md"))?;
    let documented: BTreeSet<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("mailfleet_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let defined: BTreeSet<&str> = [
        m::ALL,
        m::POLICY_ALL,
        m::LMTP_ALL,
        m::SCANNER_ALL,
        m::STORAGE_ALL,
        m::PURGER_ALL,
        m::POSTFIX_MAP_ALL,
        m::SCHEDULER_ALL,
        m::CLOCK_ALL,
        m::API_ALL,
        &[
            m::MERGE_HELD,
            m::MERGE_LATE,
            m::GREYLIST_DECISIONS,
            m::LIFECYCLE_TRANSITIONS,
        ],
        mailfleet_notifier::metrics::ALL,
        mailfleet_outbound::metrics::ALL,
        mailfleet_submission::metrics::ALL,
    ]
    .concat()
    .into_iter()
    .collect();
    let undocumented: Vec<_> = defined.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&defined).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/metrics.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "documented but not defined: {unknown:?}"
    );
    Ok(())
}
