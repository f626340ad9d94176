//! The storage writer's `compress = true` read back through the real
//! Dovecot (G7): LMTP → `mailfleet lmtp` → Kafka → scanner → storage
//! writer with `compress = true` → Maildir (each file one zstd frame, its
//! `S=` and `W=` the uncompressed sizes) → Dovecot's zlib plugin → IMAP,
//! where every message is fetched byte for byte as it was delivered.

use std::{path::Path, time::Duration};

use mailfleet_events::{mail::MessageStored, Registry};
use mailfleet_tests::{ingest::*, *};

/// zstd's frame magic (RFC 8878), little-endian 0xFD2FB528.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The value of `key=` (`S` or `W`) in a Maildir file name.
fn size_field(name: &str, key: &str) -> Option<u64> {
    let info = name.split(":2,").next()?;
    info.split(',')
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// One zstd frame, decompressed (its header declares the size).
fn unzstd(frame: &[u8]) -> anyhow::Result<Vec<u8>> {
    let size = zstd_safe::get_frame_content_size(frame)
        .map_err(|e| anyhow::anyhow!("not a zstd frame: {e:?}"))?
        .ok_or_else(|| anyhow::anyhow!("the zstd frame does not declare its size"))?;
    let mut out = vec![0u8; usize::try_from(size)?];
    let n = zstd_safe::decompress(&mut out[..], frame)
        .map_err(|e| anyhow::anyhow!("zstd: {}", zstd_safe::get_error_name(e)))?;
    out.truncate(n);
    Ok(out)
}

/// A message of about `kib` KiB of varied text lines, one starting with a
/// dot (dot-stuffed on the wire).
fn big_message(subject: &str, kib: usize) -> String {
    let mut body = String::from(".a line that starts with a dot\r\n");
    let mut n: u64 = 1;
    while body.len() < kib * 1024 {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        body.push_str(&format!("line {n:020} of the big message\r\n"));
    }
    simple_message(subject, &body)
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_maildir_files_are_served_by_dovecot_byte_for_byte() -> anyhow::Result<()> {
    let (mail_root, owner) = dovecot()?;
    let world = MailWorld::new("storage-compress", kafka()).await?;
    let tables = world.scanner_table(false, &[])
        + &world.storage_table(&mail_root, Some(owner), "compress = true");
    let log = world.dir.join("children.log");
    let mut children = Children::default();
    let roles: [(&str, &[&str]); 3] = [
        ("lmtp", &["lmtp"]),
        ("scanner", &["run", "scanner"]),
        ("storage", &["run", "storage", "index"]),
    ];
    for (name, args) in roles {
        let cfg = world.write_config(&format!("{name}.toml"), free_port(), &tables)?;
        children.0.push(spawn_mailfleet(&cfg, args, &log)?);
    }
    wait_listening("the LMTP server", world.lmtp_port).await?;

    let tag = unique("zst");
    let user = format!("{tag}@example.test");
    let password = dovecot_user(&user)?;
    let messages = [
        simple_message(&format!("{tag}-small"), "short"),
        simple_message(&format!("{tag}-dot"), ".\r\n..two dots\r\nend"),
        big_message(&format!("{tag}-big"), 300),
    ];
    for message in &messages {
        let (mut c, _) = LmtpClient::connect(world.lmtp_port)?;
        c.command("LHLO test")?;
        let replies = c.deliver("sender@example.net", &[user.as_str()], message)?;
        anyhow::ensure!(replies[0].starts_with("250"), "LMTP: {replies:?}");
    }

    let mut stored: Vec<MessageStored> = Vec::new();
    wait_until("three MessageStored", Duration::from_secs(60), || {
        stored = read_topic(&world.stored, usize::MAX, Duration::from_secs(1))
            .unwrap_or_default()
            .iter()
            .filter_map(|(_, b)| Registry::builtin().decode::<MessageStored>(b).ok())
            .filter(|e| e.account == user)
            .collect();
        stored.len() >= 3
    })
    .await?;
    children.terminate()?;

    // On disk: one zstd frame per message, S= the uncompressed size.
    let (local, domain) = user.split_once('@').unwrap_or_default();
    let files = walk(&mail_root.join(domain).join(local));
    let mail_files: Vec<_> = files
        .iter()
        .filter(|f| {
            f.parent()
                .is_some_and(|p| p.ends_with("new") || p.ends_with("cur"))
        })
        .collect();
    assert_eq!(mail_files.len(), 3, "three Maildir files: {files:?}");
    let mut on_disk = Vec::new();
    for file in &mail_files {
        let bytes = std::fs::read(file)?;
        assert!(
            bytes.starts_with(&ZSTD_MAGIC),
            "{} is not zstd-compressed (starts {:02x?})",
            file.display(),
            &bytes[..bytes.len().min(4)]
        );
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let size = size_field(&name, "S").ok_or_else(|| anyhow::anyhow!("no S= in {name}"))?;
        anyhow::ensure!(
            stored.iter().any(|e| name.starts_with(e.file.as_str())),
            "no MessageStored for {name}: {stored:?}"
        );
        let plain = unzstd(&bytes)?;
        assert_eq!(size, plain.len() as u64, "S= of {name}");
        on_disk.push(plain);
    }

    // Over IMAP: what was delivered, byte for byte, decompressed by Dovecot.
    let inbox = imap_fetch(&user, &password, "INBOX")?;
    assert_eq!(inbox.len(), 3, "three messages in INBOX");
    for plain in &on_disk {
        assert!(
            inbox.iter().any(|m| m == plain),
            "IMAP does not serve a file's decompressed bytes ({} bytes)",
            plain.len()
        );
    }
    for (message, tag) in messages.iter().zip(["small", "dot", "big"]) {
        assert!(
            inbox.iter().any(|m| m.ends_with(message.as_bytes())),
            "the {tag} message is not served as sent"
        );
    }
    Ok(())
}
