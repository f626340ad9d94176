//! `mailfleet api` (the account API server) and `mailfleet account ...`,
//! its command-line client. Every account command is one API call
//! (`--api`, default `http://<[api] listen>`, `https://` with `[api.tls]`);
//! over HTTPS the server's certificate is verified against `--ca-file` or
//! `[api.client] ca_file` (else the system's roots). The bearer token and
//! passwords come from files or stdin, never from the command line, where
//! `ps` and shell history would show them. A refusal by the API prints its
//! message and exits 2; any other failure exits 1.

use std::{
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::{Args, Subcommand};
use mailfleet_api::{
    self as api,
    wire::{
        AccountView, BlockRequest, LoginRequest, ReactivateRequest, RegisterRequest, Secret,
        UnblockRequest,
    },
    ApiClient, ApiError, ApiSettings, Plans,
};
use mailfleet_runtime::{calendar::date_time, metrics, time::Clock, Shutdown};
use serde::de::DeserializeOwned;

use crate::config::Config;

/// Longest password read from stdin or a file, bytes.
const MAX_PASSWORD_BYTES: u64 = 4096;

/// A request this command refused before asking the API: exit code 2.
#[derive(Debug)]
pub struct Rejected(pub String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejected {}

/// The exit code for a failed command: 2 for a request refused (by the API
/// with a 4xx, or here), 1 for anything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let refused = e.downcast_ref::<Rejected>().is_some()
        || matches!(e.downcast_ref::<ApiError>(), Some(ApiError::Refused { .. }));
    if refused {
        2
    } else {
        1
    }
}

/// `mailfleet account [--api URL] [--token-file F] [--ca-file F] <action>`.
#[derive(Args)]
pub struct AccountArgs {
    /// The account API (default: http://<[api] listen>, https:// with [api.tls]).
    #[arg(long, global = true, value_name = "URL")]
    api: Option<String>,
    /// A file holding the API's bearer token (default: [api] token_file).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM: the CA that signed the API's certificate, for an https:// API
    /// (default: [api.client] ca_file, else the system's roots).
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    action: AccountAction,
}

#[derive(Subcommand)]
enum AccountAction {
    /// Register an account; the password must pass the policy.
    Register {
        account: String,
        /// A plan of [consumers.storage.plans] (default: the default plan).
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Record a login; with a password, verify it first.
    Login {
        account: String,
        /// webmail, activesync, syncml or imap.
        #[arg(long, value_parser = wire_enum::<api::wire::Channel>)]
        channel: api::wire::Channel,
        /// The client's IP address.
        #[arg(long)]
        ip: Option<String>,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Set an explicit quota (bytes, or with K/M/G/T binary suffix), or
    /// `plan` to go back to the plan's quota.
    Quota {
        account: String,
        #[arg(value_parser = parse_quota)]
        quota: Quota,
    },
    /// Change the plan.
    Plan { account: String, plan: String },
    /// Block an account (admin or abuse).
    Block {
        account: String,
        #[arg(long, default_value = "admin", value_parser = wire_enum::<api::wire::AdminBlockReason>)]
        reason: api::wire::AdminBlockReason,
        /// A note kept in the event.
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// Lift a block.
    Unblock {
        account: String,
        #[arg(long)]
        by: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Reactivate an inactive account within its grace period.
    Reactivate {
        account: String,
        #[arg(long)]
        by: Option<String>,
    },
    /// Show an account.
    Show {
        account: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy an account to a paid cluster.
    Migrate(crate::migrate::MigrateArgs),
}

/// Where a password comes from.
#[derive(Args)]
#[group(multiple = false)]
struct PasswordSource {
    /// Read the password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Read the password from a file (one trailing newline is dropped).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

/// A quota argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quota {
    Bytes(i64),
    Plan,
}

/// `mailfleet api`: serve until SIGTERM.
pub async fn serve(cfg: &Config, clock: Clock, shutdown: Shutdown) -> anyhow::Result<()> {
    metrics::install_exporter(&cfg.metrics)?;
    let storage = &cfg.consumers.storage;
    // The learn route keeps what it teaches in this host's blob store
    // (`[blobs]`: a folder or a bucket) unless `[api.spam]` names a folder.
    let blobs = match &cfg.api.spam {
        Some(spam) if spam.blobs_dir.is_none() => Some(std::sync::Arc::new(
            mailfleet_blob::BlobStore::connect(&cfg.blobs).await?,
        )),
        _ => None,
    };
    let settings = ApiSettings {
        config: cfg.api.clone(),
        plans: Plans::new(storage.plans.keys().cloned(), &storage.default_plan),
        active_on_register: cfg.consumers.lifecycle.activate_on_register,
        blobs,
        clock,
    };
    Ok(api::serve(settings, &cfg.kafka, shutdown).await?)
}

/// `mailfleet account ...`.
pub async fn run(args: AccountArgs, cfg: &Config) -> anyhow::Result<()> {
    if let AccountAction::Migrate(m) = args.action {
        return crate::migrate::run(m, cfg).await;
    }
    let base = args
        .api
        .unwrap_or_else(|| default_api(cfg.api.scheme(), &cfg.api.listen));
    let token_file = args.token_file.or_else(|| cfg.api.token_file.clone());
    let token = token_file.map(|p| api::read_token(&p)).transpose()?;
    let mut tls = cfg.api.client.clone();
    if let Some(ca) = args.ca_file {
        tls.ca_file = Some(ca);
    }
    let client = ApiClient::with_tls(&base, token, &tls)?;
    execute(&client, args.action).await
}

/// One API call and its output.
async fn execute(client: &ApiClient, action: AccountAction) -> anyhow::Result<()> {
    let v = match action {
        AccountAction::Register {
            account,
            plan,
            display_name,
            password,
        } => {
            let req = register_request(account, plan, display_name, &password)?;
            done("registered", client.register(&req).await?)
        }
        AccountAction::Login {
            account,
            channel,
            ip,
            password,
        } => {
            let password = password.read()?;
            let req = LoginRequest {
                channel,
                ip,
                password,
            };
            done("login recorded for", client.login(&account, &req).await?)
        }
        AccountAction::Quota { account, quota } => {
            let bytes = match quota {
                Quota::Bytes(b) => Some(b),
                Quota::Plan => None,
            };
            let v = client.set_quota(&account, bytes).await?;
            println!("quota of {} is {}", v.account, quota_text(v.quota_bytes));
            v
        }
        AccountAction::Plan { account, plan } => {
            done("plan set for", client.set_plan(&account, &plan).await?)
        }
        AccountAction::Block {
            account,
            reason,
            detail,
        } => {
            let req = BlockRequest { reason, detail };
            done("block requested for", client.block(&account, &req).await?)
        }
        AccountAction::Unblock { account, by, note } => {
            let req = UnblockRequest { by, note };
            done(
                "unblock requested for",
                client.unblock(&account, &req).await?,
            )
        }
        AccountAction::Reactivate { account, by } => {
            let req = ReactivateRequest { by };
            let v = client.reactivate(&account, &req).await?;
            done("reactivation requested for", v)
        }
        AccountAction::Show { account, json } => {
            let v = client.show(&account).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_view(&v);
            }
            v
        }
        AccountAction::Migrate(_) => return Ok(()),
    };
    tracing::debug!(account = %v.account, "done");
    Ok(())
}

/// A registration, its password read from `password` (which must be given).
fn register_request(
    account: String,
    plan: Option<String>,
    display_name: Option<String>,
    password: &PasswordSource,
) -> anyhow::Result<RegisterRequest> {
    let password = password.read()?.ok_or_else(|| {
        Rejected(
            "register needs --password-stdin or --password-file (never a password on the command line)".into(),
        )
    })?;
    Ok(RegisterRequest {
        account,
        password,
        plan,
        display_name,
    })
}

/// Print what a write did; the view back.
fn done(verb: &str, v: AccountView) -> AccountView {
    println!(
        "{verb} {} (status {}, plan {})",
        v.account, v.status, v.plan
    );
    v
}

fn quota_text(quota_bytes: Option<i64>) -> String {
    quota_bytes.map_or("the plan's".to_string(), |b| format!("{b} bytes"))
}

fn print_view(v: &AccountView) {
    println!("account:       {}", v.account);
    println!("status:        {}", v.status);
    println!("plan:          {}", v.plan);
    println!("quota:         {}", quota_text(v.quota_bytes));
    if let Some(name) = &v.display_name {
        println!("display name:  {name}");
    }
    println!("registered at: {}", date_time(v.registered_at));
    match (v.last_login_at, &v.last_login_channel) {
        (Some(at), Some(channel)) => println!("last login:    {} ({channel})", date_time(at)),
        _ => println!("last login:    never"),
    }
}

impl PasswordSource {
    /// The password, if a source was given.
    fn read(&self) -> anyhow::Result<Option<Secret>> {
        let text = if self.password_stdin {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_PASSWORD_BYTES)
                .read_to_string(&mut text)
                .context("reading the password from stdin")?;
            text.lines().next().unwrap_or_default().to_string()
        } else if let Some(path) = &self.password_file {
            read_password_file(path)?
        } else {
            return Ok(None);
        };
        if text.is_empty() {
            return Err(Rejected("the password is empty".into()).into());
        }
        Ok(Some(Secret::new(text)))
    }
}

/// The file's text without one trailing newline; errors name the file,
/// never its content.
fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PASSWORD_BYTES).read_to_string(&mut text))
        .with_context(|| format!("--password-file {}: cannot read", path.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
}

/// `<scheme>://<listen>`, with an unspecified listen address (0.0.0.0,
/// ::) replaced by loopback. Over HTTPS the certificate must name the
/// address dialled (`ops/certs` makes one for 127.0.0.1 and localhost).
fn default_api(scheme: &str, listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => format!("{scheme}://127.0.0.1:{}", addr.port()),
        _ => format!("{scheme}://{listen}"),
    }
}

/// A value of one of the API's enums, spelled as in its JSON.
fn wire_enum<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|e| e.to_string())
}

