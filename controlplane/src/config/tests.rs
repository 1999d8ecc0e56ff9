//! Configuration tests: every shipped file loads, the example routes as
//! documented, compiling keeps counters; `invalid.rs` has one test per
//! rejected input; `media.rs` covers the media settings.

mod invalid;
mod media;
mod registrar;
mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sbc_core::policy::{NumberPattern, TrunkId};

use super::*;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

fn example() -> Config {
    Config::load(config_dir().join("examples/ip-trunks.toml")).unwrap()
}

#[test]
fn every_file_in_config_dir_loads_and_compiles() {
    let mut files = Vec::new();
    toml_files(&config_dir(), &mut files);
    assert!(files.len() >= 2, "found only {files:?}");
    for file in files {
        let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let policy = config.compile(&StatsRegistry::new(), 1);
        assert_eq!(
            policy.trunks.len(),
            config.summary().trunks,
            "{}",
            file.display()
        );
        assert!(!policy.listeners.is_empty());
    }
}

#[test]
fn embedded_default_is_loopback_only_and_refuses_everyone() {
    let config = Config::embedded_default().unwrap();
    assert_eq!(config.sip_listen(), vec!["127.0.0.1:5060".to_owned()]);
    assert_eq!(
        config.metrics_listen(),
        Some("127.0.0.1:9090".parse().unwrap())
    );
    let policy = config.compile(&StatsRegistry::new(), 1);
    assert!(policy.trunks.is_empty() && policy.routes.is_empty());
    assert_eq!(policy.trunk_for_source("127.0.0.1".parse().unwrap()), None);
    assert_eq!(policy.listeners[0].advertise, "127.0.0.1:5060");
    assert_eq!(policy.timers, sbc_core::transaction::TimerConfig::default());
    assert!(config.shard_count() >= 1);
}

#[test]
fn example_routes_pbx_to_carriers_and_italian_dids_to_pbx() {
    let config = example();
    assert_eq!(
        config.summary().to_string(),
        "3 trunks, 1 route, 1 DID, 5 listen addresses"
    );
    assert_eq!(
        config.sip_listen(),
        vec![
            "127.0.0.1:5060".to_owned(),
            "tcp:127.0.0.1:5060".to_owned(),
            "tls:127.0.0.1:5061".to_owned(),
            "ws:127.0.0.1:8080".to_owned(),
            "wss:127.0.0.1:8443".to_owned()
        ]
    );
    let policy = config.compile(&StatsRegistry::new(), 1);
    let pbx = policy
        .trunk_for_source("127.0.0.10".parse().unwrap())
        .unwrap();
    let carrier_a = policy
        .trunk_for_source("127.0.0.20".parse().unwrap())
        .unwrap();
    let carrier_b = policy
        .trunk_for_source("127.0.0.30".parse().unwrap())
        .unwrap();
    assert_eq!(
        (pbx, carrier_a, carrier_b),
        (TrunkId(0), TrunkId(1), TrunkId(2))
    );
    assert_eq!(policy.trunk_for_source("127.0.0.99".parse().unwrap()), None);
    assert_eq!(
        policy.trunk(carrier_a).unwrap().address,
        "127.0.0.20:5060".parse().unwrap()
    );

    let inbound = policy.route(carrier_a, "+390612345").unwrap();
    assert_eq!(
        inbound.targets.iter().map(|t| t.trunk).collect::<Vec<_>>(),
        vec![pbx]
    );
    assert!(policy.route(carrier_b, "390612345").is_some());
    assert!(
        policy.route(carrier_a, "+4420").is_none(),
        "carriers reach only the DIDs"
    );

    let outbound = policy.route(pbx, "+4420").unwrap();
    assert_eq!(&*outbound.name, "pbx-out");
    let order: Vec<_> = outbound
        .targets
        .iter()
        .map(|t| (t.trunk, t.priority))
        .collect();
    assert_eq!(order, vec![(carrier_a, 1), (carrier_b, 2)]);
    assert!(
        outbound.failover.on_timeout
            && outbound.failover.on_code(408)
            && outbound.failover.on_code(503)
    );
    assert!(!outbound.failover.on_code(486) && !outbound.failover.on_code(603));
}

