//! One test per rejected configuration: each asserts that the message
//! names the field path and the problem.

use super::super::Config;

/// Two trunks, `pbx` and `carrier-a`, and nothing else.
const BASE: &str = r#"
[sip]
listen = ["127.0.0.1:5060"]

[[trunks]]
name = "pbx"
sources = ["127.0.0.10"]
address = "127.0.0.10:5060"

[[trunks]]
name = "carrier-a"
sources = ["127.0.0.20"]
address = "127.0.0.20:5060"
"#;

/// The test certificates (config/examples/certs).
const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/certs");

/// [`BASE`] with a TLS listener and the SBC's certificate, plus `extra`.
fn tls_base(extra: &str) -> String {
    let text = BASE.replace(
        "listen = [\"127.0.0.1:5060\"]",
        &format!(
            "listen = [\"127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n[sip.tls]\ncertificate = \"{CERTS}/localhost.crt\"\nkey = \"{CERTS}/localhost.key\""
        ),
    );
    format!("{text}{extra}")
}

/// [`tls_base`] with carrier-a reached over TLS, its `tls` table holding
/// the CA and `more`.
fn tls_trunk(more: &str) -> String {
    tls_base("").replace(
        "address = \"127.0.0.20:5060\"",
        &format!(
            "address = \"127.0.0.20:5061\"\ntransport = \"tls\"\ntls = {{ ca = \"{CERTS}/ca.crt\", {more} }}"
        ),
    )
}

fn with_base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn error(text: &str) -> String {
    let err = Config::from_toml_str(text).expect_err("accepted an invalid configuration");
    let message = err.to_string();
    assert!(message.starts_with("<inline>: "), "{message}");
    message
}

macro_rules! rejects {
    ($name:ident, $text:expr, $expected:expr) => {
        #[test]
        fn $name() {
            let message = error(&$text);
            assert!(
                message.contains($expected),
                "expected {:?} in {message:?}",
                $expected
            );
        }
    };
}

#[test]
fn base_is_valid() {
    Config::from_toml_str(BASE).unwrap();
}

// --- serde: unknown keys, types, missing keys, syntax ---

rejects!(
    unknown_top_level_key,
    with_base("[sipp]\nlisten = []\n"),
    "<inline>: sipp: unknown field `sipp`"
);
rejects!(
    unknown_trunk_key,
    BASE.replace("name = \"pbx\"", "name = \"pbx\"\npasword = \"x\""),
    "trunks[0].pasword: unknown field `pasword`, expected one of `name`, `sources`, `source_port`, `address`, `transport`, `tls`, `host`, `username`, `password`, `secret`, `media`, `codecs`, `strict_latch`, `probe`, `max_calls`, `max_cps`, `public`, `follow_contact`, `media_share`, `register` (line 7)"
);
rejects!(
    unknown_target_key,
    with_base(
        "[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = [{ trunk = \"pbx\", prio = 1 }]\n"
    ),
    "routes[0].targets[0].prio: unknown field `prio`"
);
rejects!(
    unknown_timer_key,
    with_base("[sip.timers]\nt3_ms = 1\n"),
    "sip.timers.t3_ms: unknown field `t3_ms`"
);
rejects!(
    missing_trunk_address,
    with_base("[[trunks]]\nname = \"x\"\nsources = [\"1.2.3.4\"]\n"),
    "trunks[2].address: required: where the trunk's calls go (or host = \"dynamic\" for a trunk that registers)"
);
rejects!(
    listen_is_not_a_list,
    BASE.replace(
        "listen = [\"127.0.0.1:5060\"]",
        "listen = \"127.0.0.1:5060\""
    ),
    "sip.listen: invalid type: string \"127.0.0.1:5060\", expected a sequence"
);
rejects!(
    negative_priority,
    with_base(
        "[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = [{ trunk = \"pbx\", priority = -1 }]\n"
    ),
    "routes[0].targets[0].priority: invalid value: integer `-1`"
);
rejects!(toml_syntax_error, with_base("[[trunks]\n"), "(line 14)");

