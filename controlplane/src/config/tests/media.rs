//! The media settings: `[media]`, its defaults when absent, and the
//! trunks' `media` and `codecs`; one test per rejected input.

use std::net::IpAddr;
use std::time::Duration;

use sbc_core::policy::{MediaMode, MediaPolicy, TrunkId};

use super::super::{Config, StatsRegistry, media_summary};
use super::example;

/// Two trunks and no `[media]`.
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

fn with_base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn media_of(text: &str) -> MediaPolicy {
    let config = Config::from_toml_str(text).unwrap_or_else(|e| panic!("{e}"));
    let policy = config.compile(&StatsRegistry::new(), 1);
    let media = policy.media.clone().expect("media is anchored by default");
    assert_eq!(&media, config.media());
    media
}

/// Asserts the text is refused with a message containing `expected`.
fn rejects(text: &str, expected: &str) {
    let message = Config::from_toml_str(text)
        .expect_err("accepted an invalid configuration")
        .to_string();
    assert!(
        message.starts_with("<inline>: ") && message.contains(expected),
        "expected {expected:?} in {message:?}"
    );
}

// --- defaults: anchoring without [media] ---

#[test]
fn without_media_section_media_is_anchored_on_the_first_listen_ip() {
    let media = media_of(BASE);
    assert_eq!(
        media,
        MediaPolicy {
            bind: ip("127.0.0.1"),
            advertise: ip("127.0.0.1"),
            bind_other: None,
            advertise_other: None,
            first_port: 30000,
            last_port: 39999,
            timeout: Duration::from_secs(60),
            forbidden: Vec::new(),
            xdp: None,
        }
    );
    let embedded = Config::embedded_default().unwrap();
    assert_eq!(embedded.media(), &media, "the embedded default is the same");
}

#[test]
fn without_media_section_an_ip_sip_advertise_is_the_media_advertise() {
    let nat = BASE.replace(
        "listen = [\"127.0.0.1:5060\"]",
        "listen = [\"10.0.0.5:5060\", \"[::1]:5060\"]\nadvertise = [\"203.0.113.5:5060\", \"sbc.example.com\"]",
    );
    let media = media_of(&nat);
    assert_eq!(
        (media.bind, media.advertise),
        (ip("10.0.0.5"), ip("203.0.113.5"))
    );

    let wildcard = BASE.replace(
        "listen = [\"127.0.0.1:5060\"]",
        "listen = [\"0.0.0.0:5060\"]\nadvertise = [\"[2001:db8::5]:5060\"]",
    );
    let media = media_of(&wildcard);
    assert_eq!(
        (media.bind, media.advertise),
        (ip("0.0.0.0"), ip("2001:db8::5"))
    );

    let named = BASE.replace(
        "listen = [\"127.0.0.1:5060\"]",
        "listen = [\"10.0.0.5:5060\"]\nadvertise = [\"sbc.example.com:5060\"]",
    );
    let media = media_of(&named);
    assert_eq!(
        (media.bind, media.advertise),
        (ip("10.0.0.5"), ip("10.0.0.5")),
        "a DNS name cannot go into c=: the bind IP is advertised"
    );
}

#[test]
fn without_media_section_a_wildcard_listen_needs_an_ip_to_advertise() {
    rejects(
        &BASE.replace(
            "listen = [\"127.0.0.1:5060\"]",
            "listen = [\"0.0.0.0:5060\"]\nadvertise = [\"sbc.example.com\"]",
        ),
        "media: required here: media is anchored by default, and sip.listen[0] is a wildcard address while sip.advertise[0] (\"sbc.example.com\") is not an IP address",
    );
}

// --- an explicit [media] ---

#[test]
fn media_section_is_compiled_with_its_defaults() {
    let media = media_of(&with_base(
        "[media]\nlisten = \"10.0.0.5\"\nadvertise = \"203.0.113.5\"\nports = \"20000-20999\"\ntimeout_s = 30\n",
    ));
    assert_eq!(
        media,
        MediaPolicy {
            bind: ip("10.0.0.5"),
            advertise: ip("203.0.113.5"),
            bind_other: None,
            advertise_other: None,
            first_port: 20000,
            last_port: 20999,
            timeout: Duration::from_secs(30),
            forbidden: Vec::new(),
            xdp: None,
        }
    );
    let media = media_of(&with_base(
        "[media]\nlisten = \"10.0.0.5\"\nports = \"20000-20999\"\nforbidden_destinations = [\"169.254.0.0/16\", \"10.20.0.0/16\"]\n",
    ));
    assert_eq!(
        media.forbidden,
        vec![
            "169.254.0.0/16".parse::<ipnet::IpNet>().unwrap(),
            "10.20.0.0/16".parse().unwrap()
        ]
    );
    let media = media_of(&with_base(
        "[media]\nlisten = \"::\"\nadvertise = \"2001:db8::5\"\nports = \"1024-65535\"\n",
    ));
    assert_eq!((media.bind, media.advertise), (ip("::"), ip("2001:db8::5")));
    assert_eq!((media.first_port, media.last_port), (1024, 65535));
    assert_eq!(
        media.timeout,
        Duration::from_secs(60),
        "timeout_s defaults to 60"
    );
    let media = media_of(&with_base(
        "[media]\nlisten = \"10.0.0.5\"\nports = \"30000-30001\"\n[shards]\ncount = 1\n",
    ));
    assert_eq!(
        media.advertise,
        ip("10.0.0.5"),
        "advertise defaults to listen"
    );
}

