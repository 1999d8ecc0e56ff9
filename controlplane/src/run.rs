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
//! - A shard whose loop ends (an I/O error or a panic) is noticed within
//!   [`WATCH_EVERY`]: `/health` answers 503 from the moment it stopped, and
//!   `sbc` stops and exits non-zero ([`RunError::ShardStopped`]) rather
//!   than run on with a shard that no longer serves its share of calls.
//!
//! Start-up order: the metrics address is bound first, so a busy port
//! fails before any SIP socket is opened.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sbc_core::b2bua::Secrets;
use sbc_core::policy::{MediaPolicy, Policy};
use sbc_core::stats::{LoopState, ShardStats};
use sbc_dataplane::shard::{Directory, Runtime, RuntimeConfig};
use sbc_dataplane::tls::TlsSetup;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{Config, ConfigError, StatsRegistry, media_summary};
use crate::http;
use crate::metrics::Metrics;
use crate::registrar::Registrar;

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
    #[error("shard {0} stopped (see the error logged before): sbc stops with it")]
    ShardStopped(usize),
}

/// How often the supervisor looks whether every shard still runs. Each
/// look is a wake-up of an otherwise idle thread (20–35 µs of CPU on a
/// virtual machine); `/health` sees a stopped shard at once regardless.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "running on the embedded default configuration; start sbc with --config FILE to reload"
    )]
    NoFile,
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("sip.listen changed from {old:?} to {new:?}: restart sbc to change listen addresses")]
    ListenChanged { old: Vec<String>, new: Vec<String> },
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
    /// This shard's loop ended while sbc was running.
    ShardStopped(usize),
}

/// What the data plane must be started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPlaneConfig {
    pub shards: usize,
    pub pin_threads: bool,
    pub coalescing: sbc_dataplane::shard::Coalescing,
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
    let (tx, controls) = mpsc::channel();
    let from_signals = tx.clone();
    std::thread::Builder::new()
        .name("sbc-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let control = match signal {
                    SIGHUP => Control::Reload,
                    SIGINT => Control::Stop("SIGINT"),
                    _ => Control::Stop("SIGTERM"),
                };
                if from_signals.send(control).is_err() {
                    break;
                }
            }
        })
        .map_err(RunError::Signals)?;
    supervise(config, policy, &source, start_dataplane, controls, Some(tx))
}