// --- single values ---

rejects!(
    trunk_address_not_an_address,
    with_base("[[trunks]]\nname = \"x\"\nsources = [\"1.2.3.4\"]\naddress = \"foo\"\n"),
    "trunks[2].address: \"foo\" is not an IP address and port"
);
rejects!(
    trunk_source_not_a_network,
    BASE.replace("[\"127.0.0.10\"]", "[\"pbx.local\"]"),
    "trunks[0].sources[0]: \"pbx.local\" is not an IP address or CIDR network"
);
rejects!(
    trunk_source_with_host_bits,
    BASE.replace("[\"127.0.0.10\"]", "[\"127.0.0.10/24\"]"),
    "trunks[0].sources[0]: \"127.0.0.10/24\" has host bits set: the network is 127.0.0.0/24"
);
rejects!(
    trunk_name_with_space,
    BASE.replace("name = \"pbx\"", "name = \"my pbx\""),
    "trunks[0].name: \"my pbx\" is not a valid name"
);
rejects!(
    empty_trunk_name,
    BASE.replace("name = \"pbx\"", "name = \"\""),
    "trunks[0].name: \"\" is not a valid name"
);
rejects!(
    advertise_not_a_host,
    BASE.replace(
        "listen = [\"127.0.0.1:5060\"]",
        "listen = [\"127.0.0.1:5060\"]\nadvertise = [\"sbc example\"]"
    ),
    "sip.advertise[0]: \"sbc example\" is not a host or host:port"
);
rejects!(
    metrics_listen_not_an_address,
    with_base("[metrics]\nlisten = \"localhost:9090\"\n"),
    "metrics.listen: \"localhost:9090\" is not an IP address and port"
);
rejects!(
    acl_entry_not_a_network,
    with_base("[acl]\ndeny = [\"10.0.0.0/33\"]\n"),
    "acl.deny[0]: \"10.0.0.0/33\" is not an IP address or CIDR network"
);
rejects!(
    zero_timer,
    with_base("[sip.timers]\nt1_ms = 0\n"),
    "sip.timers.t1_ms: 0 is out of range: must be between 1 and 86400000 milliseconds"
);
rejects!(
    number_pattern_with_space,
    with_base(
        "[[routes]]\nname = \"r\"\nnumbers = [\"+39 06*\"]\ntargets = [{ trunk = \"pbx\" }]\n"
    ),
    "routes[0].numbers[0]: \"+39 06*\" is not a number pattern"
);
rejects!(
    failover_class_2xx,
    with_base(
        "[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = [{ trunk = \"pbx\" }]\nfailover = [\"timeout\", \"2xx\"]\n"
    ),
    "routes[0].failover[1]: \"2xx\" is not \"timeout\", a status code 300-699 or a class \"3xx\" to \"6xx\""
);
rejects!(
    failover_code_out_of_range,
    with_base(
        "[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = [{ trunk = \"pbx\" }]\nfailover = [200]\n"
    ),
    "routes[0].failover[0]: 200 is not \"timeout\""
);

// --- across fields ---