#[test]
fn example_binds_media_to_loopback_and_anchors_every_trunk() {
    let config = example();
    let policy = config.compile(&StatsRegistry::new(), 1);
    let media = policy.media.as_ref().unwrap();
    assert_eq!(
        (media.bind, media.advertise),
        (ip("127.0.0.1"), ip("127.0.0.1"))
    );
    assert_eq!((media.first_port, media.last_port), (30000, 39999));
    assert_eq!(media.timeout, Duration::from_secs(60));
    assert_eq!(policy.trunks.len(), 3);
    for trunk in &policy.trunks {
        assert_eq!(trunk.media, MediaMode::Anchor, "{}", trunk.name);
        assert_eq!(trunk.codecs, None, "{}", trunk.name);
    }
}

#[test]
fn port_range_must_hold_a_pair_per_shard() {
    rejects(
        &with_base(
            "[media]\nlisten = \"127.0.0.1\"\nports = \"30000-30001\"\n[shards]\ncount = 2\n",
        ),
        "media.ports: 30000-30001 holds 1 RTP/RTCP pair; 2 shards need at least 2",
    );
    rejects(
        &with_base(
            "[media]\nlisten = \"127.0.0.1\"\nports = \"30001-30002\"\n[shards]\ncount = 1\n",
        ),
        "media.ports: 30001-30002 holds 0 RTP/RTCP pairs; 1 shard needs at least 1",
    );
    // Two pairs for two shards is enough.
    media_of(&with_base(
        "[media]\nlisten = \"127.0.0.1\"\nports = \"30000-30003\"\n[shards]\ncount = 2\n",
    ));
}

#[test]
fn media_errors_carry_the_line() {
    let text = with_base(
        "[media]\nlisten = \"127.0.0.1\"\nports = \"30000-30001\"\n[shards]\ncount = 2\n",
    );
    let problem = Config::from_toml_str(&text)
        .unwrap_err()
        .problem()
        .cloned()
        .unwrap();
    assert_eq!(problem.field.to_string(), "media.ports");
    assert_eq!(problem.line, Some(16), "the line of `ports`");
}

// --- rejected [media] values ---

#[test]
fn ports_reversed() {
    rejects(
        &with_base("[media]\nlisten = \"127.0.0.1\"\nports = \"40000-30000\"\n"),
        "media.ports: \"40000-30000\" is not a range FIRST-LAST with FIRST < LAST",
    );
}

#[test]
fn ports_not_a_range() {
    for bad in ["30000", "30000-", "a-b", "30000-30000", "30000:39999"] {
        rejects(
            &with_base(&format!(
                "[media]\nlisten = \"127.0.0.1\"\nports = \"{bad}\"\n"
            )),
            &format!("media.ports: \"{bad}\" is not a range FIRST-LAST with FIRST < LAST"),
        );
    }
}

#[test]
fn ports_privileged_or_above_65535() {
    for bad in ["80-2000", "1023-2000", "60000-70000"] {
        rejects(
            &with_base(&format!(
                "[media]\nlisten = \"127.0.0.1\"\nports = \"{bad}\"\n"
            )),
            &format!("media.ports: \"{bad}\" is outside 1024-65535"),
        );
    }
}

#[test]
fn ports_missing() {
    rejects(
        &with_base("[media]\nlisten = \"127.0.0.1\"\n"),
        "media: missing field `ports`",
    );
}

#[test]
fn listen_missing() {
    rejects(
        &with_base("[media]\nports = \"30000-39999\"\n"),
        "media: missing field `listen`",
    );
}

#[test]
fn listen_with_a_port() {
    rejects(
        &with_base("[media]\nlisten = \"127.0.0.1:30000\"\nports = \"30000-39999\"\n"),
        "media.listen: \"127.0.0.1:30000\" is not an IP address",
    );
}

