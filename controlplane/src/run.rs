//! The `sbc` process: publish the policy, start the data plane and the
//! metrics endpoint, then wait for signals.
//!
//! - SIGHUP reloads the configuration file: the new policy is swapped in
//!   (`arc-swap`); calls in progress keep the snapshot they started with,
//!   and trunk counters carry over ([`StatsRegistry`]). A file that changes
//!   what the sockets are bound to (`sip.listen`, the media relay settings,
//!   defaults included) is refused; other settings that only apply at start
//!   (shards, metrics address) are kept until the next restart.
//! - SIGINT or SIGTERM stops the data plane, then the metrics endpoint.
//!
//! Start-up order: the metrics address is bound first, so a busy port
//! fails before any SIP socket is opened.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sbc_core::b2bua::Secrets;
use sbc_core::policy::{MediaPolicy, Policy};
use sbc_core::stats::ShardStats;
use sbc_dataplane::shard::{Runtime, RuntimeConfig};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{Config, ConfigError, StatsRegistry, media_summary};
use crate::http;
use crate::metrics::Metrics;

/// Where the running configuration came from, for reloads.
#[derive(Debug, Default)]
pub struct ConfigSource {
    /// The file given with `--config`; `None` for the embedded default,
    /// which a reload cannot change.
    pub path: Option<PathBuf>,
    /// The registry the running policy was compiled with.
    pub stats: StatsRegistry,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Already names the metrics address.
    #[error("{0}")]
    Metrics(#[source] io::Error),
    #[error("cannot generate the process secrets: {0}")]
    Secrets(#[source] io::Error),
    #[error("data plane: {0}")]
    DataPlane(#[source] io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "running on the embedded default configuration; start sbc with --config FILE to reload"
    )]
    NoFile,
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("sip.listen changed from {old:?} to {new:?}: restart sbc to change listen addresses")]
    ListenChanged {
        old: Vec<std::net::SocketAddr>,
        new: Vec<std::net::SocketAddr>,
    },
    #[error(
        "media settings changed from ({}) to ({}): restart sbc to change them (the relay sockets are bound at start)",
        media_summary(.old),
        media_summary(.new)
    )]
    MediaChanged {
        old: Box<MediaPolicy>,
        new: Box<MediaPolicy>,
    },
}

/// What wakes the supervisor up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the configuration file (SIGHUP).
    Reload,
    /// Stop, for the reason given (SIGINT, SIGTERM).
    Stop(&'static str),
}

/// What the data plane must be started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPlaneConfig {
    pub shards: usize,
    pub pin_threads: bool,
    pub batch_wait: std::time::Duration,
}

/// A running data plane, as the supervisor sees it.
pub trait DataPlane {
    /// One entry per shard, index = shard id.
    fn shard_stats(&self) -> Vec<Arc<ShardStats>>;
    /// Stops every shard and waits for them.
    fn stop(self);
}

/// Runs `sbc` until SIGINT or SIGTERM. `policy` must have been compiled
/// from `config` with `source.stats`.
pub fn run(config: Config, policy: Policy, source: ConfigSource) -> Result<(), RunError> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(RunError::Signals)?;
    let controls = signals.forever().map(|signal| match signal {
        SIGHUP => Control::Reload,
        SIGINT => Control::Stop("SIGINT"),
        _ => Control::Stop("SIGTERM"),
    });
    supervise(config, policy, &source, start_dataplane, controls)
}