/// Watches the shards: sends [`Control::ShardStopped`] on `tx` when one
/// stops, until it is told to stop itself (or `tx` is gone).
struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Watchdog {
    fn spawn(shards: Vec<Arc<ShardStats>>, tx: mpsc::Sender<Control>) -> io::Result<Watchdog> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sbc-watchdog".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(WATCH_EVERY) {
                    if let Some(i) = shards
                        .iter()
                        .position(|s| s.loop_state() == LoopState::Stopped)
                    {
                        let _ = tx.send(Control::ShardStopped(i));
                        return;
                    }
                }
            })?;
        Ok(Watchdog { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// The body of [`run`], with the data plane and the signals passed in.
/// Returns when `controls` yields [`Control::Stop`] or ends, or with
/// [`RunError::ShardStopped`] when it yields [`Control::ShardStopped`]: a
/// watchdog sends that on `watch` (when given) as soon as a shard stops.
pub fn supervise<D: DataPlane>(
    config: Config,
    policy: Policy,
    source: &ConfigSource,
    start: impl FnOnce(DataPlaneConfig, Arc<ArcSwap<Policy>>, Directory, Secrets) -> io::Result<D>,
    controls: impl IntoIterator<Item = Control>,
    watch: Option<mpsc::Sender<Control>>,
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
        coalescing: sbc_dataplane::shard::Coalescing {
            signalling: config.batch_wait(),
            media: config.media_batch_wait(),
        },
    };
    let (registrar, directory) = Registrar::start(
        config.registrar_state_file().map(Path::to_path_buf),
        Arc::clone(&snapshot),
    )
    .map_err(RunError::DataPlane)?;
    let location = registrar.location();
    let lockout = Arc::clone(&directory.lockout);
    let tls = Arc::clone(&directory.tls);
    tls.store(config.tls());
    let dataplane = match start(dataplane_config, Arc::clone(&snapshot), directory, secrets) {
        Ok(d) => d,
        Err(e) => {
            registrar.join();
            return Err(RunError::DataPlane(e));
        }
    };
    let metrics_server = match metrics_listener {
        None => None,
        Some(listener) => {
            let metrics = Arc::new(Metrics::with_location(
                dataplane.shard_stats(),
                Arc::clone(&snapshot),
                location,
                lockout,
            ));
            match listener.serve(metrics) {
                Ok(server) => Some(server),
                Err(e) => {
                    dataplane.stop();
                    registrar.join();
                    return Err(RunError::Metrics(e));
                }
            }
        }
    };
    let watchdog = match watch.map(|tx| Watchdog::spawn(dataplane.shard_stats(), tx)) {
        Some(Err(e)) => {
            dataplane.stop();
            registrar.join();
            return Err(RunError::DataPlane(e));
        }
        Some(Ok(w)) => Some(w),
        None => None,
    };
    tracing::info!(
        shards = dataplane_config.shards,
        listen = ?config.sip_listen(),
        media = %media_summary(config.media()),
        version = snapshot.load().version,
        summary = %config.summary(),
        "sbc running"
    );

    let mut failed = None;
    for control in controls {
        match control {
            Control::Reload => match reload(&config, source, &snapshot, &tls) {
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
            Control::ShardStopped(shard) => {
                tracing::error!(shard, "a shard stopped: stopping sbc");
                failed = Some(shard);
                break;
            }
        }
    }

    if let Some(w) = watchdog {
        w.stop();
    }
    dataplane.stop();
    // The shards are gone with their channel ends: the registrar writes
    // its state file one last time and ends.
    registrar.join();
    if let Some(server) = metrics_server {
        server.stop();
    }
    tracing::info!("sbc stopped");
    failed.map_or(Ok(()), |shard| Err(RunError::ShardStopped(shard)))
}

/// Re-reads the configuration file and publishes it as the next snapshot
/// version. `running` is the configuration `sbc` started with: settings
/// that apply only at start are compared with it.
pub fn reload(
    running: &Config,
    source: &ConfigSource,
    snapshot: &ArcSwap<Policy>,
    tls: &ArcSwap<TlsSetup>,
) -> Result<u64, ReloadError> {
    let path = source.path.as_ref().ok_or(ReloadError::NoFile)?;
    let next = Config::load(path)?;
    let (old, new) = (running.sip_listen(), next.sip_listen());
    if old != new {
        return Err(ReloadError::ListenChanged { old, new });
    }
    if next.media() != running.media() {
        return Err(ReloadError::MediaChanged {
            old: Box::new(running.media().clone()),
            new: Box::new(next.media().clone()),
        });
    }
    if next.shard_count() != running.shard_count()
        || next.pin_threads() != running.pin_threads()
        || next.batch_wait() != running.batch_wait()
        || next.media_batch_wait() != running.media_batch_wait()
    {
        tracing::warn!("[shards] changed: it takes effect at the next restart");
    }
    if next.registrar_state_file() != running.registrar_state_file() {
        tracing::warn!("registrar.state_file changed: it takes effect at the next restart");
    }
    if next.metrics_listen() != running.metrics_listen() {
        tracing::warn!("metrics.listen changed: it takes effect at the next restart");
    }
    let version = snapshot.load().version.wrapping_add(1);
    // New TLS connections use the new certificates; established ones keep
    // theirs.
    tls.store(next.tls());
    snapshot.store(Arc::new(next.compile(&source.stats, version)));
    Ok(version)
}

/// Starts the io_uring shards (see `sbc_dataplane::shard`).
fn start_dataplane(
    cfg: DataPlaneConfig,
    policy: Arc<ArcSwap<Policy>>,
    directory: Directory,
    secrets: Secrets,
) -> io::Result<Runtime> {
    tracing::debug!(
        shards = cfg.shards,
        pin_threads = cfg.pin_threads,
        "starting the data plane"
    );
    let stop_shard_after = match std::env::var(FAULT_STOP_SHARD) {
        Ok(v) => Some(
            parse_fault(&v)
                .and_then(|(shard, after)| {
                    if shard < cfg.shards {
                        Ok((shard, after))
                    } else {
                        Err(format!(
                            "there is no shard {shard} (shards: {})",
                            cfg.shards
                        ))
                    }
                })
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{FAULT_STOP_SHARD}: {e}"),
                    )
                })?,
        ),
        Err(_) => None,
    };
    if let Some((shard, after)) = stop_shard_after {
        tracing::warn!(
            shard,
            after_ms = after.as_millis() as u64,
            "fault injection: a shard will stop"
        );
    }
    let runtime_config = RuntimeConfig {
        shards: cfg.shards,
        pin_threads: cfg.pin_threads,
        coalescing: cfg.coalescing,
        stop_shard_after,
        ..RuntimeConfig::default()
    };
    Runtime::start_with(runtime_config, policy, directory, secrets)
}

/// Fault injection for tests of shard supervision: `SHARD:MILLISECONDS`
/// makes that shard's loop end with an error at its first wake-up that
/// long after start (the supervisor then stops `sbc`, exiting non-zero).
pub const FAULT_STOP_SHARD: &str = "SBC_FAULT_STOP_SHARD";

/// Parses a [`FAULT_STOP_SHARD`] value.
fn parse_fault(value: &str) -> Result<(usize, Duration), String> {
    let (shard, ms) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?} is not SHARD:MILLISECONDS"))?;
    let shard = shard
        .trim()
        .parse()
        .map_err(|_| format!("{shard:?} is not a shard number"))?;
    let ms = ms
        .trim()
        .parse()
        .map_err(|_| format!("{ms:?} is not a number of milliseconds"))?;
    Ok((shard, Duration::from_millis(ms)))
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
