//! Kafka over TLS (`docs/security.md`): a private broker (`ops/kafka` with
//! `MAILFLEET_KAFKA_TLS=1`: a SASL_SSL listener with SCRAM-SHA-512 and an
//! SSL listener that requires a client certificate, both with the private
//! instance's own test CA from `ops/certs`).
//!
//! - Over SASL_SSL + SCRAM-SHA-512 a whole fleet runs: `topics apply`, the
//!   greylist consumer and the policy server decide, and mail goes through
//!   `mailfleet lmtp`, the scanner, the storage writer and the indexer to
//!   the Maildir.
//! - Over mutual TLS, with the client certificate, events go both ways.
//! - A wrong password, an untrusted broker certificate and a missing client
//!   certificate each stop the service with librdkafka's reason logged.
//! - The broker's own per-listener counters (JMX) show that nothing of the
//!   run connected to the PLAINTEXT listener, which stays on loopback for
//!   `ops/kafka`'s start probe and tools.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use mailfleet_events::{runtime::TestEvent, Envelope};
use mailfleet_policy::client::PolicyClient;
use mailfleet_runtime::{config::KafkaConfig, producer::EventProducer};
use mailfleet_tests::{faults::*, fleet::deliver, outage::Private, secrets::write_secret, *};

const USER: &str = "mailfleet";

/// A client's TLS settings: the broker address, librdkafka properties and
/// the secrets' files.
struct Tls {
    brokers: String,
    properties: Vec<(&'static str, String)>,
    files: Vec<(&'static str, PathBuf)>,
}

impl Tls {
    fn kafka(&self) -> KafkaConfig {
        let mut kafka = KafkaConfig {
            brokers: self.brokers.clone(),
            ..KafkaConfig::default()
        };
        for (k, v) in &self.properties {
            kafka
                .properties
                .insert(k.to_string(), toml::Value::String(v.clone()));
        }
        kafka.property_files = self
            .files
            .iter()
            .map(|(k, p)| (k.to_string(), p.clone()))
            .collect::<BTreeMap<_, _>>();
        kafka
    }

    /// The `[kafka]` table's lines, as a config file has them.
    fn toml(&self) -> String {
        let props: Vec<String> = self
            .properties
            .iter()
            .map(|(k, v)| format!("{k:?} = {v:?}"))
            .collect();
        let files: Vec<String> = self
            .files
            .iter()
            .map(|(k, p)| format!("{k:?} = {:?}", p.display().to_string()))
            .collect();
        format!(
            "brokers = {:?}\nproperties = {{ {} }}\nproperty_files = {{ {} }}\n",
            self.brokers,
            props.join(", "),
            files.join(", ")
        )
    }

    /// Rewrite a config file the test helpers wrote for the PLAINTEXT
    /// listener to use these settings.
    fn apply(&self, config: &Path, plaintext: &str) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(config)?;
        let line = format!("brokers = {plaintext:?}\n");
        anyhow::ensure!(text.contains(&line), "{}: no {line}", config.display());
        std::fs::write(config, text.replace(&line, &self.toml()))?;
        Ok(())
    }
}

/// `mailfleet --config <config> <args>` run to its end.
fn mailfleet(config: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("MAILFLEET_LOG", "info")
        .stdin(Stdio::null())
        .output()?)
}

/// `ops/kafka <args>` against the private broker.
fn ops_kafka(broker: &Private, jmx: u16, args: &[&str]) -> anyhow::Result<Output> {
    Ok(broker
        .command()
        .env("MAILFLEET_KAFKA_JMX_PORT", jmx.to_string())
        .args(args)
        .output()?)
}

