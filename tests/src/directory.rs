//! Helpers for the directory and migration tests: a private accounts
//! topic for `mailfleet run directory` / `mailfleet account migrate`, and
//! the real slapd of `ops/ldap` through the ldap-utils tools, bound as the
//! service DN (the rootdn only to read a stored hash). Each test uses
//! addresses in its own random domain; passwords are generated at run
//! time and reach the tools on stdin, never on a command line.

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::Context;
use mailfleet_events::{Event, Registry};
use mailfleet_runtime::{
    admin,
    producer::EventProducer,
    topology::{Route, TopicSpec},
    Topology,
};

use crate::{free_port, kafka, read_topic, repo_root, scratch_dir, unique, ConfigFiles, Consumed};

/// Held (shared) by every test that needs slapd up; the one test that
/// stops slapd holds it alone.
pub static SLAPD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// LDAP result codes the tests expect (RFC 4511).
pub const SUCCESS: i32 = 0;
pub const NO_SUCH_OBJECT: i32 = 32;
pub const INVALID_CREDENTIALS: i32 = 49;

/// The suffix and bases of `ops/ldap`.
pub const SUFFIX: &str = "dc=mailfleet,dc=test";
pub const PEOPLE: &str = "ou=people,dc=mailfleet,dc=test";
pub const PAID_BASE: &str = "ou=paid,dc=mailfleet,dc=test";
pub const PAID_PEOPLE: &str = "ou=people,ou=paid,dc=mailfleet,dc=test";
pub const SERVICE_DN: &str = "cn=mailfleet,ou=services,dc=mailfleet,dc=test";
pub const ROOT_DN: &str = "cn=admin,dc=mailfleet,dc=test";

/// `ops/ldap`'s run folder (`MAILFLEET_RUN_DIR` or `<repo>/run`).
fn ldap_run_dir() -> PathBuf {
    std::env::var_os("MAILFLEET_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("run"))
        .join("ldap")
}

/// The service DN's password file.
pub fn service_password_file() -> PathBuf {
    ldap_run_dir().join("secrets").join("mailfleet.password")
}

/// slapd's URL.
pub fn ldap_url() -> String {
    let port = std::env::var("MAILFLEET_LDAP_PORT").unwrap_or_else(|_| "3389".into());
    format!("ldap://127.0.0.1:{port}")
}

/// Fail (not skip) when slapd is not running.
pub fn require_slapd() -> anyhow::Result<()> {
    let status = Command::new(repo_root().join("ops/ldap"))
        .arg("status")
        .output()?;
    anyhow::ensure!(
        status.status.success(),
        "slapd is not running (`ops/ldap status`: {}); start it with `ops/ldap start`",
        String::from_utf8_lossy(&status.stdout).trim()
    );
    Ok(())
}

/// How a tool binds.
pub enum Bind<'a> {
    Service,
    Root,
    /// A DN and its password (given on stdin).
    As(&'a str, &'a str),
}