rejects!(
    no_listen_address,
    BASE.replace("[\"127.0.0.1:5060\"]", "[]"),
    "sip.listen: at least one address is required"
);
rejects!(
    duplicate_listen_address,
    BASE.replace(
        "[\"127.0.0.1:5060\"]",
        "[\"127.0.0.1:5060\", \"127.0.0.1:5060\"]"
    ),
    "sip.listen[1]: duplicate address 127.0.0.1:5060 (first at sip.listen[0])"
);
rejects!(
    duplicate_tcp_listen_address,
    BASE.replace(
        "[\"127.0.0.1:5060\"]",
        "[\"tcp:127.0.0.1:5060\", \"127.0.0.1:5060\", \"TCP:127.0.0.1:5060\"]"
    ),
    "sip.listen[2]: duplicate address tcp:127.0.0.1:5060 (first at sip.listen[0])"
);
rejects!(
    wss_listener_without_a_certificate,
    BASE.replace(
        "[\"127.0.0.1:5060\"]",
        "[\"127.0.0.1:5060\", \"ws:127.0.0.1:8080\", \"wss:127.0.0.1:8443\"]"
    ),
    "sip.listen[2]: wss:127.0.0.1:8443 needs the SBC's certificate"
);
rejects!(
    trunk_over_websocket,
    BASE.replace(
        "address = \"127.0.0.10:5060\"",
        "address = \"127.0.0.10:5060\"\ntransport = \"ws\""
    ),
    "trunks are not reached over WS (phones connect with it)"
);
rejects!(
    tls_listener_without_a_certificate,
    BASE.replace(
        "[\"127.0.0.1:5060\"]",
        "[\"127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]"
    ),
    "sip.listen[1]: tls:127.0.0.1:5061 needs the SBC's certificate: add [sip.tls] with certificate and key"
);
rejects!(
    tls_trunk_without_its_ca,
    tls_base("").replace(
        "address = \"127.0.0.20:5060\"",
        "address = \"127.0.0.20:5061\"\ntransport = \"tls\""
    ),
    "trunks[1].transport: \"tls\" needs tls = { ca = \"...\" }"
);
rejects!(
    tls_trunk_certificate_without_key,
    tls_trunk(&format!("certificate = \"{CERTS}/sbc-client.crt\"")),
    "trunks[1].tls.key: certificate needs its key"
);
rejects!(
    tls_trunk_bad_server_name,
    tls_trunk("server_name = \"not a name!\""),
    "trunks[1].tls.server_name: \"not a name!\" is not a DNS name or IP address"
);
rejects!(
    tls_trunk_ca_missing,
    tls_base("").replace(
        "address = \"127.0.0.20:5060\"",
        &format!("address = \"127.0.0.20:5061\"\ntransport = \"tls\"\ntls = {{ ca = \"{CERTS}/nowhere.crt\" }}")
    ),
    "trunks[1].tls.ca: cannot read "
);
rejects!(
    tls_certificate_missing,
    tls_base("").replace("certs/localhost.crt", "certs/nowhere.crt"),
    "sip.tls.certificate: cannot read "
);
rejects!(
    tls_key_that_is_a_certificate,
    tls_base("").replace("certs/localhost.key", "certs/ca.crt"),
    "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"
);
rejects!(
    tls_key_of_another_certificate,
    tls_base("").replace("certs/localhost.key", "certs/itsp.key"),
    "sip.tls: the certificate and key cannot be used"
);
rejects!(
    verify_client_without_tls_listener,
    BASE.replace(
        "address = \"127.0.0.20:5060\"",
        &format!("address = \"127.0.0.20:5060\"\ntls = {{ ca = \"{CERTS}/ca.crt\", verify_client = true }}")
    ),
    "trunks[1].tls.verify_client: needs a tls: listen address"
);
rejects!(
    unknown_listen_transport,
    BASE.replace("[\"127.0.0.1:5060\"]", "[\"sctp:127.0.0.1:5060\"]"),
    "sip.listen[0]: \"sctp:127.0.0.1:5060\": unknown transport \"sctp\""
);
rejects!(
    tcp_trunk_without_tcp_listener,
    BASE.replace(
        "address = \"127.0.0.10:5060\"",
        "address = \"127.0.0.10:5060\"\ntransport = \"tcp\""
    ),
    "trunks[0].transport: \"tcp\" needs a TCP listen address in sip.listen"
);
rejects!(
    unknown_trunk_transport,
    BASE.replace(
        "address = \"127.0.0.10:5060\"",
        "address = \"127.0.0.10:5060\"\ntransport = \"sctp\""
    ),
    "\"sctp\" is not a transport; use \"udp\", \"tcp\" or \"tls\""
);
rejects!(
    listen_port_zero,
    BASE.replace("[\"127.0.0.1:5060\"]", "[\"127.0.0.1:0\"]"),
    "sip.listen[0]: 127.0.0.1:0: port 0 is not allowed"
);
rejects!(
    advertise_count_differs,
    BASE.replace(
        "listen = [\"127.0.0.1:5060\"]",
        "listen = [\"127.0.0.1:5060\"]\nadvertise = [\"a.example\", \"b.example\"]"
    ),
    "sip.advertise: has 2 entries but sip.listen has 1"
);
rejects!(
    wildcard_listen_without_advertise,
    BASE.replace("[\"127.0.0.1:5060\"]", "[\"0.0.0.0:5060\"]"),
    "sip.advertise: required because sip.listen[0] (0.0.0.0:5060) is a wildcard address"
);
rejects!(
    t2_below_t1,
    with_base("[sip.timers]\nt1_ms = 500\nt2_ms = 400\n"),
    "sip.timers.t2_ms: must be at least t1_ms (500)"
);
rejects!(
    t1_above_default_t2,
    with_base("[sip.timers]\nt1_ms = 5000\n"),
    "sip.timers.t1_ms: 5000 is more than t2_ms (4000, the default)"
);
rejects!(
    too_many_shards,
    with_base("[shards]\ncount = 257\n"),
    "shards.count: 257 is too many: at most 256"
);
rejects!(
    duplicate_trunk_name,
    with_base(
        "[[trunks]]\nname = \"pbx\"\nsources = [\"127.0.0.99\"]\naddress = \"127.0.0.99:5060\"\n"
    ),
    "trunks[2].name: duplicate trunk name \"pbx\" (first at trunks[0])"
);
rejects!(
    no_trunk_sources,
    BASE.replace("[\"127.0.0.10\"]", "[]"),
    "trunks[0].sources: at least one source address or network is required"
);
rejects!(
    source_shared_by_two_trunks,
    BASE.replace("[\"127.0.0.20\"]", "[\"127.0.0.20\", \"127.0.0.10/32\"]"),
    "trunks[1].sources[1]: 127.0.0.10/32 is already a source of trunk \"pbx\""
);
rejects!(
    trunk_address_unspecified,
    BASE.replace("\"127.0.0.10:5060\"", "\"0.0.0.0:5060\""),
    "trunks[0].address: 0.0.0.0:5060 is not a unicast address"
);
rejects!(
    trunk_address_port_zero,
    BASE.replace("\"127.0.0.10:5060\"", "\"127.0.0.10:0\""),
    "trunks[0].address: 127.0.0.10:0: port 0 is not allowed"
);
rejects!(
    route_target_unknown_trunk,
    with_base(
        "[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = [{ trunk = \"pbx\" }, { trunk = \"carrier-z\" }]\n"
    ),
    "routes[0].targets[1].trunk: no trunk named \"carrier-z\""
);
rejects!(
    route_target_listed_twice,
    with_base(
        "[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = [{ trunk = \"pbx\" }, { trunk = \"pbx\", priority = 2 }]\n"
    ),
    "routes[0].targets[1].trunk: trunk \"pbx\" is already a target of this route (targets[0])"
);
rejects!(
    route_target_weight_zero,
    with_base(
        "[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = [{ trunk = \"pbx\", weight = 0 }]\n"
    ),
    "routes[0].targets[0].weight: must be greater than 0"
);
rejects!(
    route_without_targets,
    with_base("[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = []\n"),
    "routes[0].targets: at least one target trunk is required"
);
rejects!(
    route_without_numbers,
    with_base("[[routes]]\nname = \"r\"\nnumbers = []\ntargets = [{ trunk = \"pbx\" }]\n"),
    "routes[0].numbers: at least one number pattern is required"
);
rejects!(
    route_from_unknown_trunk,
    with_base(
        "[[routes]]\nname = \"r\"\nfrom = [\"pbx\", \"nope\"]\nnumbers = [\"*\"]\ntargets = [{ trunk = \"pbx\" }]\n"
    ),
    "routes[0].from[1]: no trunk named \"nope\""
);
rejects!(
    duplicate_route_name,
    with_base(
        "[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = [{ trunk = \"pbx\" }]\n\
         [[routes]]\nname = \"r\"\nnumbers = [\"1*\"]\ntargets = [{ trunk = \"pbx\" }]\n"
    ),
    "routes[1].name: duplicate route name \"r\" (first at routes[0])"
);
rejects!(
    did_unknown_trunk,
    with_base("[[dids]]\nnumbers = [\"+39*\"]\ntrunk = \"pbz\"\n"),
    "dids[0].trunk: no trunk named \"pbz\""
);
rejects!(
    did_from_unknown_trunk,
    with_base("[[dids]]\nnumbers = [\"+39*\"]\nfrom = [\"carrier-z\"]\ntrunk = \"pbx\"\n"),
    "dids[0].from[0]: no trunk named \"carrier-z\""
);
rejects!(
    did_without_numbers,
    with_base("[[dids]]\nnumbers = []\ntrunk = \"pbx\"\n"),
    "dids[0].numbers: at least one number pattern is required"
);

