//! The S3 blob backend against a real S3 server: SeaweedFS as `ops/s3
//! start` runs it (shared; each test keeps to a key prefix of its own), or a
//! private instance for the outage (`outage::Private::s3`), which a test may
//! stop. A server that is not running fails the test, never skips it.
//!
//! - the local store's assertions, on both backends: content addressing,
//!   put twice, missing vs bad ids, references and release, and deliveries
//!   racing releases; two stores on one prefix (two hosts) share the blobs;
//! - bad configs refused at start, naming the key and value: a bucket
//!   that does not exist, wrong credentials, an unreachable endpoint, a
//!   missing key file (the library, and `mailfleet lmtp` / `run scanner`);
//! - `mailfleet lmtp` → scanner → storage writer on `backend = "s3"`, with
//!   the store stopped mid-way: the LMTP server answers 4xx and announces
//!   nothing, the consumers retry without dead-lettering, and once it is
//!   back every message reaches the Maildir exactly once.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_blob::{BlobBackend, BlobConfig, BlobStore};
use mailfleet_events::mail::MessageReceived;
use mailfleet_tests::{
    blobs::*,
    faults::message_ids_on_disk,
    ingest::*,
    outage::Private,
    secrets::{scan_file, write_secret, Needle},
    *,
};

#[test]
fn both_backends_keep_the_local_stores_rules() -> anyhow::Result<()> {
    let s3 = shared_s3()?;
    let dir = scratch_dir("blobs-dir");
    let stores = [
        BlobStore::open(dir.join("blobs"))?,
        s3.store("blobs-rules")?,
    ];
    for store in stores {
        let store = Arc::new(store);
        let (at, started) = (store.shown(), Instant::now());
        store_and_read(&store).with_context(|| format!("store and read on {at}"))?;
        references(&store).with_context(|| format!("references on {at}"))?;
        deliveries_race_releases(&store, 25).with_context(|| format!("races on {at}"))?;
        println!("BLOBS {at}: every assertion in {:?}", started.elapsed());
    }
    Ok(())
}

#[test]
fn two_hosts_on_one_prefix_share_blobs_and_references() -> anyhow::Result<()> {
    let s3 = shared_s3()?;
    let cfg = s3.blob_config(&unique("blobs-hosts"));
    let (mx, deleter) = (BlobStore::from_config(&cfg)?, BlobStore::from_config(&cfg)?);
    let raw = format!("Subject: shared\r\n\r\n{}\r\n", unique("x")).into_bytes();
    let id = mailfleet_blob::blob_id(&raw);
    mx.add_refs(&id, ["one@x.test"])?;
    mx.put_with_id(&id, &raw)?;
    assert_eq!(deleter.get(&id)?, raw, "the other host reads it");
    assert_eq!(deleter.refs_of("one@x.test")?, vec![id.clone()]);
    let released = deleter.release_account("one@x.test")?;
    assert_eq!((released.references, released.blobs_removed), (1, 1));
    assert!(
        !mx.contains(&id),
        "released on one host, gone for the other"
    );
    Ok(())
}

