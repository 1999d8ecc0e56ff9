//! The TOML configuration file.
//!
//! Reading a configuration goes in three steps:
//! 1. TOML → `file::ConfigFile` through serde, every table with
//!    `deny_unknown_fields`, every single value parsed into a type that
//!    guarantees it (`values.rs`); `serde_path_to_error` records where a
//!    value failed, so the error names the field (`trunks[1].address`).
//! 2. Checks across fields (`validate.rs`): references to trunks,
//!    duplicates, list lengths, timer ordering; then the media settings
//!    are resolved, defaults included (`media.rs`).
//! 3. [`Config::compile`] turns the result into the immutable
//!    [`Policy`] snapshot the shards read.
//!
//! `config/sbc.toml` (embedded as [`DEFAULT_CONFIG`]) documents every key.

mod compile;
mod error;
mod file;
mod media;
mod path;
mod registrar;
mod tls;
mod upstream;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use sbc_core::policy::{MediaPolicy, Policy};
use sbc_dataplane::tls::TlsSetup;

pub use compile::StatsRegistry;
pub use error::{ConfigError, Problem};
pub use media::{DEFAULT_PORTS, DEFAULT_TIMEOUT_S, PortRange, media_summary};
pub use path::{FieldPath, Segment};
pub use validate::{MAX_SHARDS, MAX_TRUNKS};

use file::ConfigFile;
use path::line_of_offset;

/// Default of `shards.batch_wait_us`: 1 ms. A shard that wakes for a
/// packet while it relays no media sleeps on until 1 ms has passed since
/// it began waiting (less under load: as long as about 64 receives take at
/// the current rate) before it processes the lot, so one wake-up serves
/// many packets; a packet that finds the shard idle longer than that is
/// taken at once. Measured at 1,000 calls/s
/// (bench/results/2026-12-06-round-cost.md), 1 ms costs less CPU per call
/// than 4 ms (33 against 42 µs, alternating runs) with a quarter of the
/// delay (INVITE→2xx p50 1.6 against 6.6 ms): a CPU that sleeps longer
/// wakes colder (after a 4 ms sleep, about 37 µs of a round's work goes
/// before its messages run warm). 0 (a wake-up for every packet) costs
/// more under load (2026-12-05-wakeups.md).
pub const DEFAULT_BATCH_WAIT_US: u32 = 1_000;

/// Default of `shards.media_batch_wait_us`: 1 ms, the window while a shard
/// relays RTP (it received some in the last second), so relayed media is
/// held at most 1 ms.
pub const DEFAULT_MEDIA_BATCH_WAIT_US: u32 = 1_000;

/// Largest `shards.batch_wait_us` and `shards.media_batch_wait_us` accepted.
pub const MAX_BATCH_WAIT_US: u32 = 10_000;

/// The configuration used when `sbc` starts without `--config`: loopback
/// only, no trunks, so every request is refused.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/sbc.toml");

/// How errors in [`DEFAULT_CONFIG`] name their origin.
pub const DEFAULT_ORIGIN: &str = "<embedded default configuration>";

/// A configuration that parsed and passed validation.
#[derive(Debug, Clone)]
pub struct Config {
    file: ConfigFile,
    /// `[media]` with its defaults filled in.
    media: MediaPolicy,
    /// The TLS settings, PEM files read.
    tls: Arc<TlsSetup>,
}