#[test]
fn semantic_errors_carry_the_line() {
    let text = with_base(
        "\n[[routes]]\nname = \"r\"\nnumbers = [\"*\"]\ntargets = [{ trunk = \"nope\" }]\n",
    );
    let problem = Config::from_toml_str(&text)
        .unwrap_err()
        .problem()
        .cloned()
        .unwrap();
    assert_eq!(problem.field.to_string(), "routes[0].targets[0].trunk");
    assert_eq!(problem.line, Some(18));
    assert!(error(&text).ends_with("(line 18)"));
}

#[test]
fn batch_wait_too_long_names_the_field() {
    for key in ["batch_wait_us", "media_batch_wait_us"] {
        let text = format!("[sip]\nlisten = [\"127.0.0.1:5060\"]\n[shards]\n{key} = 20000\n");
        let err = crate::config::Config::from_toml_str(&text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("shards.{key}: 20000 is too long")),
            "{err}"
        );
    }
}

#[test]
fn coalescing_windows_default_and_media_never_exceeds_signalling() {
    let parse = |extra: &str| {
        let text = format!("[sip]\nlisten = [\"127.0.0.1:5060\"]\n[shards]\n{extra}");
        crate::config::Config::from_toml_str(&text).unwrap()
    };
    let us = std::time::Duration::from_micros;
    let c = parse("");
    assert_eq!((c.batch_wait(), c.media_batch_wait()), (us(1000), us(1000)));
    let c = parse("batch_wait_us = 500\n");
    assert_eq!((c.batch_wait(), c.media_batch_wait()), (us(500), us(500)));
    let c = parse("batch_wait_us = 3000\nmedia_batch_wait_us = 0\n");
    assert_eq!((c.batch_wait(), c.media_batch_wait()), (us(3000), us(0)));
    // A media window given alone, longer than the default signalling one
    // (valid when that default was 4 ms): signalling waits as long.
    let c = parse("media_batch_wait_us = 2500\n");
    assert_eq!((c.batch_wait(), c.media_batch_wait()), (us(2500), us(2500)));
    let c = parse("media_batch_wait_us = 300\n");
    assert_eq!((c.batch_wait(), c.media_batch_wait()), (us(1000), us(300)));
    let err = crate::config::Config::from_toml_str(
        "[sip]\nlisten = [\"127.0.0.1:5060\"]\n[shards]\nbatch_wait_us = 500\nmedia_batch_wait_us = 800\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("shards.media_batch_wait_us: 800 is longer than shards.batch_wait_us (500)"),
        "{err}"
    );
}

