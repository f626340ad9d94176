//! The demo's users deleting mail as their mail client does: log in to
//! Dovecot's IMAP (`ops/dovecot`, serving the storage writer's mail root;
//! it checks the password against slapd, where the fleet's directory
//! provisioned the account), and `UID MOVE` a message from INBOX to Trash.
//! A minimal IMAP4rev1 client: tagged commands, untagged lines, no
//! literals (the demo's logins and folders need none).

use std::time::Duration;

use anyhow::Context;
use mailfleet_api::wire::Secret;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// Dovecot's IMAP port (`MAILFLEET_DOVECOT_IMAP_PORT`, default 1143).
pub fn imap_addr() -> String {
    let port = std::env::var("MAILFLEET_DOVECOT_IMAP_PORT").unwrap_or_else(|_| "1143".into());
    format!("127.0.0.1:{port}")
}

/// One IMAP session.
struct Session {
    stream: BufReader<TcpStream>,
    tag: u32,
}

impl Session {
    async fn connect(addr: &str) -> anyhow::Result<Session> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting Dovecot's IMAP at {addr} (ops/dovecot start)"))?;
        let mut s = Session {
            stream: BufReader::new(stream),
            tag: 0,
        };
        let greeting = s.line().await?;
        anyhow::ensure!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
        Ok(s)
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        let read = self.stream.read_line(&mut line);
        let n = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .context("IMAP: no answer in 30 s")??;
        anyhow::ensure!(n > 0, "IMAP: the server closed the connection");
        Ok(line.trim_end().to_string())
    }

    /// Send `command` (`shown` in errors: a LOGIN hides its password);
    /// returns the untagged lines and the tagged status line.
    async fn call(&mut self, command: &str, shown: &str) -> anyhow::Result<(Vec<String>, String)> {
        self.tag += 1;
        let tag = format!("d{}", self.tag);
        let stream = self.stream.get_mut();
        stream
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let mut untagged = Vec::new();
        let status = loop {
            let line = self.line().await?;
            if let Some(status) = line.strip_prefix(&format!("{tag} ")) {
                break status.to_string();
            }
            untagged.push(line);
        };
        anyhow::ensure!(status.starts_with("OK"), "IMAP {shown}: {status}");
        Ok((untagged, status))
    }
}

/// Log in as `account` and move the oldest message of its INBOX to Trash
/// with `UID MOVE` (creating Trash if needed); returns whether a message
/// was moved.
pub async fn move_oldest_to_trash(
    addr: &str,
    account: &str,
    password: &Secret,
) -> anyhow::Result<bool> {
    let mut s = Session::connect(addr).await?;
    let login = format!("LOGIN \"{account}\" \"{}\"", password.expose());
    s.call(&login, &format!("LOGIN {account}"))
        .await
        .with_context(|| {
            format!("{account} logging in to IMAP (is the directory's entry in slapd?)")
        })?;
    s.call("SELECT INBOX", "SELECT INBOX").await?;
    let (lines, _) = s.call("UID SEARCH ALL", "UID SEARCH ALL").await?;
    let first = lines
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|uid| uid.parse::<u64>().ok())
        .min();
    let Some(uid) = first else {
        s.call("LOGOUT", "LOGOUT").await?;
        return Ok(false);
    };
    // Already there is fine: CREATE answers NO then.
    let _ = s.call("CREATE Trash", "CREATE Trash").await;
    let command = format!("UID MOVE {uid} Trash");
    s.call(&command, &command).await?;
    s.call("LOGOUT", "LOGOUT").await?;
    Ok(true)
}