const TWO_TRUNKS: &str = r#"
[sip]
listen = ["127.0.0.1:5060", "[::1]:5080"]
advertise = ["sbc.example.com", "[2001:db8::1]:5080"]
[sip.timers]
t1_ms = 250
t2_ms = 2000
no_response_ms = 1500
[shards]
count = 3
[acl]
allow = ["10.0.0.0/8", "2001:db8::/32"]
deny = ["10.66.0.0/16"]
[[trunks]]
name = "a"
sources = ["10.0.0.0/8"]
address = "10.0.0.1:5060"
[[trunks]]
name = "b"
sources = ["10.1.2.3", "2001:db8::/48"]
address = "[2001:db8::5]:5060"
[[routes]]
name = "r"
numbers = ["112", "00*"]
targets = [ { trunk = "b", priority = 5 }, { trunk = "a", priority = 2, weight = 3 } ]
failover = ["timeout", 486, "6xx"]
[[routes]]
name = "never"
numbers = ["*"]
targets = [ { trunk = "a" } ]
failover = []
[[dids]]
numbers = ["+3906*"]
trunk = "a"
"#;

#[test]
fn compiles_every_section_into_the_policy() {
    let config = Config::from_toml_str(TWO_TRUNKS).unwrap();
    assert_eq!(config.shard_count(), 3);
    assert_eq!(config.metrics_listen(), None);
    let p = config.compile(&StatsRegistry::new(), 9);
    assert_eq!(p.version, 9);
    assert_eq!(p.listeners[0].advertise, "sbc.example.com");
    assert_eq!(p.listeners[1].bind, "[::1]:5080".parse().unwrap());
    assert_eq!(p.listeners[1].advertise, "[2001:db8::1]:5080");
    assert_eq!(p.timers.t1, Duration::from_millis(250));
    assert_eq!(p.timers.t2, Duration::from_millis(2000));
    assert_eq!(
        p.timers.t4,
        Duration::from_secs(5),
        "defaults fill the gaps"
    );
    assert_eq!(p.call_timers.no_response, Duration::from_millis(1500));
    assert_eq!(p.call_timers.max_ringing, Duration::from_secs(180));
    assert!(
        !p.acl.permits("10.66.1.1".parse().unwrap()) && p.acl.permits("10.1.1.1".parse().unwrap())
    );
    assert!(!p.acl.permits("192.0.2.1".parse().unwrap()));
    assert_eq!(
        p.trunk_for_source("10.1.2.3".parse().unwrap()),
        Some(TrunkId(1))
    );
    assert_eq!(
        p.trunk_for_source("2001:db8::9".parse().unwrap()),
        Some(TrunkId(1))
    );

    let r = &p.routes[0];
    assert!(r.from.is_empty());
    assert_eq!(
        r.numbers,
        vec![
            NumberPattern::Exact("112".into()),
            NumberPattern::Prefix("00".into())
        ]
    );
    let targets: Vec<_> = r
        .targets
        .iter()
        .map(|t| (t.trunk, t.priority, t.weight))
        .collect();
    assert_eq!(
        targets,
        vec![(TrunkId(0), 2, 3), (TrunkId(1), 5, 1)],
        "sorted by priority, weight defaults to 1"
    );
    assert!(r.failover.on_timeout && r.failover.on_code(486) && r.failover.on_code(603));
    assert!(!r.failover.on_code(503) && !r.failover.on_code(408));
    let never = &p.routes[1].failover;
    assert!(!never.on_timeout && (300..700).all(|c| !never.on_code(c)));

    let did = &p.routes[2];
    assert_eq!(&*did.name, "did:+3906*");
    assert_eq!(did.targets.len(), 1);
    assert_eq!(
        (
            did.targets[0].trunk,
            did.targets[0].priority,
            did.targets[0].weight
        ),
        (TrunkId(0), 1, 1)
    );
    assert_eq!(did.failover, sbc_core::policy::Failover::standard());
    assert_eq!(
        p.route(TrunkId(1), "+390612").map(|r| &*r.name),
        Some("did:+3906*")
    );
}

#[test]
fn trunk_counters_are_shared_across_recompiles_by_name() {
    let registry = StatsRegistry::new();
    let first = example().compile(&registry, 1);
    let second = example().compile(&registry, 2);
    for (a, b) in first.trunks.iter().zip(&second.trunks) {
        assert!(Arc::ptr_eq(&a.stats, &b.stats), "{}", a.name);
    }
    assert!(!Arc::ptr_eq(&first.trunks[0].stats, &first.trunks[1].stats));
    let fresh = example().compile(&StatsRegistry::new(), 1);
    assert!(!Arc::ptr_eq(&first.trunks[0].stats, &fresh.trunks[0].stats));
}

#[test]
fn load_errors_name_the_file() {
    let missing = config_dir().join("does-not-exist.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[sip]\nlisten = [\"127.0.0.1:5060\"]\n\n[[trunks]]\nname = \"x\"\nsources = [\"1.2.3.4\"]\naddress = \"foo\"\n").unwrap();
    let err = Config::load(&file).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: trunks[0].address: \"foo\" is not an IP address and port (like \"192.0.2.1:5060\" or \"[2001:db8::1]:5060\") (line 7)",
            file.display()
        )
    );
}
