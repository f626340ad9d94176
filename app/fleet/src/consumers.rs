//! The registered consumers: one line each in the [`registry!`] below.
//! Adding a consumer is adding its crate (with a `build` function), its
//! route in `pipelines/topology.toml`, and its line here; the line gives
//! its name, its `[consumers.<name>]` table if it has settings, and how
//! it is built from the config (`docs/adding-a-consumer.md`).

use std::{fmt, str::FromStr, sync::Arc};

use mailfleet_blob::BlobStore;
use mailfleet_counter::CounterConfig;
use mailfleet_directory::DirectoryConfig;
use mailfleet_greylist::GreylistConfig;
use mailfleet_lifecycle::{deleter::DeleterConfig, LifecycleConfig};
use mailfleet_notifier::NotifierConfig;
use mailfleet_outbound::OutboundConfig;
use mailfleet_runtime::{run, RunSpec, RunStats, RuntimeError, Shutdown, Topology, Wiring};
use mailfleet_scanner::ScannerConfig;
use mailfleet_scheduler::purger::PurgerConfig;
use mailfleet_storage::writer::StorageConfig;
use serde::Deserialize;

use crate::config::Config;

/// Declares the consumers: their typed names ([`ConsumerName`]), their
/// config tables ([`ConsumersConfig`]) and how each is built and run
/// ([`run_consumer_with`]).
macro_rules! registry {
    ($(
        $variant:ident = $name:literal $([$field:ident: $cty:ty])?
            => |$cfg:ident, $wiring:ident| $build:expr;
    )+) => {
        /// A consumer `mailfleet run` knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ConsumerName {
            $( #[doc = concat!("`", $name, "`")] $variant, )+
        }

        impl ConsumerName {
            /// Every registered consumer, in registration order.
            pub const ALL: &'static [ConsumerName] = &[$(ConsumerName::$variant),+];

            /// Its name: its route in the topology, its state folder, its
            /// `[consumers.*]` table.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ConsumerName::$variant => $name, )+
                }
            }
        }

        /// `[consumers.*]`: one table per registered consumer with settings.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct ConsumersConfig {
            $($(
                #[doc = concat!("`[consumers.", $name, "]`")]
                pub $field: $cty,
            )?)+
        }

        impl ConsumersConfig {
            /// Every problem of every table, each naming its key and value.
            pub fn problems(&self) -> Vec<String> {
                let mut out = Vec::new();
                $($( out.extend(self.$field.problems()); )?)+
                out
            }
        }

        /// Build consumer `name` from `cfg` and run it with `spec` until
        /// shutdown or its stop.
        async fn build_and_run(
            name: ConsumerName,
            cfg: &Config,
            wiring: &Wiring,
            spec: RunSpec,
            shutdown: Shutdown,
        ) -> Result<RunStats, RuntimeError> {
            match name {
                $( ConsumerName::$variant => {
                    let ($cfg, $wiring) = (cfg, wiring);
                    run($build.await?, spec, shutdown).await
                } )+
            }
        }
    };
}

registry! {
    Counter = "counter" [counter: CounterConfig]
        => |cfg, w| mailfleet_counter::build(&cfg.consumers.counter, w);
    Greylist = "greylist" [greylist: GreylistConfig]
        => |cfg, w| mailfleet_greylist::build(&cfg.consumers.greylist, w);
    Scanner = "scanner" [scanner: ScannerConfig]
        => |cfg, w| mailfleet_scanner::build(&cfg.consumers.scanner, blobs(cfg).await?, w);
    Storage = "storage" [storage: StorageConfig]
        => |cfg, w| mailfleet_storage::writer::build(&cfg.consumers.storage, blobs(cfg).await?, w);
    Index = "index"
        => |_cfg, w| mailfleet_storage::index::build(w);
    Lifecycle = "lifecycle" [lifecycle: LifecycleConfig]
        => |cfg, w| mailfleet_lifecycle::build(&cfg.consumers.lifecycle, w);
    Deleter = "deleter" [deleter: DeleterConfig]
        => |cfg, w| mailfleet_lifecycle::deleter::build(&cfg.consumers.deleter, blobs(cfg).await?, w);
    Directory = "directory" [directory: DirectoryConfig]
        => |cfg, w| mailfleet_directory::build(&cfg.consumers.directory, &cfg.ldap, w);
    Notifier = "notifier" [notifier: NotifierConfig]
        => |cfg, w| mailfleet_notifier::build(&cfg.consumers.notifier, w);
    Purger = "purger" [purger: PurgerConfig]
        => |cfg, w| mailfleet_scheduler::purger::build(&cfg.consumers.purger, w);
    Outbound = "outbound" [outbound: OutboundConfig]
        => |cfg, w| mailfleet_outbound::build(&cfg.consumers.outbound, w);
    Reporter = "reporter"
        => |_cfg, w| mailfleet_report::build(w);
}