#[test]
fn listen_multicast() {
    rejects(
        &with_base("[media]\nlisten = \"239.1.1.1\"\nports = \"30000-39999\"\n"),
        "media.listen: 239.1.1.1 cannot be bound",
    );
}

#[test]
fn advertise_required_with_a_wildcard_listen() {
    for wildcard in ["0.0.0.0", "::"] {
        rejects(
            &with_base(&format!(
                "[media]\nlisten = \"{wildcard}\"\nports = \"30000-39999\"\n"
            )),
            "media.advertise: required when media.listen is a wildcard address",
        );
    }
}

#[test]
fn advertise_not_unicast() {
    rejects(
        &with_base(
            "[media]\nlisten = \"0.0.0.0\"\nadvertise = \"0.0.0.0\"\nports = \"30000-39999\"\n",
        ),
        "media.advertise: 0.0.0.0 is not a unicast address",
    );
}

#[test]
fn advertise_a_host_name() {
    rejects(
        &with_base(
            "[media]\nlisten = \"10.0.0.5\"\nadvertise = \"sbc.example.com\"\nports = \"30000-39999\"\n",
        ),
        "media.advertise: \"sbc.example.com\" is not an IP address",
    );
}

#[test]
fn timeout_out_of_range() {
    for bad in ["0", "86401", "-5"] {
        rejects(
            &with_base(&format!(
                "[media]\nlisten = \"127.0.0.1\"\nports = \"30000-39999\"\ntimeout_s = {bad}\n"
            )),
            &format!("media.timeout_s: {bad} is out of range: must be between 1 and 86400 seconds"),
        );
    }
}

#[test]
fn strict_latch_reaches_the_trunk() {
    let text = BASE.replacen(
        "address = \"127.0.0.10:5060\"\n",
        "address = \"127.0.0.10:5060\"\nstrict_latch = true\n",
        1,
    );
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let policy = config.compile(&StatsRegistry::new(), 1);
    assert!(policy.trunks[0].strict_latch);
    assert!(!policy.trunks[1].strict_latch, "off by default");
    rejects(
        &BASE.replacen(
            "address = \"127.0.0.10:5060\"\n",
            "address = \"127.0.0.10:5060\"\nstrict_latch = \"yes\"\n",
            1,
        ),
        "trunks[0].strict_latch",
    );
}

#[test]
fn forbidden_destination_not_a_network() {
    rejects(
        &with_base(
            "[media]\nlisten = \"127.0.0.1\"\nports = \"30000-39999\"\nforbidden_destinations = [\"10.0.0.0/33\"]\n",
        ),
        "media.forbidden_destinations[0]",
    );
}

#[test]
fn timeout_not_a_number() {
    rejects(
        &with_base(
            "[media]\nlisten = \"127.0.0.1\"\nports = \"30000-39999\"\ntimeout_s = \"60\"\n",
        ),
        "media.timeout_s: invalid type: string \"60\", expected a whole number of seconds",
    );
}

#[test]
fn unknown_media_key() {
    rejects(
        &with_base("[media]\nlisten = \"127.0.0.1\"\nports = \"30000-39999\"\nrtcp_mux = true\n"),
        "media.rtcp_mux: unknown field `rtcp_mux`, expected one of `listen`, `advertise`, `ports`, `timeout_s`",
    );
}

// --- trunks: media and codecs ---

#[test]
fn trunk_media_and_codecs_reach_the_policy() {
    let text = BASE
        .replace(
            "address = \"127.0.0.10:5060\"",
            "address = \"127.0.0.10:5060\"\nmedia = \"bypass\"\ncodecs = [\"PCMA\", \"Telephone-Event\", \"G722.1\", \"x_y\"]",
        )
        .replace(
            "address = \"127.0.0.20:5060\"",
            "address = \"127.0.0.20:5060\"\nmedia = \"anchor\"",
        );
    let policy = Config::from_toml_str(&text)
        .unwrap()
        .compile(&StatsRegistry::new(), 1);
    let pbx = policy.trunk(TrunkId(0)).unwrap();
    assert_eq!(pbx.media, MediaMode::Bypass);
    assert_eq!(
        pbx.codecs.as_deref(),
        Some(&["pcma", "telephone-event", "g722.1", "x_y"].map(String::from)[..]),
        "stored lowercase"
    );
    assert!(pbx.allows("pcma") && pbx.allows("telephone-event") && pbx.allows("g722.1"));
    assert!(
        !pbx.allows("pcmu") && !pbx.allows("PCMA"),
        "lowercase names only"
    );

    let carrier = policy.trunk(TrunkId(1)).unwrap();
    assert_eq!(carrier.media, MediaMode::Anchor);
    assert_eq!(carrier.codecs, None);
    assert!(
        carrier.allows("pcmu") && carrier.allows("t38"),
        "no list allows every codec"
    );
}