/// Run an ldap-utils tool; `input` is its stdin (LDIF), unless the bind
/// needs stdin for the password.
pub fn ldap_tool(tool: &str, bind: Bind<'_>, args: &[&str], input: &str) -> anyhow::Result<Output> {
    let mut cmd = Command::new(tool);
    cmd.args(["-x", "-H", &ldap_url(), "-o", "nettimeout=5"])
        .env("LDAPNOINIT", "1");
    let mut stdin = input.to_string();
    match bind {
        Bind::Service => {
            cmd.arg("-D")
                .arg(SERVICE_DN)
                .arg("-y")
                .arg(service_password_file());
        }
        Bind::Root => {
            let file = ldap_run_dir().join("secrets").join("root.password");
            cmd.arg("-D").arg(ROOT_DN).arg("-y").arg(file);
        }
        Bind::As(dn, password) => {
            anyhow::ensure!(input.is_empty(), "stdin carries the password");
            cmd.args(["-D", dn, "-y", "/dev/stdin"]);
            stdin = password.to_string();
        }
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool}"))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// The tool's exit code (the LDAP result code for ldapsearch & co).
pub fn rc(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// `ldapsearch -LLL` as the service DN: (result code, output).
pub fn search(
    base: &str,
    scope: &str,
    filter: &str,
    attrs: &[&str],
) -> anyhow::Result<(i32, String)> {
    let mut args = vec![
        "-LLL",
        "-o",
        "ldif-wrap=no",
        "-b",
        base,
        "-s",
        scope,
        filter,
    ];
    args.extend_from_slice(attrs);
    let out = ldap_tool("ldapsearch", Bind::Service, &args, "")?;
    Ok((rc(&out), String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The DNs in ldapsearch output, lower-cased, hex escapes as slapd writes them.
pub fn dns(ldif: &str) -> Vec<String> {
    ldif.lines()
        .filter_map(|l| l.strip_prefix("dn: "))
        .map(str::to_lowercase)
        .collect()
}

/// The DNs of the subtree at `base` (empty when it does not exist).
pub fn subtree(base: &str) -> anyhow::Result<Vec<String>> {
    let (code, out) = search(base, "sub", "(objectClass=*)", &["1.1"])?;
    anyhow::ensure!(
        code == SUCCESS || code == NO_SUCH_OBJECT,
        "ldapsearch {base}: exit {code}"
    );
    let mut found = dns(&out);
    found.sort();
    Ok(found)
}

/// One attribute's values of one entry (text values only).
pub fn values(dn: &str, attr: &str) -> anyhow::Result<Vec<String>> {
    let (code, out) = search(dn, "base", "(objectClass=*)", &[attr])?;
    anyhow::ensure!(code == SUCCESS, "ldapsearch {dn}: exit {code}");
    let prefix = format!("{}: ", attr.to_lowercase());
    Ok(out
        .lines()
        .filter(|l| l.to_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].to_string())
        .collect())
}

/// Whether `dn` binds with `password`: the tool's exit code (0, or 49).
pub fn bind(dn: &str, password: &str) -> anyhow::Result<i32> {
    Ok(rc(&ldap_tool(
        "ldapwhoami",
        Bind::As(dn, password),
        &[],
        "",
    )?))
}

/// Add entries from LDIF as the service DN.
pub fn add(ldif: &str) -> anyhow::Result<()> {
    let out = ldap_tool("ldapadd", Bind::Service, &[], ldif)?;
    anyhow::ensure!(
        out.status.success(),
        "ldapadd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Delete a subtree (cleanup; a missing one is fine).
pub fn remove(dn: &str) {
    let _ = ldap_tool("ldapdelete", Bind::Service, &["-r", dn], "");
}

/// Deletes these subtrees when dropped, so a failing test leaves no entries.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for dn in &self.0 {
            remove(dn);
        }
    }
}

/// RFC 4514 escaping, as `ops/ldap` documents it (the tests' own copy).
pub fn dn_escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    value
        .chars()
        .enumerate()
        .map(|(i, c)| match c {
            '\\' | ',' | '+' | '"' | '<' | '>' | ';' | '=' => format!("\\{c}"),
            '#' if i == 0 => "\\#".into(),
            ' ' if i == 0 || i == last => "\\ ".into(),
            _ => c.to_string(),
        })
        .collect()
}

/// An account's DN below `people`.
pub fn account_dn(people: &str, address: &str) -> String {
    format!("uid={},{people}", dn_escape(address))
}

/// A random password that passes the policy (upper, lower, digit).
pub fn random_password() -> String {
    format!("Pw{:016x}9z", rand::random::<u64>())
}

/// `{ARGON2}$argon2i$...` of `password`, by slapd's own slappasswd.
pub fn argon2_hash(password: &str) -> anyhow::Result<String> {
    let mut child = Command::new("slappasswd")
        .args([
            "-o",
            "module-load=argon2",
            "-h",
            "{ARGON2}",
            "-T",
            "/dev/stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running slappasswd")?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(password.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "slappasswd failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The LDIF of an account entry with `hash` as its password.
pub fn account_ldif(dn: &str, address: &str, hash: &str, status: &str) -> String {
    format!(
        "dn: {dn}\nobjectClass: inetOrgPerson\nobjectClass: mailfleetAccount\nuid: {address}\n\
         mail: {address}\ncn: {address}\nsn: test\nmailfleetStatus: {status}\n\
         mailfleetPlan: free\nmailfleetQuota: 1073741824\nuserPassword: {hash}\n"
    )
}

/// `ops/ldap stop` now; `ops/ldap start` when dropped (also on failure:
/// other tests need slapd).
pub struct SlapdStopped;

impl SlapdStopped {
    pub fn stop() -> anyhow::Result<SlapdStopped> {
        let guard = SlapdStopped;
        let status = Command::new(repo_root().join("ops/ldap"))
            .arg("stop")
            .status()?;
        anyhow::ensure!(status.success(), "ops/ldap stop: {status}");
        Ok(guard)
    }

    /// Start slapd again (the guard then has nothing left to do).
    pub fn start(self) -> anyhow::Result<()> {
        let result = start_slapd();
        std::mem::forget(self);
        result
    }
}

impl Drop for SlapdStopped {
    fn drop(&mut self) {
        if let Err(e) = start_slapd() {
            eprintln!("restarting slapd: {e}");
        }
    }
}

fn start_slapd() -> anyhow::Result<()> {
    let status = Command::new(repo_root().join("ops/ldap"))
        .arg("start")
        .status()?;
    anyhow::ensure!(status.success(), "ops/ldap start: {status}");
    Ok(())
}

/// One test's accounts world: its topics (3 partitions), folders and domain.
pub struct DirectoryWorld {
    pub name: String,
    pub dir: PathBuf,
    pub accounts: String,
    pub alerts: String,
    pub deadletter: String,
    /// A random domain: this test's addresses.
    pub domain: String,
}

impl DirectoryWorld {
    pub async fn new(name: &str) -> anyhow::Result<DirectoryWorld> {
        let name = unique(name);
        let world = DirectoryWorld {
            dir: scratch_dir(&name),
            accounts: format!("{name}.accounts"),
            alerts: format!("{name}.alerts"),
            deadletter: format!("{name}.dead"),
            domain: format!("{name}.test"),
            name,
        };
        admin::apply(&kafka(), &world.topology())
            .await
            .context("creating the accounts topics")?;
        Ok(world)
    }

    fn topology(&self) -> Topology {
        Topology {
            topics: [&self.accounts, &self.alerts, &self.deadletter]
                .iter()
                .map(|t| (t.to_string(), TopicSpec::scratch(3)))
                .collect::<BTreeMap<_, _>>(),
            consumers: BTreeMap::from([(
                "directory".to_string(),
                Route {
                    group: format!("{}-directory", self.name),
                    reads: vec![self.accounts.clone()],
                    writes: vec![self.accounts.clone(), self.alerts.clone()],
                },
            )]),
        }
    }

    /// `local@<this test's domain>`.
    pub fn address(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }

    /// A config for this world plus `extra` TOML (inside `[ldap]` when it
    /// starts with a key); returns its path.
    pub fn write_config(
        &self,
        file: &str,
        ldap_extra: &str,
        extra: &str,
    ) -> anyhow::Result<PathBuf> {
        let rest = format!(
            "[ldap]\nurl = {url:?}\nbind_password_file = {password:?}\ntimeout_ms = 3000\n{ldap_extra}\n\
             [consumers.directory]\nevents_topic = {accounts:?}\nalerts_topic = {alerts:?}\n\
             {extra}",
            url = ldap_url(),
            password = service_password_file().display().to_string(),
            accounts = self.accounts,
            alerts = self.alerts,
        );
        ConfigFiles {
            dir: &self.dir,
            topology_file: "topology.toml",
            topology: &self.topology(),
            brokers: &kafka().brokers,
            data_dir: &self.dir.join("state"),
            deadletter: &self.deadletter,
            metrics_port: free_port(),
        }
        .write(file, &rest)
    }

    /// Produce `event` to the accounts topic, keyed by `account`.
    pub async fn produce<E: Event>(&self, account: &str, event: &E) -> anyhow::Result<()> {
        let producer = EventProducer::new(&kafka(), &self.name)?;
        producer
            .send(&self.accounts, account.as_bytes(), event)
            .await?;
        Ok(())
    }

    /// Every event of type `E` on `topic` so far (waiting up to `idle` for more).
    pub fn events<E: Event>(&self, topic: &str, idle: Duration) -> anyhow::Result<Vec<E>> {
        events_of(&read_topic(topic, usize::MAX, idle)?)
    }
}

/// The records that are `E`s, decoded.
pub fn events_of<E: Event>(records: &[Consumed]) -> anyhow::Result<Vec<E>> {
    let registry = Registry::builtin();
    let mut out = Vec::new();
    for (_, bytes) in records {
        if registry.writer_of(bytes).is_ok_and(|w| w.name == E::NAME) {
            out.push(registry.decode::<E>(bytes)?);
        }
    }
    Ok(out)
}
