//! A validated configuration becomes the [`Policy`] snapshot the shards
//! read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sbc_core::policy::{
    Acl, CallTimers, Failover, Listener, MediaPolicy, Policy, Probe, Route, StrangerAnswers,
    Target, Trunk, TrunkId,
};
use sbc_core::stats::TrunkStats;
use sbc_core::transaction::TimerConfig;

use super::file::{self, ConfigFile};
use super::values::{FailoverEntry, Name};

/// Per-trunk counters by trunk name, kept across recompiles so a reload
/// does not reset a trunk's metrics. A trunk removed from the
/// configuration keeps its entry, and its counters resume if it returns.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    trunks: Mutex<HashMap<Arc<str>, Arc<TrunkStats>>>,
    /// Calls open across shards (`sip.max_calls`), kept across reloads.
    pub open_calls: Arc<sbc_core::stats::OpenCalls>,
}

impl StatsRegistry {
    pub fn new() -> Self {
        StatsRegistry::default()
    }

    /// The counters of the trunk called `name`, created on first use.
    pub fn trunk(&self, name: &str) -> Arc<TrunkStats> {
        // The map is only inserted into; a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still usable.
        let mut trunks = self.trunks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(stats) = trunks.get(name) {
            return Arc::clone(stats);
        }
        let stats = Arc::new(TrunkStats::default());
        trunks.insert(name.into(), Arc::clone(&stats));
        stats
    }
}

/// Where a trunk that registers "is" until it does: never sent to.
const UNUSED_ADDRESS: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// The accounts of the trunks that register to the SBC.
fn trunk_accounts(trunks: &[super::file::Trunk]) -> Vec<sbc_core::registrar::Account> {
    trunks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.host.is_some())
        .filter_map(|(i, t)| {
            Some(sbc_core::registrar::Account {
                username: t.username.as_ref()?.0.as_str().into(),
                extension: sbc_core::registrar::trunk_account_key(&t.name.0),
                secret: sbc_core::registrar::AccountSecret::Password(
                    t.secret.as_ref()?.0.as_bytes().into(),
                ),
                networks: Vec::new(),
                transports: Vec::new(),
                trunk: Some(TrunkId(u16::try_from(i).unwrap_or(u16::MAX))),
            })
        })
        .collect()
}

