//! Prometheus/OpenMetrics exposition of the data plane's counters.
//!
//! Nothing is copied on the hot path: the shards bump relaxed atomics in
//! their [`ShardStats`] and the trunks' `TrunkStats`; a [`Collector`]
//! reads them when `/metrics` is scraped. Trunks come from the policy
//! snapshot current at scrape time, so a trunk added by a reload appears
//! at the next scrape and a removed one disappears.
//!
//! Every name starts with `sbc_`; counters end in `_total`. Media relay
//! metrics are in `media.rs`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use sbc_core::policy::Policy;
use sbc_core::refusal::Refusal;
use sbc_core::registrar::{AuthFailure, Location, Lockout, RegisterResult};

use crate::registrar::{LocationView, read_view};
use sbc_core::stats::{Direction, Discard, LoopState, Registered, STATUS_SLOTS, ShardStats};

/// The HTTP content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics registry of one `sbc` process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    shards: Vec<Arc<ShardStats>>,
    location: LocationView,
}

impl Metrics {
    /// Metrics over `shards` (one entry per shard, index = shard id) and
    /// the trunks of the snapshot `policy` holds at each scrape.
    pub fn new(shards: Vec<Arc<ShardStats>>, policy: Arc<ArcSwap<Policy>>) -> Self {
        Self::with_location(shards, policy, Arc::default(), Arc::default())
    }

    /// [`Metrics::new`], with the registrar's view of the bindings and the
    /// shards' lockout table.
    pub fn with_location(
        shards: Vec<Arc<ShardStats>>,
        policy: Arc<ArcSwap<Policy>>,
        location: LocationView,
        lockout: Arc<Lockout>,
    ) -> Self {
        let mut registry = Registry::with_prefix("sbc");
        registry.register_collector(Box::new(SbcCollector {
            shards: shards.clone(),
            policy,
            location: Arc::clone(&location),
            lockout,
        }));
        Metrics {
            registry,
            shards,
            location,
        }
    }

    /// Reads the registrar's bindings now (for `/registrations`).
    pub fn with_bindings<R>(&self, f: impl FnOnce(&Location) -> R) -> R {
        read_view(&self.location, f)
    }

    /// The shards whose loop has ended (by index), for `/health`.
    pub fn stopped_shards(&self) -> Vec<usize> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.loop_state() == LoopState::Stopped)
            .map(|(i, _)| i)
            .collect()
    }

    /// The OpenMetrics text exposition, ending with `# EOF`.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[derive(Debug)]
struct SbcCollector {
    shards: Vec<Arc<ShardStats>>,
    policy: Arc<ArcSwap<Policy>>,
    location: LocationView,
    lockout: Arc<Lockout>,
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

type Sample<L> = (L, u64);

/// Picks one counter out of a shard's stats.
type ShardCounter = fn(&ShardStats) -> &AtomicU64;

fn counter<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = Sample<L>>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter without labels.
fn total_counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let desc = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(desc)
}

/// A gauge without labels.
fn total_gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    let desc = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(desc)
}

