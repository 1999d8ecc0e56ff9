use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use sbc_core::media::MediaDrop;
use sbc_core::refusal::Refusal;
use sbc_core::stats::{Direction, Discard, ShardStats};

use super::Metrics;
use crate::config::{Config, StatsRegistry};

/// One sample line of the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses `name{k="v",...} value` lines, skipping `#` lines. Fails on
/// anything else, so a malformed exposition fails the test.
pub(crate) fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let labels = body
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label in {line:?}"));
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (
                            k.to_owned(),
                            v.unwrap_or_else(|| panic!("unquoted label in {line:?}"))
                                .to_owned(),
                        )
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad metric name in {line:?}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// The value of the one sample called `name` with exactly `labels`.
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want)
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} appears {} times",
        found.len()
    );
    found.first().map(|s| s.value)
}

fn example_policy(
    registry: &StatsRegistry,
    version: u64,
) -> Arc<ArcSwap<sbc_core::policy::Policy>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/examples/ip-trunks.toml"
    );
    let config = Config::load(path).unwrap();
    Arc::new(ArcSwap::from_pointee(config.compile(registry, version)))
}

#[test]
fn exposition_reports_known_counters_and_parses() {
    let registry = StatsRegistry::new();
    let policy = example_policy(&registry, 7);
    let pbx = registry.trunk("pbx");
    pbx.attempt(Direction::Outbound);
    pbx.attempt(Direction::Outbound);
    pbx.answer(Direction::Outbound);
    pbx.fail(Direction::Outbound);
    registry.trunk("carrier-a").attempt(Direction::Inbound);

    let shards: Vec<Arc<ShardStats>> = (0..2).map(|_| Arc::new(ShardStats::default())).collect();
    shards[0].messages_in.store(10, Ordering::Relaxed);
    shards[1].messages_in.store(32, Ordering::Relaxed);
    shards[1].messages_out.store(5, Ordering::Relaxed);
    shards[0].calls_created.store(3, Ordering::Relaxed);
    shards[1].calls_active.store(2, Ordering::Relaxed);
    shards[0].handed_off.store(4, Ordering::Relaxed);
    shards[1].parse_errors.store(1, Ordering::Relaxed);
    shards[0].retransmissions_in.store(6, Ordering::Relaxed);
    shards[0].failovers.store(2, Ordering::Relaxed);
    shards[1].failovers.store(1, Ordering::Relaxed);
    shards[0].final_sent(486);
    shards[1].final_sent(486);
    shards[1].final_sent(200);
    shards[0].final_received(503);
    shards[0].refused(Refusal::UnknownSource);
    shards[1].refused(Refusal::UnknownSource);
    shards[1].discard(Discard::StrayAck);
    // Media: index 0 is what the caller's side sent, 1 the callee's side.
    shards[0].media_packets[0].store(100, Ordering::Relaxed);
    shards[1].media_packets[0].store(50, Ordering::Relaxed);
    shards[1].media_packets[1].store(70, Ordering::Relaxed);
    shards[0].media_bytes[0].store(17_200, Ordering::Relaxed);
    shards[1].media_bytes[1].store(12_040, Ordering::Relaxed);
    shards[0].media_lost[1].store(3, Ordering::Relaxed);
    shards[1].media_lost[1].store(2, Ordering::Relaxed);
    shards[0].media_drop(MediaDrop::NotLatched);
    shards[1].media_drop(MediaDrop::NotLatched);
    shards[1].media_drop(MediaDrop::UnknownPort);
    shards[0].media_sessions.store(4, Ordering::Relaxed);
    shards[1].media_sessions.store(1, Ordering::Relaxed);
    shards[0].media_ports_in_use.store(16, Ordering::Relaxed);
    shards[1].media_ports_in_use.store(4, Ordering::Relaxed);
    shards[0].media_timeouts.store(1, Ordering::Relaxed);
    shards[1].media_timeouts.store(2, Ordering::Relaxed);

    let text = Metrics::new(shards, policy).render().unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = parse_exposition(&text);

    let trunk = |t, d| [("trunk", t), ("direction", d)];
    assert_eq!(
        value(&s, "sbc_calls_attempted_total", &trunk("pbx", "outbound")),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "sbc_calls_answered_total", &trunk("pbx", "outbound")),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "sbc_calls_failed_total", &trunk("pbx", "outbound")),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "sbc_calls_active", &trunk("pbx", "outbound")),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "sbc_calls_attempted_total",
            &trunk("carrier-a", "inbound")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "sbc_calls_attempted_total",
            &trunk("carrier-b", "inbound")
        ),
        Some(0.0)
    );
    // 3 trunks x 2 directions, every one present.
    assert_eq!(s.iter().filter(|x| x.name == "sbc_calls_active").count(), 6);

    assert_eq!(
        value(&s, "sbc_sip_messages_received_total", &[("shard", "0")]),
        Some(10.0)
    );
    assert_eq!(
        value(&s, "sbc_sip_messages_received_total", &[("shard", "1")]),
        Some(32.0)
    );
    assert_eq!(
        value(&s, "sbc_sip_messages_sent_total", &[("shard", "1")]),
        Some(5.0)
    );
    assert_eq!(
        value(
            &s,
            "sbc_sip_retransmissions_received_total",
            &[("shard", "0")]
        ),
        Some(6.0)
    );
    assert_eq!(
        value(&s, "sbc_sip_handoffs_total", &[("shard", "0")]),
        Some(4.0)
    );
    assert_eq!(
        value(&s, "sbc_sip_parse_errors_total", &[("shard", "1")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "sbc_shard_calls_total", &[("shard", "0")]),
        Some(3.0)
    );
    assert_eq!(
        value(&s, "sbc_shard_calls_active", &[("shard", "1")]),
        Some(2.0)
    );

    assert_eq!(
        value(&s, "sbc_final_responses_sent_total", &[("code", "486")]),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "sbc_final_responses_sent_total", &[("code", "200")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "sbc_final_responses_received_total", &[("code", "503")]),
        Some(1.0)
    );
    // Codes never seen are left out.
    assert_eq!(
        value(&s, "sbc_final_responses_sent_total", &[("code", "404")]),
        None
    );
    assert_eq!(
        s.iter()
            .filter(|x| x.name == "sbc_final_responses_sent_total")
            .count(),
        2
    );

    assert_eq!(value(&s, "sbc_failovers_total", &[]), Some(3.0));
    assert_eq!(
        value(
            &s,
            "sbc_requests_rejected_total",
            &[("reason", "unknown_source")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "sbc_requests_rejected_total", &[("reason", "no_route")]),
        Some(0.0)
    );
    assert_eq!(
        s.iter()
            .filter(|x| x.name == "sbc_requests_rejected_total")
            .count(),
        Refusal::LABELS.len()
    );
    assert_eq!(
        value(
            &s,
            "sbc_messages_discarded_total",
            &[("reason", "stray_ack")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.iter()
            .filter(|x| x.name == "sbc_messages_discarded_total")
            .count(),
        Discard::ALL.len()
    );
    assert_eq!(value(&s, "sbc_config_version", &[]), Some(7.0));

    let dir = |d| [("direction", d)];
    let media = [
        ("sbc_media_packets_total", 150.0, 70.0),
        ("sbc_media_bytes_total", 17_200.0, 12_040.0),
        ("sbc_media_lost_packets_total", 0.0, 5.0),
    ];
    for (name, caller, callee) in media {
        assert_eq!(
            value(&s, name, &dir("caller_to_callee")),
            Some(caller),
            "{name}"
        );
        assert_eq!(
            value(&s, name, &dir("callee_to_caller")),
            Some(callee),
            "{name}"
        );
        assert_eq!(s.iter().filter(|x| x.name == name).count(), 2, "{name}");
    }
    assert_eq!(
        value(&s, "sbc_media_dropped_total", &[("reason", "not_latched")]),
        Some(2.0)
    );
    assert_eq!(
        value(
            &s,
            "sbc_media_dropped_total",
            &[("reason", MediaDrop::UnknownPort.label())]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "sbc_media_dropped_total",
            &[("reason", "pool_exhausted")]
        ),
        Some(0.0)
    );
    assert_eq!(
        s.iter()
            .filter(|x| x.name == "sbc_media_dropped_total")
            .count(),
        MediaDrop::ALL.len()
    );
    assert_eq!(
        value(&s, "sbc_media_sessions", &[("shard", "0")]),
        Some(4.0)
    );
    assert_eq!(
        value(&s, "sbc_media_sessions", &[("shard", "1")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "sbc_media_ports_in_use", &[("shard", "0")]),
        Some(16.0)
    );
    assert_eq!(
        value(&s, "sbc_media_ports_in_use", &[("shard", "1")]),
        Some(4.0)
    );
    assert_eq!(value(&s, "sbc_media_timeouts_total", &[]), Some(3.0));
    assert!(
        text.contains("# TYPE sbc_media_sessions gauge")
            && text.contains("# TYPE sbc_media_ports_in_use gauge")
            && text.contains("# TYPE sbc_media_packets counter"),
        "{text}"
    );
}

#[test]
fn trunk_counters_survive_a_recompile_and_follow_the_current_snapshot() {
    let registry = StatsRegistry::new();
    let policy = example_policy(&registry, 1);
    registry.trunk("carrier-b").attempt(Direction::Outbound);
    let metrics = Metrics::new(Vec::new(), Arc::clone(&policy));

    let reloaded = Config::from_toml_str(
        "[sip]\nlisten = [\"127.0.0.1:5060\"]\n[[trunks]]\nname = \"carrier-b\"\nsources = [\"127.0.0.30\"]\naddress = \"127.0.0.30:5060\"\n",
    )
    .unwrap();
    policy.store(Arc::new(reloaded.compile(&registry, 2)));

    let s = parse_exposition(&metrics.render().unwrap());
    let b = [("trunk", "carrier-b"), ("direction", "outbound")];
    assert_eq!(value(&s, "sbc_calls_attempted_total", &b), Some(1.0));
    assert_eq!(
        value(
            &s,
            "sbc_calls_attempted_total",
            &[("trunk", "pbx"), ("direction", "outbound")]
        ),
        None
    );
    assert_eq!(value(&s, "sbc_config_version", &[]), Some(2.0));
}