impl Config {
    /// Parses and validates a configuration text; errors name `<inline>`
    /// as their origin.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::parse("<inline>", text)
    }

    /// Parses and validates a configuration text; `origin` (a file name)
    /// starts every error message. Files it names (TLS certificates, the
    /// registrar's store) are relative to the current directory.
    pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
        Config::parse_at(origin, text, Path::new("."))
    }

    /// [`Config::parse`], reading the files it names relative to `base`.
    pub fn parse_at(origin: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
        parse_file(text, base)
            .map(|(file, media, tls)| Config { file, media, tls })
            .map_err(|problem| ConfigError::Invalid {
                origin: origin.to_owned(),
                problem,
            })
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_at(
                &origin,
                &text,
                path.parent().unwrap_or_else(|| Path::new(".")),
            ),
            Err(source) => Err(ConfigError::Read { origin, source }),
        }
    }

    /// The embedded [`DEFAULT_CONFIG`].
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_ORIGIN, DEFAULT_CONFIG)
    }

    /// The snapshot the shards read. Trunk counters come from `stats`, so
    /// compiling again with the same registry keeps them.
    pub fn compile(&self, stats: &StatsRegistry, version: u64) -> Policy {
        compile::compile(&self.file, &self.media, stats, version)
    }

    /// Number of shards to run: `shards.count`, or one per CPU core when
    /// it is 0 or absent (at most [`MAX_SHARDS`]).
    pub fn shard_count(&self) -> usize {
        shard_count(self.file.shards.count)
    }

    /// The media relay settings, defaults included: `[media]`, or without
    /// it the first SIP listen IP and ports 30000-39999 (anchoring is the
    /// default). Bound at start: a reload cannot change them.
    pub fn media(&self) -> &MediaPolicy {
        &self.media
    }

    /// Whether each shard thread is pinned to a core (`shards.pin_threads`).
    pub fn pin_threads(&self) -> bool {
        self.file.shards.pin_threads.unwrap_or(true)
    }

    /// Wake-up coalescing of the shard loops while they relay no media
    /// (`shards.batch_wait_us`, default 1 ms, or the media window when
    /// only that is given and it is longer: media never waits longer than
    /// signalling).
    pub fn batch_wait(&self) -> std::time::Duration {
        let shards = &self.file.shards;
        let us = shards
            .batch_wait_us
            .unwrap_or_else(|| DEFAULT_BATCH_WAIT_US.max(shards.media_batch_wait_us.unwrap_or(0)));
        std::time::Duration::from_micros(u64::from(us))
    }

    /// Wake-up coalescing while a shard relays media
    /// (`shards.media_batch_wait_us`, default 1 ms; never more than
    /// [`Config::batch_wait`]: a longer value given is refused, the default
    /// is lowered to it).
    pub fn media_batch_wait(&self) -> std::time::Duration {
        let us = self
            .file
            .shards
            .media_batch_wait_us
            .unwrap_or(DEFAULT_MEDIA_BATCH_WAIT_US);
        std::time::Duration::from_micros(u64::from(us)).min(self.batch_wait())
    }

    /// The TLS settings for the shards (certificates read at load).
    pub fn tls(&self) -> Arc<TlsSetup> {
        Arc::clone(&self.tls)
    }

    /// Where the registrar keeps its bindings across restarts.
    pub fn registrar_state_file(&self) -> Option<&Path> {
        self.file.registrar.as_ref()?.state_file.as_deref()
    }

    /// Where `/metrics` is served; `None` when there is no `[metrics]`.
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.file.metrics.as_ref().map(|m| m.listen.0)
    }

    /// The SIP listen addresses, in order (index = local id), as
    /// written: `127.0.0.1:5060` (UDP), `tcp:127.0.0.1:5060`.
    pub fn sip_listen(&self) -> Vec<String> {
        self.file
            .sip
            .listen
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    pub fn summary(&self) -> Summary {
        Summary {
            trunks: self.file.trunks.len(),
            routes: self.file.routes.len(),
            dids: self.file.dids.len(),
            listen: self.file.sip.listen.len(),
        }
    }
}

/// Counts for a one-line description of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub trunks: usize,
    pub routes: usize,
    pub dids: usize,
    pub listen: usize,
}

impl fmt::Display for Summary {
    /// `3 trunks, 1 route, 1 DID, 1 listen address`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "{}, {}, {}, {}",
            plural(self.trunks, "trunk", "trunks"),
            plural(self.routes, "route", "routes"),
            plural(self.dids, "DID", "DIDs"),
            plural(self.listen, "listen address", "listen addresses"),
        )
    }
}

/// `shards.count`, with 0 meaning one per CPU core.
fn shard_count(count: usize) -> usize {
    match count {
        0 => std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(MAX_SHARDS),
        n => n,
    }
}

fn parse_file(
    text: &str,
    base: &Path,
) -> Result<(ConfigFile, MediaPolicy, Arc<TlsSetup>), Problem> {
    let de = toml::de::Deserializer::parse(text)
        .map_err(|e| toml_problem(text, FieldPath::root(), &e))?;
    let mut file: ConfigFile = serde_path_to_error::deserialize(de)
        .map_err(|e| toml_problem(text, FieldPath::from_serde(e.path()), e.inner()))?;
    // The registrar's store, like the PEM files, is relative to the
    // configuration file's folder.
    if let Some(state) = file
        .registrar
        .as_mut()
        .and_then(|r| r.state_file.as_mut())
        .filter(|p| p.is_relative())
    {
        *state = base.join(&*state);
    }
    let with_line = |mut problem: Problem| {
        problem.line = problem.field.line_in(text);
        problem
    };
    validate::validate(&file).map_err(with_line)?;
    let media = media::resolve(&file, shard_count(file.shards.count)).map_err(with_line)?;
    let tls = tls::build(&file, base).map_err(with_line)?;
    Ok((file, media, tls))
}

fn toml_problem(text: &str, field: FieldPath, e: &toml::de::Error) -> Problem {
    let line = e
        .span()
        .map(|s| line_of_offset(text, s.start))
        .or_else(|| field.line_in(text));
    let message = e.message().trim().replace('\n', "; ");
    Problem {
        field,
        message,
        line,
    }
}