rejects!(
    probe_interval_zero,
    format!("{BASE}probe = {{ interval_s = 0 }}\n"),
    "trunks[1].probe.interval_s: 0 is out of range: must be between 1 and 3600 seconds"
);
rejects!(
    probe_down_after_too_many,
    format!("{BASE}probe = {{ down_after = 1000 }}\n"),
    "trunks[1].probe.down_after: 1000 is out of range: must be between 1 and 100 probes"
);
rejects!(
    probe_unknown_key,
    format!("{BASE}probe = {{ every = 5 }}\n"),
    "trunks[1].probe"
);

#[test]
fn probe_defaults_and_values_reach_the_policy() {
    let text = format!("{BASE}probe = {{ interval_s = 10, up_after = 4 }}\n");
    let config = Config::from_toml_str(&text).unwrap();
    let policy = config.compile(&crate::config::StatsRegistry::new(), 1);
    let probe = policy.trunks[1].probe.unwrap();
    assert_eq!(probe.interval, std::time::Duration::from_secs(10));
    assert_eq!((probe.down_after, probe.up_after), (3, 4));
    let unprobed = Config::from_toml_str(BASE)
        .unwrap()
        .compile(&crate::config::StatsRegistry::new(), 1);
    assert!(unprobed.trunks[1].probe.is_none());
}