/// The body of [`run`], with the data plane and the signals passed in.
/// Returns when `controls` yields [`Control::Stop`] or ends.
pub fn supervise<D: DataPlane>(
    config: Config,
    policy: Policy,
    source: &ConfigSource,
    start: impl FnOnce(DataPlaneConfig, Arc<ArcSwap<Policy>>, Secrets) -> io::Result<D>,
    controls: impl IntoIterator<Item = Control>,
) -> Result<(), RunError> {
    let snapshot = Arc::new(ArcSwap::from_pointee(policy));
    let metrics_listener = config
        .metrics_listen()
        .map(http::bind)
        .transpose()
        .map_err(RunError::Metrics)?;
    let secrets = sbc_dataplane::shard::os_secrets().map_err(RunError::Secrets)?;
    let dataplane_config = DataPlaneConfig {
        shards: config.shard_count(),
        pin_threads: config.pin_threads(),
        batch_wait: config.batch_wait(),
    };
    let dataplane =
        start(dataplane_config, Arc::clone(&snapshot), secrets).map_err(RunError::DataPlane)?;
    let metrics_server = match metrics_listener {
        None => None,
        Some(listener) => {
            let metrics = Arc::new(Metrics::new(dataplane.shard_stats(), Arc::clone(&snapshot)));
            match listener.serve(metrics) {
                Ok(server) => Some(server),
                Err(e) => {
                    dataplane.stop();
                    return Err(RunError::Metrics(e));
                }
            }
        }
    };
    tracing::info!(
        shards = dataplane_config.shards,
        listen = ?config.sip_listen(),
        media = %media_summary(config.media()),
        version = snapshot.load().version,
        summary = %config.summary(),
        "sbc running"
    );

    for control in controls {
        match control {
            Control::Reload => match reload(&config, source, &snapshot) {
                Ok(version) => tracing::info!(version, "configuration reloaded"),
                Err(e) => tracing::error!(
                    error = %e,
                    version = snapshot.load().version,
                    "configuration not reloaded; the running one stays"
                ),
            },
            Control::Stop(reason) => {
                tracing::info!(reason, "stopping");
                break;
            }
        }
    }

    dataplane.stop();
    if let Some(server) = metrics_server {
        server.stop();
    }
    tracing::info!("sbc stopped");
    Ok(())
}

/// Re-reads the configuration file and publishes it as the next snapshot
/// version. `running` is the configuration `sbc` started with: settings
/// that apply only at start are compared with it.
pub fn reload(
    running: &Config,
    source: &ConfigSource,
    snapshot: &ArcSwap<Policy>,
) -> Result<u64, ReloadError> {
    let path = source.path.as_ref().ok_or(ReloadError::NoFile)?;
    let next = Config::load(path)?;
    if next.sip_listen() != running.sip_listen() {
        return Err(ReloadError::ListenChanged {
            old: running.sip_listen(),
            new: next.sip_listen(),
        });
    }
    if next.media() != running.media() {
        return Err(ReloadError::MediaChanged {
            old: Box::new(running.media().clone()),
            new: Box::new(next.media().clone()),
        });
    }
    if next.shard_count() != running.shard_count() || next.pin_threads() != running.pin_threads() {
        tracing::warn!("[shards] changed: it takes effect at the next restart");
    }
    if next.metrics_listen() != running.metrics_listen() {
        tracing::warn!("metrics.listen changed: it takes effect at the next restart");
    }
    let version = snapshot.load().version.wrapping_add(1);
    snapshot.store(Arc::new(next.compile(&source.stats, version)));
    Ok(version)
}

/// Starts the io_uring shards (see `sbc_dataplane::shard`).
fn start_dataplane(
    cfg: DataPlaneConfig,
    policy: Arc<ArcSwap<Policy>>,
    secrets: Secrets,
) -> io::Result<Runtime> {
    tracing::debug!(
        shards = cfg.shards,
        pin_threads = cfg.pin_threads,
        "starting the data plane"
    );
    let runtime_config = RuntimeConfig {
        shards: cfg.shards,
        pin_threads: cfg.pin_threads,
        batch_wait: cfg.batch_wait,
        ..RuntimeConfig::default()
    };
    Runtime::start(runtime_config, policy, secrets)
}

impl DataPlane for Runtime {
    fn shard_stats(&self) -> Vec<Arc<ShardStats>> {
        Runtime::shard_stats(self)
    }

    fn stop(self) {
        Runtime::stop(self);
    }
}

#[cfg(test)]
mod tests;