/// Consumers all of whose outputs are decided, none emitted by an effect:
/// `mailfleet audit decisions` compares every output of theirs.
pub const ALL_DECIDED: &[ConsumerName] = &[
    ConsumerName::Counter,
    ConsumerName::Greylist,
    ConsumerName::Index,
    ConsumerName::Lifecycle,
    ConsumerName::Purger,
    ConsumerName::Outbound,
];

impl fmt::Display for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConsumerName {
    type Err = RuntimeError;

    fn from_str(name: &str) -> Result<ConsumerName, RuntimeError> {
        ConsumerName::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = ConsumerName::ALL.iter().map(|c| c.as_str()).collect();
                RuntimeError::InvalidConfig(vec![format!(
                    "unknown consumer {name:?} (known: {})",
                    known.join(", ")
                )])
            })
    }
}

/// Run one consumer live until shutdown.
pub async fn run_consumer(
    name: ConsumerName,
    cfg: &Config,
    topology: &Topology,
    shutdown: Shutdown,
) -> Result<RunStats, RuntimeError> {
    let route = topology.route(name.as_str())?;
    let spec = RunSpec::for_route(route, &cfg.kafka, &cfg.runtime);
    mailfleet_runtime::metrics::init_consumer(name.as_str());
    run_consumer_with(name, cfg, topology, spec, shutdown).await
}

/// Run one consumer with `spec` (a replay's, say) until shutdown or its
/// stop.
pub async fn run_consumer_with(
    name: ConsumerName,
    cfg: &Config,
    topology: &Topology,
    spec: RunSpec,
    shutdown: Shutdown,
) -> Result<RunStats, RuntimeError> {
    let wiring = Wiring::new(name.as_str(), topology, &spec, &shutdown)?;
    build_and_run(name, cfg, &wiring, spec, shutdown).await
}

/// The blob store of `[blobs]`, for the consumers that read or release
/// message bodies; opened on a blocking thread (an S3 store asks its
/// bucket first), and refused naming the key and value.
async fn blobs(cfg: &Config) -> Result<Arc<BlobStore>, RuntimeError> {
    BlobStore::connect(&cfg.blobs)
        .await
        .map(Arc::new)
        .map_err(|e| RuntimeError::InvalidConfig(vec![e.to_string()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_and_an_unknown_one_lists_the_known() {
        for name in ConsumerName::ALL {
            assert_eq!(name.as_str().parse::<ConsumerName>().unwrap(), *name);
        }
        let e = "scaner".parse::<ConsumerName>().unwrap_err().to_string();
        assert!(e.contains("unknown consumer \"scaner\""), "{e}");
        assert!(e.contains("scanner, storage"), "{e}");
    }

    #[test]
    fn every_consumer_has_a_route_in_the_topology() {
        let path = format!("{}/../../pipelines/topology.toml", crate::manifest_dir());
        let text = std::fs::read_to_string(&path).unwrap();
        let topology = Topology::parse(&text, &path).unwrap();
        for name in ConsumerName::ALL {
            assert!(topology.route(name.as_str()).is_ok(), "{name} has no route");
        }
    }
}