/// The error `from_config` gives for `cfg`.
fn refusal(cfg: &BlobConfig) -> String {
    match BlobStore::from_config(cfg) {
        Ok(store) => panic!("{} was opened, not refused", store.shown()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_configs_are_refused_naming_the_key_and_value() -> anyhow::Result<()> {
    let s3 = shared_s3()?;
    let dir = scratch_dir("blobs-refused");
    let with = |f: &dyn Fn(&mut mailfleet_blob::S3Config)| {
        let mut cfg = s3.blob_config("refused");
        f(cfg.s3.as_mut().expect("an s3 table"));
        cfg
    };

    let bucket = unique("nosuch");
    let e = refusal(&with(&|c| c.bucket = bucket.clone()));
    assert_eq!(
        e,
        format!(
            "blobs.s3.bucket = {bucket:?}: no such bucket at {}",
            s3.endpoint
        )
    );

    let secret = format!("wrong-{:032x}", rand::random::<u128>());
    let wrong = dir.join("wrong_secret");
    write_secret(&wrong, &secret)?;
    let e = refusal(&with(&|c| c.secret_access_key_file = wrong.clone()));
    let expected = format!(
        "blobs.s3.secret_access_key_file = {:?}: ",
        wrong.display().to_string()
    );
    assert!(e.starts_with(&expected), "{e}");
    assert!(!e.contains(&secret), "the secret is never shown: {e}");

    let unknown = dir.join("unknown_id");
    write_secret(&unknown, "MFNOSUCHKEY000000000")?;
    let e = refusal(&with(&|c| c.access_key_id_file = unknown.clone()));
    assert!(e.starts_with("blobs.s3.access_key_id_file = "), "{e}");

    let port = free_port();
    let nobody = format!("http://127.0.0.1:{port}");
    let e = refusal(&with(&|c| c.endpoint = nobody.clone()));
    assert!(
        e.starts_with(&format!(
            "blobs.s3.endpoint = {nobody:?}: bucket \"{}\" does not answer there",
            s3.bucket
        )),
        "{e}"
    );

    let missing = dir.join("no-such-file");
    let e = refusal(&with(&|c| c.access_key_id_file = missing.clone()));
    assert!(
        e.starts_with(&format!(
            "blobs.s3.access_key_id_file = {:?}: cannot read it",
            missing.display().to_string()
        )),
        "{e}"
    );

    let no_table = BlobConfig {
        backend: BlobBackend::S3,
        ..BlobConfig::default()
    };
    assert!(refusal(&no_table).contains("[blobs.s3]"));
    Ok(())
}

/// Run `mailfleet <args>` to its end (it must end within a minute, with
/// an error); its output.
fn refused_run(config: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut child = Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            anyhow::bail!("mailfleet {args:?} did not stop within a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(!out.status.success(), "mailfleet {args:?} started");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_refuses_to_start_on_a_bad_bucket_or_secret() -> anyhow::Result<()> {
    let s3 = shared_s3()?;
    let world = MailWorld::new("blobs-start", kafka()).await?;
    let bucket = unique("nosuch");
    let bad_bucket = s3
        .table("x")
        .replace(&format!("{:?}", s3.bucket), &format!("{bucket:?}"));
    let config = world.write_config("bucket.toml", free_port(), &bad_bucket)?;
    use_s3(&config)?;
    let out = refused_run(&config, &["lmtp"])?;
    let expected = format!(
        "blobs.s3.bucket = {bucket:?}: no such bucket at {}",
        s3.endpoint
    );
    assert!(out.contains(&expected), "{out}");

    let wrong = world.dir.join("wrong_secret");
    write_secret(&wrong, &format!("{:040x}", rand::random::<u128>()))?;
    let real = s3.keys.join("secret_access_key").display().to_string();
    let bad_secret = s3.table("x").replace(
        &format!("{real:?}"),
        &format!("{:?}", wrong.display().to_string()),
    );
    let config = world.write_config(
        "secret.toml",
        free_port(),
        &(world.scanner_table(false, &[]) + &bad_secret),
    )?;
    use_s3(&config)?;
    let out = refused_run(&config, &["run", "scanner"])?;
    let expected = format!(
        "blobs.s3.secret_access_key_file = {:?}",
        wrong.display().to_string()
    );
    assert!(out.contains(&expected), "{out}");
    Ok(())
}

/// How many messages of `tag` are in the Maildirs below `root`, and
/// whether any is there twice.
fn arrived(root: &Path, tag: &str) -> anyhow::Result<(usize, usize)> {
    let ids = message_ids_on_disk(root)?;
    let ours: Vec<usize> = ids
        .iter()
        .filter(|(id, _)| id.contains(tag))
        .map(|(_, n)| *n)
        .collect();
    Ok((ours.len(), ours.iter().filter(|n| **n > 1).count()))
}

/// Deliver `subjects` to bob, one transaction each; the first reply of each.
fn deliver_all(port: u16, subjects: &[String]) -> anyhow::Result<Vec<String>> {
    let (mut c, _) = LmtpClient::connect(port)?;
    c.command("LHLO mx.example.test")?;
    subjects
        .iter()
        .map(|s| {
            let reply = c.deliver(
                "alice@example.net",
                &["bob@example.test"],
                &simple_message(s, "hi"),
            )?;
            Ok(reply.join(" "))
        })
        .collect()
}

fn signal(child: &std::process::Child, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {signal} {}", child.id());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_outage_is_a_4xx_and_a_retry_and_every_message_arrives_once() -> anyhow::Result<()> {
    let s3 = Private::s3("blobs-outage");
    s3.start()?;
    let server = private_s3(&s3);
    let world = MailWorld::new("blobs-outage", kafka()).await?;
    let mail_root = world.dir.join("mail");
    let tables = world.scanner_table(false, &[])
        + &world.storage_table(&mail_root, None, "")
        + &server.table(&world.name);
    let mut children = Children::default();
    let roles: [(&str, &[&str]); 3] = [
        ("lmtp", &["lmtp"]),
        ("scanner", &["run", "scanner"]),
        ("storage", &["run", "storage"]),
    ];
    for (name, args) in roles {
        let config = world.write_config(&format!("{name}.toml"), free_port(), &tables)?;
        use_s3(&config)?;
        let log = world.dir.join(format!("{name}.log"));
        children.0.push(spawn_mailfleet(&config, args, &log)?);
    }
    wait_listening("the LMTP server", world.lmtp_port).await?;
    let tag = unique("s3mail");
    let batch = |b: &str| (0..3).map(|i| format!("{tag}-{b}{i}")).collect::<Vec<_>>();
    let (up, lagging, down) = (batch("up"), batch("lag"), batch("down"));

    // The store is up: delivered and stored.
    for reply in deliver_all(world.lmtp_port, &up)? {
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    wait_until(
        "the first messages in the Maildir",
        Duration::from_secs(120),
        || arrived(&mail_root, &tag).is_ok_and(|(n, _)| n == up.len()),
    )
    .await?;

    // The consumers fall behind (stopped), a batch is accepted, and the
    // store goes down under them.
    signal(&children.0[1], "-STOP")?;
    signal(&children.0[2], "-STOP")?;
    for reply in deliver_all(world.lmtp_port, &lagging)? {
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    s3.stop()?;
    let outage = Instant::now();
    for reply in deliver_all(world.lmtp_port, &down)? {
        assert!(reply.starts_with("452 4.3.1"), "the store is down: {reply}");
    }
    signal(&children.0[1], "-CONT")?;
    signal(&children.0[2], "-CONT")?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    for child in &mut children.0 {
        assert!(
            child.try_wait()?.is_none(),
            "a process died during the outage"
        );
    }
    let (stored, _) = arrived(&mail_root, &tag)?;
    assert_eq!(
        stored,
        up.len(),
        "nothing can be stored while the store is down"
    );
    let dead = read_topic(&world.deadletter, 1, Duration::from_secs(2))?;
    assert!(dead.is_empty(), "an outage is retried, never dead-lettered");

    // Back: Postfix retries what got a 4xx; everything arrives once.
    s3.start()?;
    let down_for = outage.elapsed();
    for reply in deliver_all(world.lmtp_port, &down)? {
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    let all = up.len() + lagging.len() + down.len();
    wait_until(
        "every message in the Maildir",
        Duration::from_secs(120),
        || arrived(&mail_root, &tag).is_ok_and(|(n, _)| n == all),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (stored, twice) = arrived(&mail_root, &tag)?;
    assert_eq!((stored, twice), (all, 0), "each message exactly once");
    let events: Vec<MessageReceived> = decode_all(&read_topic(
        &world.received,
        usize::MAX,
        Duration::from_secs(3),
    )?)?;
    assert_eq!(
        events.len(),
        all,
        "the refused ones were announced once, on their retry"
    );
    assert!(read_topic(&world.deadletter, 1, Duration::from_secs(2))?.is_empty());
    println!("FAULT s3 outage: down {down_for:.1?}, {} refused with 452 then accepted, {} waited in the consumers", down.len(), lagging.len());

    // The S3 secret is in no log.
    let secret = std::fs::read_to_string(server.keys.join("secret_access_key"))?;
    let needles = [Needle::new("the S3 secret", secret.trim())];
    children.terminate()?;
    for name in ["lmtp", "scanner", "storage"] {
        let hits = scan_file(&needles, &world.dir.join(format!("{name}.log")), 0)?;
        assert!(hits.is_empty(), "{hits:?}");
    }
    Ok(())
}