#[test]
fn trunk_media_defaults_to_anchor() {
    let policy = Config::from_toml_str(BASE)
        .unwrap()
        .compile(&StatsRegistry::new(), 1);
    assert!(policy.trunks.iter().all(|t| t.media == MediaMode::Anchor));
}

#[test]
fn trunk_media_unknown_mode() {
    rejects(
        &with_base(
            "[[trunks]]\nname = \"c\"\nsources = [\"127.0.0.30\"]\naddress = \"127.0.0.30:5060\"\nmedia = \"relay\"\n",
        ),
        "trunks[2].media: expected \"anchor\" or \"bypass\", found \"relay\"",
    );
    rejects(
        &BASE.replace(
            "address = \"127.0.0.10:5060\"",
            "address = \"127.0.0.10:5060\"\nmedia = \"Bypass\"",
        ),
        "trunks[0].media: expected \"anchor\" or \"bypass\"",
    );
}

#[test]
fn trunk_media_not_a_string() {
    rejects(
        &BASE.replace(
            "address = \"127.0.0.10:5060\"",
            "address = \"127.0.0.10:5060\"\nmedia = true",
        ),
        "trunks[0].media: invalid type: boolean `true`, expected \"anchor\" or \"bypass\"",
    );
}

#[test]
fn codec_name_with_a_space() {
    rejects(
        &BASE.replace(
            "address = \"127.0.0.10:5060\"",
            "address = \"127.0.0.10:5060\"\ncodecs = [\"PCMU\", \"PC MA\"]",
        ),
        "trunks[0].codecs[1]: \"PC MA\" is not a codec name",
    );
}

#[test]
fn codec_name_empty_or_with_a_slash() {
    for bad in ["", "PCMA/8000"] {
        rejects(
            &BASE.replace(
                "address = \"127.0.0.20:5060\"",
                &format!("address = \"127.0.0.20:5060\"\ncodecs = [\"{bad}\"]"),
            ),
            &format!("trunks[1].codecs[0]: \"{bad}\" is not a codec name"),
        );
    }
}

#[test]
fn codecs_empty() {
    rejects(
        &BASE.replace(
            "address = \"127.0.0.10:5060\"",
            "address = \"127.0.0.10:5060\"\ncodecs = []",
        ),
        "trunks[0].codecs: at least one codec is required; remove the key to allow every codec",
    );
}

#[test]
fn codec_listed_twice_in_any_case() {
    rejects(
        &BASE.replace(
            "address = \"127.0.0.10:5060\"",
            "address = \"127.0.0.10:5060\"\ncodecs = [\"pcma\", \"PCMU\", \"PCMA\"]",
        ),
        "trunks[0].codecs[2]: \"pcma\" is listed twice (first at codecs[0])",
    );
}

// --- [media.xdp] ---

#[test]
fn xdp_section_is_read_with_auto_as_default_mode() {
    use sbc_core::policy::{XdpMode, XdpSettings};
    let media = media_of(&with_base(
        "[media]\nlisten = \"192.0.2.1\"\nports = \"30000-30999\"\n[media.xdp]\ninterface = \"eth0\"\n",
    ));
    assert_eq!(
        media.xdp,
        Some(XdpSettings {
            interface: "eth0".into(),
            mode: XdpMode::Auto
        })
    );
    let media = media_of(&with_base(
        "[media]\nlisten = \"192.0.2.1\"\nports = \"30000-30999\"\n[media.xdp]\ninterface = \"ens1f0\"\nmode = \"native\"\n",
    ));
    assert_eq!(media.xdp.map(|x| x.mode), Some(XdpMode::Native));
    assert_eq!(media_of(BASE).xdp, None, "sockets only unless asked");
}

#[test]
fn xdp_needs_a_specific_ipv4_media_address() {
    for listen in ["0.0.0.0\"\nadvertise = \"192.0.2.1", "2001:db8::1"] {
        rejects(
            &with_base(&format!(
                "[media]\nlisten = \"{listen}\"\nports = \"30000-30999\"\n[media.xdp]\ninterface = \"eth0\"\n"
            )),
            "media.xdp: the AF_XDP path needs media.listen to be a specific IPv4 address",
        );
    }
}

