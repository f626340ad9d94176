//! Several "hosts" on one machine for a test (G3): `ops/hosts` makes
//! network namespaces `mf-h1..mf-hN` on a bridge (10.231.0.K, the bridge
//! 10.231.0.254 in the root namespace, where the test runs). A [`Hosts`]
//! guard brings them up, starts processes inside them (each bound to its
//! host's address: a host sees only its own eth0 and loopback), kills a
//! whole host, cuts and heals its link, and on drop, also on a panic,
//! kills every process it started and every process left in a host, then
//! takes the hosts down.
//!
//! A process inside a host cannot reach the root namespace's 127.0.0.1
//! services (clamd, slapd, the shared broker): whatever it needs runs in a
//! host too (Kafka: [`Hosts::start_kafka`]; S3: [`Hosts::start_s3`]).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::Context;

use crate::{blobs::S3Server, cluster::Cluster, mailfleet_bin, outage::Private, repo_root};

/// The first three octets of every host's address (`ops/hosts`' default).
pub const PREFIX: &str = "10.231.0";

/// One process a [`Hosts`] started.
pub struct HostProc {
    /// The host it runs in.
    pub host: u8,
    /// What it is, for messages (e.g. `h2 lmtp`).
    pub what: String,
    pub child: Child,
}

/// The hosts of one test, and the processes it started in them.
pub struct Hosts {
    count: u8,
    procs: Vec<HostProc>,
}

impl Hosts {
    /// `ops/hosts up count` (after clearing what an earlier run left).
    pub fn up(count: u8) -> anyhow::Result<Hosts> {
        let _ = ops(&["down"]);
        ops(&["up", &count.to_string()])?;
        Ok(Hosts {
            count,
            procs: Vec::new(),
        })
    }

    /// Host `k`'s address.
    pub fn addr(k: u8) -> String {
        format!("{PREFIX}.{k}")
    }

    /// `command` (program, arguments, environment) to run inside host `k`.
    pub fn inside(k: u8, command: &Command) -> Command {
        let mut inner = Command::new(repo_root().join("ops/hosts"));
        inner
            .arg("exec")
            .arg(k.to_string())
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            if let Some(value) = value {
                inner.env(key, value);
            }
        }
        inner
    }

    /// Start `mailfleet --config <config> <args>` inside host `k` with
    /// extra environment; its output goes to `log`. `ops/hosts exec` execs
    /// `ip netns exec`, which execs the binary: the child is mailfleet.
    pub fn spawn(
        &mut self,
        k: u8,
        what: &str,
        config: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(mailfleet_bin());
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("MAILFLEET_LOG", "info");
        let child = Hosts::inside(k, &command)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning {what} in host {k}"))?;
        self.procs.push(HostProc {
            host: k,
            what: what.to_string(),
            child,
        });
        Ok(())
    }

    /// SIGKILL every process this guard started in host `k` (the mailfleet
    /// processes, not a Kafka node or S3 server there), as a machine that
    /// loses power would; how many there were.
    pub fn kill_host(&mut self, k: u8) -> anyhow::Result<usize> {
        let (gone, kept): (Vec<HostProc>, Vec<HostProc>) =
            self.procs.drain(..).partition(|p| p.host == k);
        self.procs = kept;
        // All killed first, then reaped: the host goes down at once.
        let mut gone = gone;
        for p in &mut gone {
            p.child.kill()?;
        }
        for p in &mut gone {
            p.child.wait()?;
        }
        Ok(gone.len())
    }

    /// SIGKILL every process left inside host `k`, whoever started it.
    fn sweep(k: u8) -> anyhow::Result<()> {
        let pids = stdout(&["pids", &k.to_string()])?;
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if !pids.is_empty() {
            let status = Command::new("kill").arg("-KILL").args(&pids).status()?;
            anyhow::ensure!(status.success(), "kill -KILL {pids:?}: {status}");
        }
        Ok(())
    }

    /// Take host `k` off the network (its link down).
    pub fn cut(&self, k: u8) -> anyhow::Result<()> {
        ops(&["cut", &k.to_string()])
    }

    /// Put host `k` back on the network.
    pub fn heal(&self, k: u8) -> anyhow::Result<()> {
        ops(&["heal", &k.to_string()])
    }

    /// An error naming every process this guard started that has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let mut dead = Vec::new();
        for p in &mut self.procs {
            if let Some(status) = p.child.try_wait()? {
                dead.push(format!("{} ({status})", p.what));
            }
        }
        anyhow::ensure!(dead.is_empty(), "exited by themselves: {dead:?}");
        Ok(())
    }

    /// SIGTERM every process this guard started; each must exit 0.
    pub fn terminate_all(&mut self) -> anyhow::Result<()> {
        for mut p in self.procs.drain(..) {
            crate::terminate(&mut p.child).with_context(|| p.what.clone())?;
        }
        Ok(())
    }

    /// A private three-node Kafka cluster (`ops/kafka node N`), node N in
    /// host N, bound to and advertising that host's address. The nodes
    /// start side by side (a node answers once 2 controllers are up).
    pub fn start_kafka(&self, test: &str) -> anyhow::Result<Cluster> {
        anyhow::ensure!(self.count >= 3, "a Kafka cluster needs hosts 1..3");
        let cluster = Cluster::prepare(test, [1, 2, 3].map(Hosts::addr))?;
        let starting = (1..=3u8)
            .map(|n| {
                let mut start = cluster.command();
                start.args(["node", &n.to_string(), "start"]);
                Hosts::inside(n, &start)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (n, child) in starting.into_iter().enumerate() {
            let out = child.wait_with_output()?;
            anyhow::ensure!(
                out.status.success(),
                "ops/kafka node {} start in host {}: {}\n{}",
                n + 1,
                n + 1,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(cluster)
    }

    /// A private S3 server (`ops/s3`) inside host `k`, bound to its
    /// address; the guard (reset on drop) and the server as clients see it.
    pub fn start_s3(&self, k: u8, test: &str) -> anyhow::Result<(Private, S3Server)> {
        let private = Private::s3(test).with_env("MAILFLEET_S3_HOST", Hosts::addr(k));
        Hosts::start_in(k, &private)?;
        let server = S3Server {
            endpoint: format!("http://{}:{}", Hosts::addr(k), private.port),
            bucket: "mailfleet".into(),
            keys: private.run_dir.join("s3"),
        };
        Ok((private, server))
    }

    /// `ops/<script> start` of `private` inside host `k` (its stop, from
    /// the root namespace, goes by its pid file).
    pub fn start_in(k: u8, private: &Private) -> anyhow::Result<()> {
        let mut start = private.command();
        start.arg("start");
        let out = Hosts::inside(k, &start).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{start:?} in host {k}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        // Whatever is left in a host (a server a guard failed to stop)
        // would keep its namespace alive.
        for k in 1..=self.count {
            let _ = Hosts::sweep(k);
        }
        if let Err(e) = ops(&["down"]) {
            eprintln!("ops/hosts down: {e}");
        }
    }
}

fn stdout(args: &[&str]) -> anyhow::Result<String> {
    crate::stdout_of(Command::new(repo_root().join("ops/hosts")).args(args))
}

fn ops(args: &[&str]) -> anyhow::Result<()> {
    stdout(args).map(|_| ())
}
