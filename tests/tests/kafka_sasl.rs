//! Kafka with SASL/PLAIN (`docs/security.md`): a private broker (`ops/kafka`
//! with its own folder and ports, and a SASL_PLAINTEXT listener through
//! `MAILFLEET_KAFKA_EXTRA_PROPERTIES`) and `mailfleet` configured with
//! `kafka.properties` plus `kafka.property_files` for the password. The
//! right credentials create topics and carry events; a wrong password
//! fails with an error that says authentication failed. The password is
//! made at run time and found in no log. TLS and SCRAM are in
//! `kafka_tls.rs`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use mailfleet_events::{runtime::TestEvent, Envelope};
use mailfleet_runtime::{
    config::{from_document, load_document, KafkaConfig},
    producer::EventProducer,
};
use mailfleet_tests::{outage::Private, secrets::write_secret, *};
use rdkafka::ClientConfig;

const USER: &str = "mailfleet";

/// The `[kafka]` table of a config file, as the binary reads it.
fn kafka_of(config: &Path) -> anyhow::Result<KafkaConfig> {
    let doc = load_document(Some(config), Vec::new())?;
    let table = doc
        .get("kafka")
        .and_then(|t| t.as_table())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no [kafka] in {}", config.display()))?;
    Ok(from_document(table, "kafka")?)
}

/// `mailfleet --config <config> topics apply`.
fn topics_apply(config: &Path) -> anyhow::Result<Output> {
    Ok(Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(["topics", "apply"])
        .stdin(Stdio::null())
        .output()?)
}

#[test]
fn this_librdkafka_has_sasl_plain_scram_and_tls() -> anyhow::Result<()> {
    let features = ClientConfig::new()
        .create_native_config()?
        .get("builtin.features")?;
    eprintln!("librdkafka builtin.features: {features}");
    let has = |f: &str| features.split(',').any(|x| x == f);
    // docs/security.md's table of what this build's librdkafka can do.
    for feature in ["sasl_plain", "ssl", "sasl_scram"] {
        assert!(has(feature), "no {feature} in {features}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_plain_with_the_right_password_works_and_a_wrong_one_is_refused() -> anyhow::Result<()>
{
    let dir = scratch_dir("kafka-sasl");
    let sasl = free_port();
    let extra = dir.join("sasl.properties");
    let broker = Private::kafka("kafka-sasl").with_env(
        "MAILFLEET_KAFKA_EXTRA_PROPERTIES",
        extra.display().to_string(),
    );
    let controller = broker
        .port_of("MAILFLEET_KAFKA_CONTROLLER_PORT")
        .ok_or_else(|| anyhow::anyhow!("the private broker has no controller port"))?;
    let password = format!("K{:032x}", rand::random::<u128>());
    write_secret(
        &extra,
        &format!(
            "listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c},SASL_PLAINTEXT://127.0.0.1:{s}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{p},SASL_PLAINTEXT://127.0.0.1:{s}\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT\n\
             sasl.enabled.mechanisms=PLAIN\n\
             listener.name.sasl_plaintext.plain.sasl.jaas.config=\
             org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}=\"{password}\";\n",
            p = broker.port,
            c = controller,
            s = sasl,
        ),
    )?;
    let started = Instant::now();
    broker.start()?;
    eprintln!("private SASL broker up in {:?}", started.elapsed());

    let (good, bad) = (dir.join("kafka.password"), dir.join("wrong.password"));
    write_secret(&good, &format!("{password}\n"))?;
    write_secret(&bad, &format!("{password}x"))?;
    let topic = unique("sasl");
    let config = |name: &str, secret: &Path| -> anyhow::Result<PathBuf> {
        let topology = dir.join("topology.toml");
        std::fs::write(
            &topology,
            format!("[topics.\"{topic}\"]\npartitions = 2\nretention_ms = 3600000\ncleanup_policy = \"delete\"\n"),
        )?;
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "[pipelines]\ntopology = {topology:?}\n[metrics]\nlisten = \"\"\n\
                 [kafka]\nbrokers = \"127.0.0.1:{port}\"\n\
                 properties = {{ \"security.protocol\" = \"SASL_PLAINTEXT\", \"sasl.mechanism\" = \"PLAIN\", \"sasl.username\" = \"{USER}\" }}\n\
                 property_files = {{ \"sasl.password\" = {secret:?} }}\n",
                topology = topology.display().to_string(),
                port = sasl,
                secret = secret.display().to_string(),
            ),
        )?;
        Ok(path)
    };

    // The right password: `mailfleet topics apply` over SASL, then events both ways.
    let out = topics_apply(&config("good.toml", &good)?)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "topics apply over SASL: {said}");
    assert!(said.contains(&format!("{topic}: Created")), "{said}");
    let kafka = kafka_of(&config("good.toml", &good)?)?;
    let producer = EventProducer::new(&kafka, "sasl-test")?;
    for i in 0..3 {
        let event = TestEvent {
            envelope: Envelope::new(format!("sasl-{i}"), 0, "sasl-test"),
            key: "k".into(),
            payload: Vec::new(),
            weight: 1,
        };
        producer.send(&topic, b"k", &event).await?;
    }
    let read = read_topic_from(&kafka, &topic, 3, Duration::from_secs(20))?;
    assert_eq!(read.len(), 3, "events read back over SASL");

    // A wrong password: a service (here the policy server, which consumes
    // and produces) logs librdkafka's clear reason and stops. (`topics apply`
    // only says BrokerTransportFailure, after its 15 s metadata timeout.)
    let bad_config = config("bad.toml", &bad)?;
    let mut text = std::fs::read_to_string(&bad_config)?;
    text += &format!(
        "[policy]\nlisten = \"127.0.0.1:{}\"\nattempts_topic = {topic:?}\ndecisions_topic = {topic:?}\n",
        free_port()
    );
    std::fs::write(&bad_config, text)?;
    let started = Instant::now();
    let out = Command::new(mailfleet_bin())
        .arg("--config")
        .arg(&bad_config)
        .arg("policy")
        .env("MAILFLEET_LOG", "info")
        .stdin(Stdio::null())
        .output()?;
    let refused = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the policy server ran with a wrong password: {err}"
    );
    let reason = "SASL authentication error: Authentication failed: Invalid username or password";
    let line = err.lines().find(|l| l.contains(reason));
    assert!(line.is_some(), "no log line says why: {err}");
    assert!(
        !err.contains(&password),
        "the password is in the error output"
    );
    eprintln!(
        "wrong password: stopped after {refused:?}; {}",
        line.unwrap_or_default()
    );

    // The broker's logs never show the password (its config file holds it, as slapd's does).
    for log in ["server.log", "kafka.out"] {
        let path = broker.run_dir.join("kafka").join(log);
        // A log that is missing proves nothing: it fails the test.
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading the broker's {}: {e}", path.display()))?;
        assert!(
            !text.is_empty(),
            "the broker's {} is empty: nothing was checked",
            path.display()
        );
        assert!(
            !text.contains(&password),
            "the SASL password is in {}",
            path.display()
        );
    }
    Ok(())
}
