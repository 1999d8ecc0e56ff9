//! The whole engine on arbitrary datagrams from a trusted and an unknown
//! source, with time moving on: it must never panic.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sbc_core::b2bua::{Engine, Secrets, ShardId};
use sbc_core::net::LocalId;
use sbc_core::policy::{Acl, CallTimers, Failover, Listener, NumberPattern, Policy, Route, Target, Trunk, TrunkId};
use sbc_core::stats::ShardStats;
use sbc_core::transaction::TimerConfig;

fn policy() -> Policy {
    let trunk = |name: &str, ip: &str| Trunk {
        name: name.into(),
        sources: vec![format!("{ip}/32").parse().unwrap()],
        address: format!("{ip}:5060").parse().unwrap(),
        media: sbc_core::policy::MediaMode::Anchor,
        codecs: None,
        strict_latch: false,
        stats: Arc::default(),
    };
    Policy {
        version: 1,
        listeners: vec![Listener { bind: "192.0.2.1:5060".parse().unwrap(), advertise: "192.0.2.1:5060".into() }],
        timers: TimerConfig::default(),
        call_timers: CallTimers::default(),
        acl: Acl::default(),
        trunks: vec![trunk("pbx", "10.0.0.10"), trunk("carrier", "10.0.0.20")],
        routes: vec![Route {
            name: "all".into(),
            from: vec![],
            numbers: vec![NumberPattern::Prefix(String::new())],
            targets: vec![Target { trunk: TrunkId(1), priority: 1, weight: 1 }],
            failover: Failover::standard(),
        }],
        media: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let stats = Arc::new(ShardStats::default());
    let mut engine = Engine::new(ShardId(0), 1, Secrets::from_bytes([3; 48]), Arc::new(policy()), stats);
    let mut now = Instant::now();
    let mut buf = vec![0u8; 65536];
    // Split the input into datagrams at 0xff bytes, alternating sources.
    for (i, chunk) in data.split(|b| *b == 0xff).enumerate() {
        let src = if i % 2 == 0 { "10.0.0.10:5060" } else { "10.0.0.20:5060" };
        engine.handle_datagram(now, src.parse().unwrap(), LocalId(0), chunk);
        while engine.poll_transmit(&mut buf).is_some() {}
        now += Duration::from_millis(300);
        engine.handle_timeout(now);
    }
    now += Duration::from_secs(300);
    engine.handle_timeout(now);
});