pub fn compile(
    file: &ConfigFile,
    media: &MediaPolicy,
    stats: &StatsRegistry,
    version: u64,
) -> Policy {
    let ids: HashMap<&Name, TrunkId> = file
        .trunks
        .iter()
        .enumerate()
        // Validation bounds the number of trunks to `u16::MAX`.
        .map(|(i, t)| (&t.name, TrunkId(u16::try_from(i).unwrap_or(u16::MAX))))
        .collect();
    let from = |names: &[Name]| {
        names
            .iter()
            .filter_map(|n| match n.0.as_str() {
                super::validate::PHONES => Some(sbc_core::policy::PHONES),
                _ => ids.get(n).copied(),
            })
            .collect::<Vec<_>>()
    };

    let trunks = file
        .trunks
        .iter()
        .map(|t| {
            // Unused for a trunk that registers (it is reached where it
            // registered from).
            let address = t.address.map_or(UNUSED_ADDRESS, |a| a.0);
            Trunk {
                name: t.name.0.as_str().into(),
                sources: t.sources.iter().map(|n| n.0).collect(),
                source_port: t.source_port,
                address,
                transport: t.transport.0,
                media: t.media.0,
                strict_latch: t.strict_latch,
                codecs: t
                    .codecs
                    .as_ref()
                    .map(|list| list.iter().map(|c| c.0.clone()).collect()),
                probe: t.probe.map(|p| Probe {
                    interval: std::time::Duration::from_secs(u64::from(p.interval_s)),
                    down_after: p.down_after,
                    up_after: p.up_after,
                }),
                max_calls: t.max_calls,
                max_cps: t.max_cps,
                public: t.public,
                follow_contact: t.follow_contact,
                media_share: t.media_share,
                tls_only: t.tls.as_ref().is_some_and(|tls| tls.verify_client),
                registration: t
                    .register
                    .as_ref()
                    .map(|r| super::upstream::compile(r, address)),
                dynamic: t.host.is_some(),
                stats: stats.trunk(&t.name.0),
            }
        })
        .collect();

    let mut routes: Vec<Route> = file
        .routes
        .iter()
        .map(|r| {
            let mut targets: Vec<Target> = r
                .targets
                .iter()
                .filter_map(|t| {
                    ids.get(&t.trunk).map(|id| Target {
                        trunk: *id,
                        priority: t.priority,
                        weight: t.weight,
                    })
                })
                .collect();
            // Stable: equal priorities keep the order they were written in.
            targets.sort_by_key(|t| t.priority);
            Route {
                name: r.name.0.as_str().into(),
                from: from(&r.from),
                numbers: r.numbers.iter().map(|p| p.0.clone()).collect(),
                targets,
                failover: r
                    .failover
                    .as_deref()
                    .map_or_else(Failover::standard, failover),
                extension: None,
            }
        })
        .collect();
    routes.extend(file.dids.iter().map(|d| {
        Route {
            name: did_name(d).into(),
            from: from(&d.from),
            numbers: d.numbers.iter().map(|p| p.0.clone()).collect(),
            targets: d
                .trunk
                .as_ref()
                .and_then(|t| ids.get(t))
                .map(|id| Target {
                    trunk: *id,
                    priority: 1,
                    weight: 1,
                })
                .into_iter()
                .collect(),
            failover: Failover::standard(),
            extension: d.extension.as_ref().map(|e| e.0.as_str().into()),
        }
    }));

    Policy {
        version,
        listeners: listeners(&file.sip),
        timers: timers(&file.sip.timers),
        call_timers: call_timers(&file.sip.timers),
        limits: sbc_core::policy::Limits {
            max_calls: file.sip.max_calls,
            open: Arc::clone(&stats.open_calls),
        },
        acl: Acl {
            allow: file.acl.allow.iter().map(|n| n.0).collect(),
            deny: file.acl.deny.iter().map(|n| n.0).collect(),
            strangers: {
                let d = StrangerAnswers::default();
                StrangerAnswers {
                    per_source: file.acl.stranger_answers_per_s.unwrap_or(d.per_source),
                    total: file.acl.stranger_answers_total_per_s.unwrap_or(d.total),
                }
            },
        },
        trunks,
        routes,
        // Anchoring is the default: there is always a relay; a trunk asks
        // for bypass with `media = "bypass"`.
        media: Some(media.clone()),
        accounts: super::registrar::compile(
            file.registrar.as_ref(),
            &file.extensions,
            trunk_accounts(&file.trunks),
        ),
    }
}

/// `did:<first number pattern>`; route names cannot contain `:`, so this
/// never collides with a route.
pub fn did_name(did: &file::Did) -> String {
    let first = did.numbers.first().map(|p| match &p.0 {
        sbc_core::policy::NumberPattern::Exact(n) => n.clone(),
        sbc_core::policy::NumberPattern::Prefix(p) => format!("{p}*"),
    });
    format!("did:{}", first.unwrap_or_default())
}

fn failover(entries: &[FailoverEntry]) -> Failover {
    let mut f = Failover::none();
    for entry in entries {
        match entry.codes() {
            None => f.on_timeout = true,
            Some(codes) => codes.for_each(|c| f.add(c)),
        }
    }
    f
}

fn listeners(sip: &file::Sip) -> Vec<Listener> {
    sip.listen
        .iter()
        .enumerate()
        .map(|(i, bind)| Listener {
            transport: bind.1,
            bind: bind.0,
            advertise: sip
                .advertise
                .as_ref()
                .and_then(|a| a.get(i))
                .map_or_else(|| bind.0.to_string(), |a| a.0.clone()),
        })
        .collect()
}

fn timers(t: &file::Timers) -> TimerConfig {
    let d = TimerConfig::default();
    TimerConfig {
        t1: t.t1_ms.map_or(d.t1, |m| m.0),
        t2: t.t2_ms.map_or(d.t2, |m| m.0),
        t4: t.t4_ms.map_or(d.t4, |m| m.0),
    }
}

fn call_timers(t: &file::Timers) -> CallTimers {
    let d = CallTimers::default();
    CallTimers {
        no_response: t.no_response_ms.map_or(d.no_response, |m| m.0),
        max_ringing: t.max_ringing_ms.map_or(d.max_ringing, |m| m.0),
        max_duration: t
            .max_call_duration_s
            .map(|s| std::time::Duration::from_secs(u64::from(s))),
        session_expires: t.session_expires_s,
        min_se: t.min_se_s.unwrap_or(d.min_se),
    }
}