/// The broker's `connection-creation-total` per listener, from its JMX.
fn connections(broker: &Private, jmx: u16) -> anyhow::Result<BTreeMap<String, f64>> {
    let url = format!("service:jmx:rmi:///jndi/rmi://127.0.0.1:{jmx}/jmxrmi");
    let out = ops_kafka(
        broker,
        jmx,
        &[
            "tool",
            "org.apache.kafka.tools.JmxTool",
            "--jmx-url",
            &url,
            "--object-name",
            "kafka.server:type=socket-server-metrics,listener=*,networkProcessor=*",
            "--attributes",
            "connection-creation-total",
            "--one-time",
            "true",
            "--report-format",
            "properties",
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "JmxTool: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    per_listener(&text)
}

/// Sum JmxTool's `...listener=<L>,networkProcessor=<n>:connection-creation-total=<v>`
/// lines per listener.
fn per_listener(text: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut sums = BTreeMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once('=') else {
            continue;
        };
        if !name.ends_with(":connection-creation-total") {
            continue;
        }
        let listener = name
            .split(',')
            .find_map(|kv| kv.strip_prefix("listener="))
            .ok_or_else(|| anyhow::anyhow!("no listener in {line:?}"))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{line:?}: {e}"))?;
        *sums.entry(listener.to_string()).or_insert(0.0) += value;
    }
    anyhow::ensure!(!sums.is_empty(), "no per-listener counters in: {text}");
    Ok(sums)
}

/// A service that must stop on its own, with `reason` in its log; its log.
fn stops(config: &Path, args: &[&str], secret: &str) -> anyhow::Result<String> {
    let out = mailfleet(config, args)?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(
        !out.status.success(),
        "mailfleet {args:?} ran with {}: {err}",
        config.display()
    );
    anyhow::ensure!(!err.contains(secret), "the password is in the error output");
    Ok(err)
}

/// [`stops`], with `reason` in its log.
fn refused(config: &Path, args: &[&str], reason: &str, secret: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let err = stops(config, args, secret)?;
    let line = err.lines().find(|l| l.contains(reason));
    eprintln!(
        "{}: stopped after {:?}: {}",
        config.display(),
        started.elapsed(),
        line.unwrap_or_default()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_ssl_with_scram_and_mutual_tls_carry_the_fleet_and_plaintext_is_unused(
) -> anyhow::Result<()> {
    let jmx = free_port();
    let broker = Private::kafka("kafka-tls")
        .with_env("MAILFLEET_KAFKA_TLS", "1".into())
        .with_env("MAILFLEET_KAFKA_JMX_PORT", jmx.to_string());
    let sasl_ssl = broker
        .port_of("MAILFLEET_KAFKA_SASL_SSL_PORT")
        .ok_or_else(|| anyhow::anyhow!("no SASL_SSL port"))?;
    let ssl = broker
        .port_of("MAILFLEET_KAFKA_SSL_PORT")
        .ok_or_else(|| anyhow::anyhow!("no SSL port"))?;
    let up = Instant::now();
    broker.start()?;
    eprintln!("private TLS broker up in {:?}", up.elapsed());
    let certs = broker.run_dir.join("certs");
    let dir = scratch_dir("kafka-tls");

    // The SCRAM user, its password made now and kept in a 0600 file.
    let password = format!("S{:032x}", rand::random::<u128>());
    let (good, bad) = (dir.join("kafka.password"), dir.join("wrong.password"));
    write_secret(&good, &format!("{password}\n"))?;
    write_secret(&bad, &format!("{password}x"))?;
    let out = ops_kafka(
        &broker,
        jmx,
        &["scram-user", USER, &good.display().to_string()],
    )?;
    anyhow::ensure!(
        out.status.success(),
        "scram-user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = connections(&broker, jmx)?;
    eprintln!("connections per listener before the run: {before:?}");

    let ca = certs.join("ca.pem").display().to_string();
    let scram = |ca: &str, secret: &Path| Tls {
        brokers: format!("127.0.0.1:{sasl_ssl}"),
        properties: vec![
            ("security.protocol", "SASL_SSL".into()),
            ("sasl.mechanism", "SCRAM-SHA-512".into()),
            ("sasl.username", USER.into()),
            ("ssl.ca.location", ca.into()),
        ],
        files: vec![("sasl.password", secret.to_path_buf())],
    };
    let tls = scram(&ca, &good);

    // A fleet over SASL_SSL: the world's topics, then the greylist, the
    // policy server, the mail consumers and the LMTP server.
    let world = FaultWorld::new("kafka-tls", tls.kafka()).await?;
    // The helpers write the world's brokers line; the TLS settings go with it.
    let written = world.mail.kafka.brokers.clone();
    let policy_port = free_port();
    let policy = format!("listen = \"127.0.0.1:{policy_port}\"\ntimeout_ms = 3000\n");
    let grey = world.grey_config("grey.toml", free_port(), &policy)?;
    let policy_config = world.grey_config("policy.toml", free_port(), &policy)?;
    let mail = world.mail_config("mail.toml", free_port())?;
    let lmtp = world.mail_config("lmtp.toml", free_port())?;
    for config in [&grey, &policy_config, &mail, &lmtp] {
        tls.apply(config, &written)?;
    }
    let log = world.mail.dir.join("children.log");
    let mut children = Children(vec![
        spawn_mailfleet(&grey, &["run", "greylist"], &log)?,
        spawn_mailfleet(&policy_config, &["policy"], &log)?,
        spawn_mailfleet(&mail, &["run", "scanner", "storage", "index"], &log)?,
        spawn_mailfleet(&lmtp, &["lmtp"], &log)?,
    ]);
    let lmtp_port = world.mail.lmtp_port;
    wait_until(
        "the LMTP and policy servers",
        Duration::from_secs(60),
        || {
            [lmtp_port, policy_port]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        },
    )
    .await?;
    let mut client = PolicyClient::connect(&format!("127.0.0.1:{policy_port}")).await?;
    let mut decided = None;
    for i in 0..60 {
        let (ip, sender) = (
            format!("192.0.2.{}", i % 250 + 1),
            format!("s{i}@example.net"),
        );
        let attrs = [
            ("protocol_state", "RCPT"),
            ("client_address", ip.as_str()),
            ("client_name", "mx.example.net"),
            ("helo_name", "mx.example.net"),
            ("sender", sender.as_str()),
            ("recipient", "rcpt@example.org"),
            ("instance", sender.as_str()),
        ];
        let action = client.ask(&attrs, Duration::from_secs(30)).await?;
        if action.contains("Greylisted") {
            decided = Some(action);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let decided = decided.ok_or_else(|| anyhow::anyhow!("no greylist decision over SASL_SSL"))?;
    eprintln!("policy over SASL_SSL: {decided}");
    let subject = format!("{}-tls", world.mail.name);
    let reply = deliver(lmtp_port, "alice@example.org", &subject, "over TLS")?;
    anyhow::ensure!(reply.starts_with("250"), "LMTP: {reply}");
    let root = world.mail_root.clone();
    let id = format!("<{subject}@example.net>");
    wait_until("the mail in the Maildir", Duration::from_secs(60), || {
        message_ids_on_disk(&root).is_ok_and(|on| on.contains_key(&id))
    })
    .await?;
    for (i, child) in children.0.iter_mut().enumerate() {
        anyhow::ensure!(
            child.try_wait()?.is_none(),
            "process {i} died: {}",
            log.display()
        );
    }
    children.terminate()?;
    let text = std::fs::read_to_string(&log)?;
    anyhow::ensure!(
        !text.contains(&password),
        "the SCRAM password is in the fleet's log"
    );

    // Mutual TLS: the client certificate is the credential.
    let mtls = Tls {
        brokers: format!("127.0.0.1:{ssl}"),
        properties: vec![
            ("security.protocol", "SSL".into()),
            ("ssl.ca.location", ca.clone()),
            (
                "ssl.certificate.location",
                certs.join("client.pem").display().to_string(),
            ),
            (
                "ssl.key.location",
                certs.join("client.key").display().to_string(),
            ),
        ],
        files: Vec::new(),
    };
    let kafka = mtls.kafka();
    let producer = EventProducer::new(&kafka, "kafka-tls")?;
    for i in 0..3 {
        let event = TestEvent {
            envelope: Envelope::new(format!("mtls-{i}"), 0, "kafka-tls"),
            key: "k".into(),
            payload: Vec::new(),
            weight: 1,
        };
        producer.send(&world.attempts, b"k", &event).await?;
    }
    let read = read_topic_from(&kafka, &world.attempts, usize::MAX, Duration::from_secs(10))?;
    let ours = read
        .iter()
        .filter(|(_, value)| value.windows(5).any(|w| w == b"mtls-"))
        .count();
    anyhow::ensure!(ours == 3, "read back {ours} of 3 events over mutual TLS");

    // What must stop a service, with librdkafka's reason.
    let policy = format!("[policy]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    let refuse = |name: &str, tls: &Tls| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        let base = std::fs::read_to_string(&grey)?;
        let (head, _) = base
            .split_once("[policy]")
            .ok_or_else(|| anyhow::anyhow!("no [policy] in {}", grey.display()))?;
        let head = head.replace(&tls_brokers_block(&grey)?, &tls.toml());
        std::fs::write(
            &path,
            format!(
                "{head}{policy}attempts_topic = {:?}\ndecisions_topic = {:?}\n",
                world.attempts, world.decisions
            ),
        )?;
        Ok(path)
    };
    refused(
        &refuse("wrong-password.toml", &scram(&ca, &bad))?,
        &["policy"],
        "SASL authentication error: Authentication failed",
        &password,
    )?;
    let stranger = certs.join("wrong-ca.pem").display().to_string();
    refused(
        &refuse("untrusted.toml", &scram(&stranger, &good))?,
        &["policy"],
        "certificate verify failed",
        &password,
    )?;
    let anonymous = Tls {
        properties: mtls.properties[..2].to_vec(),
        ..mtls
    };
    // The broker refuses it after the client's side of the TLS 1.3
    // handshake: librdkafka logs the alert ("bad certificate") only when
    // it reads it before the metadata timeout; the broker always says why.
    let server_log = broker.run_dir.join("kafka/server.log");
    let mark = std::fs::metadata(&server_log)?.len() as usize;
    let err = stops(
        &refuse("no-client-cert.toml", &anonymous)?,
        &["policy"],
        &password,
    )?;
    let broker_said = std::fs::read(&server_log)?;
    let broker_said = String::from_utf8_lossy(&broker_said[mark.min(broker_said.len())..]);
    anyhow::ensure!(
        err.contains("bad certificate") || broker_said.contains("SSL handshake failed"),
        "neither the service nor the broker says the certificate was missing:\n{err}\n{broker_said}"
    );

    // Nothing of the run used the PLAINTEXT listener.
    let after = connections(&broker, jmx)?;
    eprintln!("connections per listener after the run: {after:?}");
    let count = |m: &BTreeMap<String, f64>, l: &str| m.get(l).copied().unwrap_or(0.0);
    assert_eq!(
        count(&after, "PLAINTEXT"),
        count(&before, "PLAINTEXT"),
        "a client of the run connected to the PLAINTEXT listener"
    );
    assert!(count(&after, "SASL_SSL") > count(&before, "SASL_SSL"));
    assert!(count(&after, "SSL") > count(&before, "SSL"));

    // The broker's logs never show the password.
    for log in ["server.log", "kafka.out"] {
        let path = broker.run_dir.join("kafka").join(log);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        assert!(
            !text.contains(&password),
            "the password is in {}",
            path.display()
        );
    }
    Ok(())
}

/// The `[kafka]` lines [`Tls::apply`] wrote into `config`: from `brokers`
/// to `property_files`.
fn tls_brokers_block(config: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(config)?;
    let start = text
        .find("brokers = ")
        .ok_or_else(|| anyhow::anyhow!("no brokers in {}", config.display()))?;
    let rest = &text[start..];
    let files = rest
        .find("property_files = ")
        .ok_or_else(|| anyhow::anyhow!("no property_files in {}", config.display()))?;
    let end = files + rest[files..].find('\n').unwrap_or(rest.len() - files) + 1;
    Ok(rest[..end].to_string())
}

#[test]
fn jmx_counters_are_summed_per_listener() {
    let text = "kafka.server:type=socket-server-metrics,listener=PLAINTEXT,networkProcessor=0:connection-creation-total=2.0\n\
                kafka.server:type=socket-server-metrics,listener=PLAINTEXT,networkProcessor=1:connection-creation-total=1.0\n\
                kafka.server:type=socket-server-metrics,listener=SSL,networkProcessor=2:connection-creation-total=4.0\n\
                time=1\n";
    let sums = per_listener(text).unwrap();
    assert_eq!(sums.get("PLAINTEXT"), Some(&3.0));
    assert_eq!(sums.get("SSL"), Some(&4.0));
    assert!(per_listener("nothing\n").is_err());
}