/// A number of things as a gauge value.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SbcCollector {
    /// One gauge sample per shard: `field` of each shard's stats.
    fn per_shard_gauge(
        &self,
        field: impl Fn(&ShardStats) -> &AtomicI64,
    ) -> impl Iterator<Item = ([(&'static str, usize); 1], i64)> {
        self.shards
            .iter()
            .enumerate()
            .map(move |(i, s)| ([("shard", i)], field(s).load(Ordering::Relaxed)))
    }

    /// One sample per label, labelled `key`: the sum over shards of the
    /// entry of `array` at the label's index.
    fn by_label<'l>(
        &self,
        key: &'static str,
        labels: impl IntoIterator<Item = &'l str>,
        array: impl Fn(&ShardStats) -> &[AtomicU64],
    ) -> Vec<Sample<[(&'static str, &'l str); 1]>> {
        labels
            .into_iter()
            .enumerate()
            .map(|(i, l)| ([(key, l)], self.total_at(&array, i)))
            .collect()
    }

    /// The sum over shards of entry `i` of one of the shards' arrays.
    fn total_at(&self, array: impl Fn(&ShardStats) -> &[AtomicU64], i: usize) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| array(s).get(i))
            .map(load)
            .fold(0, u64::wrapping_add)
    }

    /// One sample per shard: `field` of each shard's stats.
    fn per_shard(
        &self,
        field: impl Fn(&ShardStats) -> &AtomicU64,
    ) -> impl Iterator<Item = Sample<[(&'static str, usize); 1]>> {
        self.shards
            .iter()
            .enumerate()
            .map(move |(i, s)| ([("shard", i)], load(field(s))))
    }

    /// The sum over shards of `field`.
    fn total(&self, field: impl Fn(&ShardStats) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| load(field(s)))
            .fold(0, u64::wrapping_add)
    }

    /// Per status code sums over shards of one of the by-code arrays;
    /// codes never seen are left out.
    fn by_code(
        &self,
        array: impl Fn(&ShardStats) -> &[AtomicU64; STATUS_SLOTS],
    ) -> Vec<Sample<[(&'static str, u16); 1]>> {
        (0..STATUS_SLOTS)
            .filter_map(|i| {
                let n = self.total(|s| &array(s)[i]);
                let code = u16::try_from(100 + i).ok()?;
                (n > 0).then_some(([("code", code)], n))
            })
            .collect()
    }

    fn encode_trunks(&self, enc: &mut DescriptorEncoder, policy: &Policy) -> fmt::Result {
        type Field = fn(&sbc_core::stats::TrunkStats, usize) -> u64;
        let families: [(&str, &str, Field); 3] = [
            (
                "calls_attempted",
                "Calls offered, per trunk and direction.",
                |t, d| load(&t.attempted[d]),
            ),
            (
                "calls_answered",
                "Calls answered, per trunk and direction.",
                |t, d| load(&t.answered[d]),
            ),
            (
                "calls_failed",
                "Calls that ended without an answer, per trunk and direction.",
                |t, d| load(&t.failed[d]),
            ),
        ];
        let samples = |field: Field| {
            policy.trunks.iter().flat_map(move |t| {
                Direction::ALL.map(|d| {
                    (
                        [("trunk", &*t.name), ("direction", d.label())],
                        field(&t.stats, d as usize),
                    )
                })
            })
        };
        for (name, help, field) in families {
            counter(enc, name, help, samples(field))?;
        }
        let active = policy.trunks.iter().flat_map(|t| {
            Direction::ALL.map(|d| {
                let n = t.stats.active[d as usize].load(Ordering::Relaxed);
                ([("trunk", &*t.name), ("direction", d.label())], n)
            })
        });
        gauge(
            enc,
            "calls_active",
            "Answered calls in progress, per trunk and direction.",
            active,
        )?;
        gauge(
            enc,
            "trunk_up",
            "1 while the trunk is up, 0 while its health probes hold it down (calls skip it).",
            policy
                .trunks
                .iter()
                .map(|t| ([("trunk", &*t.name)], i64::from(!t.stats.is_down()))),
        )?;
        let open = policy.trunks.iter().flat_map(|t| {
            Direction::ALL.map(|d| {
                let n = t.stats.open[d as usize].load(Ordering::Relaxed);
                ([("trunk", &*t.name), ("direction", d.label())], n)
            })
        });
        gauge(
            enc,
            "trunk_calls_open",
            "Calls open with the trunk (ringing or answered), per direction: what max_calls limits.",
            open,
        )?;
        let probes = policy.trunks.iter().flat_map(|t| {
            [("answered", 0), ("failed", 1)].map(|(result, i)| {
                (
                    [("trunk", &*t.name), ("result", result)],
                    load(&t.stats.probes[i]),
                )
            })
        });
        counter(
            enc,
            "trunk_probes",
            "OPTIONS health probes, per trunk, answered or failed (no answer, 408, 5xx, 6xx).",
            probes,
        )?;
        self.encode_upstreams(enc, policy)
    }

    /// The SBC's own registrations, for the trunks that ask for one.
    fn encode_upstreams(&self, enc: &mut DescriptorEncoder, policy: &Policy) -> fmt::Result {
        let registering = || policy.trunks.iter().filter(|t| t.registration.is_some());
        gauge(
            enc,
            "trunk_registered",
            "1 while the SBC is registered to the trunk, 0 while it is not (trying or failed).",
            registering().map(|t| {
                let yes = t.stats.registered() == Registered::Yes;
                ([("trunk", &*t.name)], i64::from(yes))
            }),
        )?;
        gauge(
            enc,
            "trunk_registration_status",
            "The last final status the trunk's registrar answered the SBC's REGISTER with (0: none yet, or no answer).",
            registering().map(|t| {
                let status = t.stats.registration_status.load(Ordering::Relaxed);
                ([("trunk", &*t.name)], i64::from(status))
            }),
        )?;
        let now = std::time::Instant::now();
        let dynamic: Vec<(&str, i64)> = read_view(&self.location, |location| {
            policy
                .trunks
                .iter()
                .filter(|t| t.dynamic)
                .map(|t| {
                    let key = sbc_core::registrar::trunk_account_key(&t.name);
                    let bound = policy
                        .accounts
                        .extension(&key)
                        .any(|a| location.get(&a.username, now).is_some());
                    (&*t.name, i64::from(bound))
                })
                .collect()
        });
        gauge(
            enc,
            "dynamic_trunk_registered",
            "1 while the trunk (host = \"dynamic\") is registered to the SBC, 0 while it is not (its calls get 480).",
            dynamic
                .into_iter()
                .map(|(trunk, v)| ([("trunk", trunk)], v)),
        )?;
        let rounds = registering().flat_map(|t| {
            [("registered", 0), ("failed", 1)].map(|(result, i)| {
                (
                    [("trunk", &*t.name), ("result", result)],
                    load(&t.stats.registrations[i]),
                )
            })
        });
        counter(
            enc,
            "trunk_registrations",
            "The SBC's REGISTER exchanges with each trunk, by result.",
            rounds,
        )
    }

    fn encode_shards(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        counter(
            enc,
            "shard_calls",
            "Calls created by each shard.",
            self.per_shard(|s| &s.calls_created),
        )?;
        gauge(
            enc,
            "shard_calls_active",
            "Calls each shard holds now.",
            self.per_shard_gauge(|s| &s.calls_active),
        )?;
        gauge(
            enc,
            "shard_admission",
            "Share of new calls each shard admits, per mille (below 1000: overloaded, the rest get 503).",
            self.per_shard_gauge(|s| &s.admission),
        )?;
        gauge(
            enc,
            "shard_up",
            "1 while the shard's event loop runs, 0 once it has stopped.",
            self.shards.iter().enumerate().map(|(i, s)| {
                (
                    [("shard", i)],
                    i64::from(s.loop_state() == LoopState::Running),
                )
            }),
        )?;
        let sip: [(&str, &str, ShardCounter); 8] = [
            (
                "sip_messages_received",
                "SIP messages received, per shard.",
                |s| &s.messages_in,
            ),
            ("sip_messages_sent", "SIP messages sent, per shard.", |s| {
                &s.messages_out
            }),
            (
                "sip_bytes_received",
                "SIP bytes received, per shard.",
                |s| &s.bytes_in,
            ),
            ("sip_bytes_sent", "SIP bytes sent, per shard.", |s| {
                &s.bytes_out
            }),
            (
                "sip_retransmissions_received",
                "Retransmitted SIP messages received, per shard.",
                |s| &s.retransmissions_in,
            ),
            (
                "sip_handoffs",
                "SIP messages handed to the shard that owns their call.",
                |s| &s.handed_off,
            ),
            (
                "sip_parse_errors",
                "Received datagrams that did not parse as SIP, per shard.",
                |s| &s.parse_errors,
            ),
            (
                "shard_loop_iterations",
                "Event-loop iterations, per shard (load indicator).",
                |s| &s.loop_iterations,
            ),
        ];
        for (name, help, field) in sip {
            counter(enc, name, help, self.per_shard(field))?;
        }
        let mut busy = enc.encode_descriptor(
            "shard_busy_seconds",
            "Wall-clock time each shard's loop spent working between its waits (the sends a \
             wait submits not included): the rate is about the shard's busy fraction, and over sbc_shard_loop_iterations_total the time a round takes.",
            None,
            MetricType::Counter,
        )?;
        for (labels, nanos) in self.per_shard(|s| &s.busy_nanos) {
            #[allow(clippy::cast_precision_loss)]
            let seconds = nanos as f64 / 1e9;
            ConstCounter::new(seconds).encode(busy.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Stream connections (SIP over TCP): open now per shard and
    /// transport, accepted, opened, and closed by reason.
    fn encode_connections(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        use sbc_core::net::{ConnClose, Transport};
        let open = self.shards.iter().enumerate().flat_map(|(i, s)| {
            Transport::ALL
                .iter()
                .zip(&s.connections_open)
                .filter(|(t, _)| t.is_reliable())
                .map(move |(t, g)| {
                    (
                        [("shard", i.to_string()), ("transport", t.name().to_owned())],
                        g.load(Ordering::Relaxed),
                    )
                })
        });
        gauge(
            enc,
            "connections_open",
            "SIP stream connections open now, per shard and transport.",
            open,
        )?;
        counter(
            enc,
            "connections_accepted",
            "SIP stream connections accepted from peers, per shard.",
            self.per_shard(|s| &s.connections_accepted),
        )?;
        counter(
            enc,
            "connections_opened",
            "SIP stream connections the SBC opened (to trunks), per shard.",
            self.per_shard(|s| &s.connections_opened),
        )?;
        counter(
            enc,
            "connections_closed",
            "SIP stream connections closed (or refused at once: limit), by reason.",
            self.by_label("reason", ConnClose::ALL.iter().map(|r| r.label()), |s| {
                &s.connections_closed
            }),
        )?;
        let streams = |array: fn(&ShardStats) -> &[AtomicU64]| {
            Transport::ALL
                .iter()
                .enumerate()
                .filter(|(_, t)| t.is_reliable())
                .map(|(i, t)| ([("transport", t.name())], self.total_at(array, i)))
                .collect::<Vec<_>>()
        };
        counter(
            enc,
            "connection_bytes_received",
            "Bytes received on SIP stream connections, by transport (TLS records and WebSocket frames included).",
            streams(|s| &s.stream_bytes_in),
        )?;
        counter(
            enc,
            "connection_bytes_sent",
            "Bytes sent on SIP stream connections, by transport (TLS records and WebSocket frames included).",
            streams(|s| &s.stream_bytes_out),
        )?;
        // Handshakes exist on the transports that run TLS.
        let tls_transports = || {
            Transport::ALL
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(t, Transport::Tls | Transport::Wss))
        };
        let handshakes = |array: fn(&ShardStats) -> &[AtomicU64]| {
            tls_transports()
                .map(|(i, t)| ([("transport", t.name())], self.total_at(array, i)))
                .collect::<Vec<_>>()
        };
        counter(
            enc,
            "tls_handshakes",
            "TLS handshakes completed, by transport.",
            handshakes(|s| &s.handshakes),
        )?;
        counter(
            enc,
            "tls_handshake_failures",
            "TLS handshakes that failed (bad or missing certificate, no common cipher, garbage), by transport.",
            handshakes(|s| &s.handshake_failures),
        )
    }

    fn encode_outcomes(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let sent = self.by_code(|s| &s.finals_sent);
        counter(
            enc,
            "final_responses_sent",
            "Final responses sent to callers, by status code.",
            sent,
        )?;
        let received = self.by_code(|s| &s.finals_received);
        counter(
            enc,
            "final_responses_received",
            "Final responses received from trunks, by status code.",
            received,
        )?;
        total_counter(
            enc,
            "failovers",
            "Calls moved to their next target.",
            self.total(|s| &s.failovers),
        )?;
        let rejected = self.by_label("reason", Refusal::LABELS.iter().copied(), |s| &s.rejected);
        counter(
            enc,
            "requests_rejected",
            "Requests refused before becoming calls, by reason.",
            rejected,
        )?;
        let discarded = self.by_label("reason", Discard::ALL.iter().map(|d| d.label()), |s| {
            &s.dropped
        });
        counter(
            enc,
            "messages_discarded",
            "Messages dropped without an answer, by reason.",
            discarded,
        )
    }
}

impl SbcCollector {
    /// The registrar's bindings and what became of REGISTERs (only when
    /// the registrar is configured).
    fn encode_registrar(&self, enc: &mut DescriptorEncoder, policy: &Policy) -> fmt::Result {
        if policy.accounts.settings.is_none() {
            return Ok(());
        }
        let now = std::time::Instant::now();
        // Built before the view is locked: the registrar thread waits
        // for it only while bindings are counted.
        let mut per_extension: std::collections::BTreeMap<Arc<str>, i64> = policy
            .accounts
            .all()
            .iter()
            .filter(|a| a.trunk.is_none())
            .map(|a| (Arc::clone(&a.extension), 0))
            .collect();
        let (bindings, unreachable) = read_view(&self.location, |location| {
            let mut unreachable = 0usize;
            for b in location.iter().filter(|b| b.expires > now) {
                if let Some(n) = per_extension.get_mut(&b.extension) {
                    *n += 1;
                }
                unreachable += usize::from(!b.reachable);
            }
            (location.len(), unreachable)
        });
        total_gauge(
            enc,
            "registrations",
            "Accounts registered now (bindings held by the registrar).",
            count(bindings),
        )?;
        counter(
            enc,
            "registrar_requests",
            "REGISTERs the registrar answered or dropped, by result.",
            self.by_label(
                "result",
                RegisterResult::ALL.iter().map(|r| r.label()),
                |s| &s.registrar,
            ),
        )?;
        counter(
            enc,
            "phone_auth_requests",
            "Phones' requests other than REGISTER (INVITE, OPTIONS, MESSAGE...) challenged, refused or dropped before their credentials checked out, by result.",
            self.by_label(
                "result",
                RegisterResult::ALL.iter().map(|r| r.label()),
                |s| &s.phone_auth,
            ),
        )?;
        counter(
            enc,
            "auth_failures",
            "Refused credentials (REGISTER and phones' other requests), by reason; the client is answered alike whatever the reason.",
            self.by_label("reason", AuthFailure::ALL.iter().map(|r| r.label()), |s| {
                &s.auth_failures
            }),
        )?;
        total_gauge(
            enc,
            "blocked_sources",
            "Sources ignored now for failing authentication too often (registrar lockout).",
            count(self.lockout.blocked(std::time::Instant::now())),
        )?;
        total_gauge(
            enc,
            "registrations_unreachable",
            "Registered accounts whose keepalives go unanswered (not rung).",
            count(unreachable),
        )?;
        gauge(
            enc,
            "extension_registrations",
            "Accounts of each extension registered now.",
            per_extension
                .iter()
                .map(|(extension, n)| ([("extension", &**extension)], *n)),
        )
    }
}

impl Collector for SbcCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let policy = self.policy.load();
        self.encode_trunks(&mut enc, &policy)?;
        self.encode_shards(&mut enc)?;
        self.encode_outcomes(&mut enc)?;
        self.encode_media(&mut enc)?;
        self.encode_registrar(&mut enc, &policy)?;
        self.encode_connections(&mut enc)?;
        total_gauge(
            &mut enc,
            "config_version",
            "Version of the configuration snapshot in use.",
            i64::try_from(policy.version).unwrap_or(i64::MAX),
        )
    }
}

mod media;

#[cfg(test)]
pub(crate) mod tests;