rejects!(
    stranger_answers_too_many,
    with_base("[acl]\nstranger_answers_total_per_s = 1000000\n"),
    "acl.stranger_answers_total_per_s: 1000000 is too many: at most 100000 answers a second"
);

#[test]
fn stranger_answers_default_and_set() {
    let compile = |text: &str| {
        Config::from_toml_str(text)
            .unwrap()
            .compile(&crate::config::StatsRegistry::new(), 1)
    };
    let d = compile(&with_base(""));
    assert_eq!(
        (d.acl.strangers.per_source, d.acl.strangers.total),
        (2, 100)
    );
    let silent = compile(&with_base("[acl]\nstranger_answers_per_s = 0\n"));
    assert_eq!(
        (silent.acl.strangers.per_source, silent.acl.strangers.total),
        (0, 100)
    );
}

rejects!(
    max_calls_zero,
    format!("{BASE}max_calls = 0\n"),
    "trunks[1].max_calls: 0 is out of range: must be between 1 and 1000000"
);

#[test]
fn trunk_limits_reach_the_policy() {
    let text = format!("{BASE}max_calls = 30\nmax_cps = 5\n");
    let policy = Config::from_toml_str(&text)
        .unwrap()
        .compile(&crate::config::StatsRegistry::new(), 1);
    assert_eq!(
        (policy.trunks[1].max_calls, policy.trunks[1].max_cps),
        (Some(30), Some(5))
    );
}

rejects!(
    max_call_duration_zero,
    "[sip]\nlisten = [\"127.0.0.1:5060\"]\n[sip.timers]\nmax_call_duration_s = 0\n",
    "sip.timers.max_call_duration_s: 0 is out of range: must be between 1 and 604800 seconds"
);

rejects!(
    sip_max_calls_zero,
    "[sip]\nlisten = [\"127.0.0.1:5060\"]\nmax_calls = 0\n",
    "sip.max_calls: 0 would refuse every call: must be at least 1 (or absent: no limit)"
);

#[test]
fn the_sbc_max_calls_reaches_the_policy_and_its_counter_survives_reloads() {
    let stats = crate::config::StatsRegistry::new();
    let text = "[sip]\nlisten = [\"127.0.0.1:5060\"]\nmax_calls = 500\n";
    let first = Config::from_toml_str(text).unwrap().compile(&stats, 1);
    let second = Config::from_toml_str(text).unwrap().compile(&stats, 2);
    assert_eq!(first.limits.max_calls, Some(500));
    assert!(std::sync::Arc::ptr_eq(
        &first.limits.open,
        &second.limits.open
    ));
}

rejects!(
    min_se_below_the_rfc_floor,
    "[sip]\nlisten = [\"127.0.0.1:5060\"]\n[sip.timers]\nmin_se_s = 30\n",
    "sip.timers.min_se_s: 30 is out of range: must be between 90 and 86400 seconds (RFC 4028)"
);