/// `plan`, bytes, or bytes with a binary K/M/G/T suffix.
fn parse_quota(text: &str) -> Result<Quota, String> {
    if text.eq_ignore_ascii_case("plan") {
        return Ok(Quota::Plan);
    }
    let bad = || format!("{text:?}: not a byte count (e.g. 10737418240 or 10G) or `plan`");
    let upper = text.trim().to_ascii_uppercase();
    let (digits, shift) = match upper.char_indices().last() {
        Some((i, 'K')) => (&upper[..i], 10),
        Some((i, 'M')) => (&upper[..i], 20),
        Some((i, 'G')) => (&upper[..i], 30),
        Some((i, 'T')) => (&upper[..i], 40),
        _ => (upper.as_str(), 0),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if n < 0 {
        return Err(bad());
    }
    n.checked_mul(1i64 << shift)
        .map(Quota::Bytes)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_cli_quota_arguments_parse_and_refusals_name_the_value() {
        assert_eq!(parse_quota("plan"), Ok(Quota::Plan));
        assert_eq!(parse_quota("1024"), Ok(Quota::Bytes(1024)));
        assert_eq!(parse_quota("10G"), Ok(Quota::Bytes(10 << 30)));
        assert_eq!(parse_quota("2k"), Ok(Quota::Bytes(2048)));
        for bad in ["-5", "lots", "99999999999T", ""] {
            let err = parse_quota(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn api_cli_defaults_and_enums() {
        assert_eq!(
            default_api("http", "127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(default_api("http", "0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(default_api("https", "[::]:8443"), "https://127.0.0.1:8443");
        assert_eq!(default_api("https", "[::1]:8443"), "https://[::1]:8443");
        assert_eq!(
            wire_enum::<api::wire::Channel>("syncml"),
            Ok(api::wire::Channel::Syncml)
        );
        let err = wire_enum::<api::wire::Channel>("pop3").unwrap_err();
        assert!(err.contains("pop3"), "{err}");
    }

    #[test]
    fn api_cli_password_files_lose_one_newline_only() {
        let dir = Path::new(&crate::manifest_dir())
            .join("../../run/tests")
            .join(format!("api-cli-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        let generated = format!("Aa1{:08x} ", rand::random::<u32>());
        std::fs::write(&file, format!("{generated}\r\n")).unwrap();
        assert_eq!(read_password_file(&file).unwrap(), generated);
        let err = read_password_file(&dir.join("none"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none") && err.contains("--password-file"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
