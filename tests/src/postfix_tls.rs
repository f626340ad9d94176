//! Helpers for the TLS tests through Postfix (`postfix_lmtp_tls.rs`,
//! `notifier_tls.rs`): a test CA of the test's own (`ops/certs`), a
//! private Postfix with TLS on (`ops/postfix`, `MAILFLEET_POSTFIX_TLS=1`)
//! whose LMTP client requires STARTTLS, and the `[lmtp]` keys of a
//! `mailfleet lmtp` that offers it. The shared Postfix (no TLS) is not
//! touched: the other Postfix tests keep their plaintext LMTP server.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{outage::Private, repo_root, scratch_dir};

/// A fresh test CA (`ops/certs make` in a folder of its own): `ca.pem`,
/// `server.pem`/`.key` (localhost, 127.0.0.1), `client.pem`/`.key`,
/// `wrong-ca.pem`.
pub fn test_ca(name: &str) -> anyhow::Result<PathBuf> {
    let dir = scratch_dir(name).join("certs");
    make_ca(&dir)?;
    Ok(dir)
}

fn make_ca(dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(repo_root().join("ops/certs"))
        .arg("make")
        .env("MAILFLEET_CERTS_DIR", dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ops/certs make: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `[lmtp]` keys: STARTTLS with `certs`'s server certificate, and
/// `require_tls`. Goes right after the `[lmtp]` table (`MailWorld::write_config`'s extra).
pub fn lmtp_tls_keys(certs: &Path, require_tls: bool) -> String {
    format!(
        "require_tls = {require_tls}\n[lmtp.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        certs.join("server.chain.pem").display().to_string(),
        certs.join("server.key").display().to_string(),
    )
}

/// A private Postfix with TLS on, delivering the virtual domains
/// (`example.test`) by LMTP to `127.0.0.1:<lmtp_port>`. Stopped and
/// deleted when dropped.
pub struct TlsPostfix {
    postfix: Private,
    /// Its test CA (`ops/certs`), whose `server.pem` Postfix presents and
    /// whose `ca.pem` its LMTP client trusts.
    pub certs: PathBuf,
}

impl TlsPostfix {
    /// Start it; the submission listener has neither milter nor policy
    /// check, and authenticates through the shared Dovecot (`ops/dovecot`).
    pub fn start(test: &str, lmtp_port: u16) -> anyhow::Result<TlsPostfix> {
        let postfix = Private::postfix(test);
        let certs = postfix.run_dir.join("certs");
        let postfix = postfix
            .with_env("MAILFLEET_POSTFIX_TLS", "1".into())
            .with_env("MAILFLEET_CERTS_DIR", certs.display().to_string())
            .with_env(
                "MAILFLEET_POSTFIX_TRANSPORT",
                format!("lmtp:inet:127.0.0.1:{lmtp_port}"),
            )
            .with_env("MAILFLEET_SUBMISSION_MILTER", "0".into())
            .with_env("MAILFLEET_SUBMISSION_POLICY", "0".into());
        postfix.start()?;
        Ok(TlsPostfix { postfix, certs })
    }

    /// The inbound smtpd's port (STARTTLS offered, not required).
    pub fn port(&self) -> u16 {
        self.postfix.port
    }

    /// The submission smtpd's port (AUTH only after STARTTLS).
    pub fn submission_port(&self) -> u16 {
        self.postfix
            .port_of("MAILFLEET_SUBMISSION_PORT")
            .expect("Private::postfix sets it")
    }

    /// Its maillog (`ops/postfix log`).
    pub fn log(&self) -> anyhow::Result<String> {
        let out = self.postfix.command().args(["log", "100000"]).output()?;
        anyhow::ensure!(out.status.success(), "ops/postfix log failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// swaks from 127.0.0.2 (in `mynetworks`: no policy check) to the
    /// inbound port, the message file `data` from `from` to `to`; its
    /// transcript.
    pub fn swaks(&self, from: &str, to: &str, data: &Path) -> anyhow::Result<String> {
        let out = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", self.port())])
            .args(["--local-interface", "127.0.0.2", "--timeout", "30"])
            .args(["--from", from, "--to", to])
            .arg("--data")
            .arg(format!("@{}", data.display()))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "swaks failed:\n{text}");
        Ok(text)
    }
}
