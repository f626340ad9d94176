//! End to end with real Postfix (started by `ops/postfix start`, listening
//! on 127.0.0.1:2525 with `check_policy_service inet:127.0.0.1:10023`):
//! swaks gets 450 on the first try and 250 on a retry after the delay.

use std::{process::Command, time::Duration};

use mailfleet_tests::*;

fn swaks(from: &str, to: &str) -> anyhow::Result<String> {
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1:2525",
            "--from",
            from,
            "--to",
            to,
            "--quit-after",
            "RCPT",
            "--timeout",
            "30",
        ])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_defers_the_first_attempt_and_accepts_the_retry() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::net::TcpStream::connect("127.0.0.1:2525").is_ok(),
        "Postfix is not listening on 127.0.0.1:2525: run `ops/postfix start` (ops/test does)"
    );
    let world = TestWorld::new("postfix", 3).await?;
    // The greylist reads world.input as smtp.attempts and writes world.output as decisions.
    let topo = world.dir.join("topology.toml");
    std::fs::write(
        &topo,
        format!(
            "[topics.\"{i}\"]\npartitions = 3\nretention_ms = 3600000\ncleanup_policy = \"delete\"\n\
             [topics.\"{o}\"]\npartitions = 3\nretention_ms = 3600000\ncleanup_policy = \"delete\"\n\
             [consumers.greylist]\ngroup = \"{g}\"\nreads = [\"{i}\"]\nwrites = [\"{o}\"]\n",
            i = world.input,
            o = world.output,
            g = world.group
        ),
    )?;
    let root = repo_root();
    let (m1, m2) = (free_port(), free_port());
    let config = |metrics: u16| {
        format!(
            "[pipelines]\ntopology = {topo:?}\n[kafka]\nbrokers = {brokers:?}\n\
             [runtime]\ndata_dir = {data:?}\ndeadletter_topic = {dead:?}\nbatch_max_wait_ms = 2\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [policy]\nlisten = \"127.0.0.1:10023\"\nhost = \"e2e\"\nattempts_topic = {i:?}\ndecisions_topic = {o:?}\n\
             [consumers.greylist]\ndelay_s = 2\nwhitelist_clients = [{wc:?}]\nwhitelist_recipients = [{wr:?}]\n",
            topo = topo.display().to_string(),
            brokers = kafka().brokers,
            data = world.dir.join("state").display().to_string(),
            dead = world.deadletter,
            i = world.input,
            o = world.output,
            wc = root.join("ops/greylist/whitelist_clients").display().to_string(),
            wr = root.join("ops/greylist/whitelist_recipients").display().to_string(),
        )
    };
    let (c1, c2) = (
        world.dir.join("greylist.toml"),
        world.dir.join("policy.toml"),
    );
    std::fs::write(&c1, config(m1))?;
    std::fs::write(&c2, config(m2))?;
    let log = world.dir.join("children.log");
    let mut greylist = spawn_mailfleet(&c1, &["run", "greylist"], &log)?;
    let mut policy = spawn_mailfleet(&c2, &["policy"], &log)?;
    let ready = wait_until(
        "the policy server on 10023",
        Duration::from_secs(30),
        || std::net::TcpStream::connect("127.0.0.1:10023").is_ok(),
    )
    .await;
    let result = async {
        ready?;
        let from = format!("a{}@sender.example", rand::random::<u32>());
        let first = swaks(&from, "bob@example.test")?;
        anyhow::ensure!(
            first.contains("<** 450"),
            "first attempt not deferred:\n{first}"
        );
        anyhow::ensure!(first.contains("Greylisted"), "{first}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let retry = swaks(&from, "bob@example.test")?;
        anyhow::ensure!(
            retry.contains("<-  250 2.1.5"),
            "retry not accepted:\n{retry}"
        );
        Ok(())
    }
    .await;
    terminate(&mut policy)?;
    terminate(&mut greylist)?;
    result.map_err(|e| e.context(format!("children's log: {}", log.display())))
}
