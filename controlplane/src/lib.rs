//! SBC control plane: everything around the data plane's shards.
//!
//! - [`config`]: the TOML configuration, validated with errors that name
//!   the field, compiled into the immutable
//!   [`Policy`](sbc_core::policy::Policy) snapshot the shards read.
//! - [`metrics`]: Prometheus/OpenMetrics exposition of the shards' and
//!   trunks' counters, read at scrape time.
//! - [`http`]: the `/metrics` and `/health` HTTP endpoint, on its own thread.
//! - [`run`]: the `sbc` process: start, publish snapshots, reload on
//!   SIGHUP, stop cleanly on SIGINT/SIGTERM.
//!
//! The control plane publishes snapshots through an
//! `Arc<ArcSwap<Policy>>`: a reload builds a new `Policy` and swaps it in;
//! calls in progress keep the snapshot they started with.
#![forbid(unsafe_code)]

pub mod config;
pub mod http;
pub mod metrics;
pub mod registrar;
pub mod run;
