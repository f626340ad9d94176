//! The blob store's disk full: `mailfleet lmtp` with its blob folder on a
//! small tmpfs (mounted here, so the test needs root, as `ops/test` runs;
//! unmounted when the test ends, also on failure). With the disk full the
//! DATA reply is `452 4.3.1` for each recipient, no `MessageReceived` is
//! produced and no blob (whole or partial) is left; once space is freed,
//! the same message is accepted and announced once per recipient.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use mailfleet_events::mail::MessageReceived;
use mailfleet_runtime::metrics as m;
use mailfleet_tests::{ingest::*, outage::report, *};

/// A tmpfs mounted on a folder until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mounting a {size} tmpfs on {} (this test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.0).status();
        if !plain.is_ok_and(|s| s.success()) {
            // Still busy (a child not yet reaped): detach it now, gone once free.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Write a file in `dir` until the disk is full; the bytes written.
fn fill(dir: &Path) -> anyhow::Result<u64> {
    let mut f = std::fs::File::create(dir.join("filler"))?;
    let chunk = vec![0xa5_u8; 64 * 1024];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => return Ok(written),
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return Ok(written),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Files in the blob store: (blobs, temporary files).
fn blob_files(root: &Path) -> anyhow::Result<(usize, usize)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut blobs = Vec::new();
    walk(root, &mut blobs)?;
    let zst = blobs
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "zst"))
        .count();
    let tmp = std::fs::read_dir(root.join("tmp"))?.count();
    Ok((zst, tmp))
}

/// Every `MessageReceived` on the world's topic up to its end now. The
/// server replies to DATA only once its events are acknowledged, so after
/// a reply the topic as it is holds everything announced before it.
fn received(world: &MailWorld) -> anyhow::Result<Vec<MessageReceived>> {
    Ok(mailfleet_runtime::read::read_events(
        &world.kafka,
        &world.received,
        "faults-disk",
    )?)
}

fn subject_count(events: &[MessageReceived], subject: &str) -> usize {
    events
        .iter()
        .filter(|e| e.subject.as_deref() == Some(subject))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_disk_full_answers_452_announces_nothing_and_the_retry_is_accepted_once(
) -> anyhow::Result<()> {
    let world = MailWorld::new("faults-disk", kafka()).await?;
    let blobs = world.blob_dir();
    // Declared before the child, so it is unmounted after the child is gone.
    let _tmpfs = Tmpfs::mount(&blobs, "2m")?;
    let metrics = free_port();
    let config = world.write_config("lmtp.toml", metrics, "")?;
    let mut lmtp = Children(vec![spawn_mailfleet(
        &config,
        &["lmtp"],
        &world.dir.join("lmtp.log"),
    )?]);
    let port = world.lmtp_port;
    wait_listening("the LMTP server", port).await?;
    let (mut c, _) = LmtpClient::connect(port)?;
    c.command("LHLO mx")?;
    let to = ["b@example.test", "c@example.test"];
    let first = c.deliver("a@example.net", &to[..1], &simple_message("before", "1"))?;
    assert!(first[0].starts_with("250"), "{first:?}");

    let filled = fill(&blobs)?;
    let message = simple_message("full", &"x".repeat(20_000));
    let refused = c.deliver("a@example.net", &to, &message)?;
    assert_eq!(refused.len(), 2, "{refused:?}");
    for reply in &refused {
        assert!(reply.starts_with("452 4.3.1"), "disk full: {refused:?}");
    }
    let events = received(&world)?;
    assert_eq!(subject_count(&events, "before"), 1, "{events:?}");
    assert_eq!(
        subject_count(&events, "full"),
        0,
        "announced on a full disk"
    );
    let ends_full: i64 = end_offsets(std::slice::from_ref(&world.received))?
        .values()
        .sum();
    assert_eq!(ends_full, 1, "nothing produced for the refused message");
    let (zst, tmp) = blob_files(&blobs)?;
    assert_eq!(
        (zst, tmp),
        (1, 0),
        "no partial blob nor temporary file left"
    );
    let text = scrape(metrics).unwrap_or_default();
    let failed = metric_sum(&text, m::LMTP_MESSAGES, &["result=\"storage_failed\""]);
    assert_eq!(failed, 1.0, "the refusal counted:\n{text}");

    // Space freed: the client's retry (same bytes) is taken and announced once.
    std::fs::remove_file(blobs.join("filler"))?;
    let freed = Instant::now();
    let retry = c.deliver("a@example.net", &to, &message)?;
    let accepted_in = freed.elapsed();
    assert!(retry.iter().all(|r| r.starts_with("250")), "{retry:?}");
    let events = received(&world)?;
    let full: Vec<_> = events
        .iter()
        .filter(|e| e.subject.as_deref() == Some("full"))
        .collect();
    let mut ids: Vec<_> = full.iter().map(|e| &e.envelope.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (full.len(), ids.len()),
        (2, 2),
        "once per recipient: {full:?}"
    );
    assert_eq!(blob_files(&blobs)?, (2, 0));
    report(
        "disk-full",
        &[
            ("tmpfs", "2m".into()),
            ("filler_bytes", filled.to_string()),
            ("replies_on_full_disk", format!("{refused:?}")),
            ("storage_failed", failed.to_string()),
            (
                "retry_accepted_s",
                format!("{:.2}", accepted_in.as_secs_f64()),
            ),
            ("announced_after_retry", full.len().to_string()),
        ],
    );
    lmtp.terminate()
}