rejects!(
    session_expires_below_min_se,
    "[sip]\nlisten = [\"127.0.0.1:5060\"]\n[sip.timers]\nmin_se_s = 600\nsession_expires_s = 300\n",
    "sip.timers.session_expires_s: 300 is below min_se_s (600)"
);

#[test]
fn session_timers_reach_the_policy() {
    let text = "[sip]\nlisten = [\"127.0.0.1:5060\"]\n[sip.timers]\nsession_expires_s = 1800\nmin_se_s = 120\n";
    let policy = Config::from_toml_str(text)
        .unwrap()
        .compile(&crate::config::StatsRegistry::new(), 1);
    assert_eq!(
        (
            policy.call_timers.session_expires,
            policy.call_timers.min_se
        ),
        (Some(1800), 120)
    );
    let policy = Config::from_toml_str("[sip]\nlisten = [\"127.0.0.1:5060\"]\n")
        .unwrap()
        .compile(&crate::config::StatsRegistry::new(), 1);
    assert_eq!(
        (
            policy.call_timers.session_expires,
            policy.call_timers.min_se
        ),
        (None, 90)
    );
}

rejects!(
    account_transport_without_listener,
    with_base(
        "\n[registrar]\nrealm = \"sbc.test\"\n\n[[extensions]]\nnumber = \"201\"\naccounts = [{ username = \"alice\", secret = \"s3cret-pass\", transports = [\"tls\"] }]\n"
    ),
    "extensions[0].accounts[0].transports[0]: \"tls\": no TLS listen address in sip.listen"
);
rejects!(
    account_transport_unknown,
    with_base(
        "\n[registrar]\nrealm = \"sbc.test\"\n\n[[extensions]]\nnumber = \"201\"\naccounts = [{ username = \"alice\", secret = \"s3cret-pass\", transports = [\"sctp\"] }]\n"
    ),
    "\"sctp\" is not a transport; use \"udp\", \"tcp\", \"tls\", \"ws\" or \"wss\""
);

/// Two trunks on one address, told apart by source port.
fn tenants(first_port: &str, second_port: &str) -> String {
    format!(
        "{BASE}\n[[trunks]]\nname = \"tenant\"\nsources = [\"127.0.0.10\"]\naddress = \"127.0.0.10:5070\"\n{second_port}"
    )
    .replacen(
        "address = \"127.0.0.10:5060\"\n",
        &format!("address = \"127.0.0.10:5060\"\n{first_port}"),
        1,
    )
}

#[test]
fn trunks_sharing_an_address_are_told_apart_by_source_port() {
    let ok = Config::from_toml_str(&tenants("source_port = 5060\n", "source_port = 5070\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let policy = ok.compile(&crate::config::StatsRegistry::new(), 1);
    let flow = |a: &str| sbc_core::net::Flow::udp(a.parse().unwrap(), sbc_core::net::LocalId(0));
    let trunk = |a: &str| policy.trunk_for_origin(&flow(a)).map(|t| t.0);
    assert_eq!(trunk("127.0.0.10:5060"), Some(0));
    assert_eq!(trunk("127.0.0.10:5070"), Some(2));
    assert_eq!(trunk("127.0.0.10:5999"), None);
    // One trunk for the whole address and one for a port of it.
    Config::from_toml_str(&tenants("", "source_port = 5070\n")).unwrap_or_else(|e| panic!("{e}"));
}

rejects!(
    trunks_sharing_an_address_and_port,
    tenants("source_port = 5070\n", "source_port = 5070\n"),
    "trunks[2].sources[0]: 127.0.0.10/32 is already a source of trunk \"pbx\""
);

rejects!(
    media_share_over_100,
    format!("{BASE}media_share = 150\n"),
    "trunks[1].media_share: 150 is out of range: a percentage between 1 and 100"
);

rejects!(
    source_port_zero,
    format!("{BASE}source_port = 0\n"),
    "trunks[1].source_port: 0 is no port: must be between 1 and 65535"
);