#[test]
fn xdp_interface_and_mode_are_checked() {
    let xdp = |body: &str| {
        with_base(&format!(
            "[media]\nlisten = \"192.0.2.1\"\nports = \"30000-30999\"\n[media.xdp]\n{body}\n"
        ))
    };
    rejects(
        &xdp("interface = \"a-very-long-name0\""),
        "is not a network interface name",
    );
    rejects(
        &xdp("interface = \"eth 0\""),
        "is not a network interface name",
    );
    rejects(&xdp("interface = \"\""), "is not a network interface name");
    rejects(
        &xdp("interface = \"eth0\"\nmode = \"fast\""),
        "expected \"auto\", \"native\" or \"generic\", found \"fast\"",
    );
    rejects(&xdp("mode = \"auto\""), "interface");
}

#[test]
fn a_relay_on_both_families_advertises_one_address_per_family() {
    let media = media_of(&with_base(
        "[media]\nlisten = [\"10.0.0.5\", \"2001:db8::10\"]\nadvertise = [\"2001:db8::5\", \"203.0.113.5\"]\nports = \"30000-39999\"\n",
    ));
    assert_eq!(
        (media.bind, media.bind_other),
        (ip("10.0.0.5"), Some(ip("2001:db8::10")))
    );
    assert_eq!(
        (media.advertise, media.advertise_other),
        (ip("203.0.113.5"), Some(ip("2001:db8::5"))),
        "each advertised address goes with the listen address of its family"
    );
    assert!(media.dual_stack());
    assert_eq!(media.advertise_for(ip("198.51.100.7")), ip("203.0.113.5"));
    assert_eq!(media.advertise_for(ip("2001:db8:1::7")), ip("2001:db8::5"));
    assert_eq!(
        media.advertise_for(ip("::ffff:198.51.100.7")),
        ip("203.0.113.5"),
        "IPv4-mapped peers are IPv4"
    );
    assert_eq!(
        media_summary(&media),
        "listen 10.0.0.5 and 2001:db8::10, advertise 203.0.113.5 and 2001:db8::5, ports 30000-39999, timeout_s 60"
    );
    // Without advertise, each listen address is its own.
    let media = media_of(&with_base(
        "[media]\nlisten = [\"127.0.0.1\", \"::1\"]\nports = \"30000-39999\"\n",
    ));
    assert_eq!(
        (media.advertise, media.advertise_other),
        (ip("127.0.0.1"), Some(ip("::1")))
    );
    // One address in a list is one address; a single-family relay sends
    // every peer its one address.
    let media = media_of(&with_base(
        "[media]\nlisten = [\"10.0.0.5\"]\nadvertise = [\"203.0.113.5\"]\nports = \"30000-39999\"\n",
    ));
    assert_eq!(
        (media.advertise, media.advertise_other),
        (ip("203.0.113.5"), None)
    );
    assert!(!media.dual_stack());
    assert_eq!(media.advertise_for(ip("2001:db8:1::7")), ip("203.0.113.5"));
}

#[test]
fn a_relay_on_both_families_needs_one_address_of_each() {
    let relay = |listen: &str, advertise: &str| {
        with_base(&format!(
            "[media]\nlisten = {listen}\n{advertise}ports = \"30000-39999\"\n"
        ))
    };
    rejects(
        &relay("[\"10.0.0.5\", \"10.0.0.6\"]", ""),
        "media.listen: 10.0.0.5 and 10.0.0.6 are of one family",
    );
    rejects(
        &relay("[\"10.0.0.5\", \"::1\", \"::2\"]", ""),
        "media.listen: 3 addresses given",
    );
    rejects(
        &relay("[\"0.0.0.0\", \"::\"]", ""),
        "media.advertise: required when media.listen is a wildcard address (0.0.0.0)",
    );
    rejects(
        &relay("[\"10.0.0.5\", \"::1\"]", "advertise = \"203.0.113.5\"\n"),
        "media.advertise: media.listen has an IPv4 and an IPv6 address: give one advertised address for each",
    );
    rejects(
        &relay(
            "[\"10.0.0.5\", \"::1\"]",
            "advertise = [\"203.0.113.5\", \"203.0.113.6\"]\n",
        ),
        "media.advertise: 203.0.113.5 and 203.0.113.6 are of one family",
    );
    rejects(
        &relay(
            "\"10.0.0.5\"",
            "advertise = [\"203.0.113.5\", \"2001:db8::5\"]\n",
        ),
        "media.advertise: two addresses (one per family) need two media.listen addresses",
    );
    rejects(
        &relay(
            "[\"10.0.0.5\", \"::1\"]",
            "advertise = [\"203.0.113.5\", \"nope\"]\n",
        ),
        "\"nope\" is not an IP address",
    );
}
