//! Checks that involve more than one value: references between sections,
//! duplicates, lengths, orderings. Single values were parsed already
//! (`values.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;

use ipnet::IpNet;
use sbc_core::transaction::TimerConfig;

use super::error::Problem;
use super::file::{ConfigFile, Did, Route, Sip, Target, Trunk};
use super::media::check_codecs;
use super::path::FieldPath;
use super::values::{Name, Network};

/// Shard ids travel in two hex digits of the Call-IDs the SBC mints.
pub const MAX_SHARDS: usize = 256;

/// Trunks are numbered by a `u16`.
pub const MAX_TRUNKS: usize = u16::MAX as usize;

type Check = Result<(), Problem>;

fn at(field: FieldPath, message: impl Into<String>) -> Check {
    Err(Problem::new(field, message))
}

/// Longest maximum call duration accepted (a week).
pub const MAX_CALL_DURATION_S: u32 = 7 * 24 * 3600;
/// RFC 4028 §4-§5: session intervals are at least 90 s; a day is the most
/// the SBC lets a session go unrefreshed.
pub const SESSION_INTERVAL_S: std::ops::RangeInclusive<u32> = 90..=86_400;

/// Largest stranger answer rate accepted.
pub const MAX_STRANGER_ANSWERS: u32 = 100_000;

pub fn validate(file: &ConfigFile) -> Check {
    let root = FieldPath::root();
    sip(&file.sip, &root.key("sip"))?;
    if file.shards.count > MAX_SHARDS {
        return at(
            root.key("shards").key("count"),
            format!("{} is too many: at most {MAX_SHARDS}", file.shards.count),
        );
    }
    for (key, value) in [
        ("batch_wait_us", file.shards.batch_wait_us),
        ("media_batch_wait_us", file.shards.media_batch_wait_us),
    ] {
        if let Some(us) = value
            && us > crate::config::MAX_BATCH_WAIT_US
        {
            return at(
                root.key("shards").key(key),
                format!(
                    "{us} is too long: at most {} microseconds",
                    crate::config::MAX_BATCH_WAIT_US
                ),
            );
        }
    }
    // Only a signalling window given can be too short for the media one:
    // left out, it is at least the media window.
    if let (Some(signalling), Some(media)) =
        (file.shards.batch_wait_us, file.shards.media_batch_wait_us)
        && media > signalling
    {
        return at(
            root.key("shards").key("media_batch_wait_us"),
            format!(
                "{media} is longer than shards.batch_wait_us ({signalling}): relayed media may \
                 not wait longer than signalling"
            ),
        );
    }
    for (key, value) in [
        ("stranger_answers_per_s", file.acl.stranger_answers_per_s),
        (
            "stranger_answers_total_per_s",
            file.acl.stranger_answers_total_per_s,
        ),
    ] {
        if let Some(n) = value
            && n > MAX_STRANGER_ANSWERS
        {
            return at(
                root.key("acl").key(key),
                format!("{n} is too many: at most {MAX_STRANGER_ANSWERS} answers a second"),
            );
        }
    }
    let trunks = trunks(&file.trunks, &root.key("trunks"))?;
    trunk_transports(file, &root)?;
    tls_settings(file, &root)?;
    let mut route_names: HashMap<&Name, usize> = HashMap::new();
    for (i, route) in file.routes.iter().enumerate() {
        let path = root.key("routes").index(i);
        if let Some(first) = route_names.insert(&route.name, i) {
            return at(
                path.key("name"),
                format!(
                    "duplicate route name \"{}\" (first at routes[{first}])",
                    route.name
                ),
            );
        }
        self::route(route, &trunks, &path)?;
    }
    let extensions: Vec<_> = file.extensions.iter().map(|e| &e.number).collect();
    for (i, did) in file.dids.iter().enumerate() {
        self::did(did, &trunks, &extensions, &root.key("dids").index(i))?;
    }
    super::registrar::validate(file.registrar.as_ref(), &file.extensions, &root)?;
    account_transports(file, &root)?;
    trunk_usernames(file, &root)
}

/// An account's transports each have a listen address.
fn account_transports(file: &super::file::ConfigFile, root: &FieldPath) -> Check {
    for (i, e) in file.extensions.iter().enumerate() {
        for (j, a) in e.accounts.iter().enumerate() {
            for (k, t) in a.transports.iter().enumerate() {
                if !file.sip.listen.iter().any(|l| l.1 == t.0) {
                    return at(
                        root.key("extensions")
                            .index(i)
                            .key("accounts")
                            .index(j)
                            .key("transports")
                            .index(k),
                        format!(
                            "\"{}\": no {} listen address in sip.listen (like \"{}:127.0.0.1:5061\")",
                            t.0.name(),
                            t.0.token(),
                            t.0.name()
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

/// A trunk that registers has a username no account and no other such
/// trunk has.
fn trunk_usernames(file: &super::file::ConfigFile, root: &FieldPath) -> Check {
    // Where each username is first given: an account (extension, index)
    // or a trunk (index, extension None).
    let mut seen: HashMap<&str, (Option<usize>, usize)> = HashMap::new();
    for (i, e) in file.extensions.iter().enumerate() {
        for (j, a) in e.accounts.iter().enumerate() {
            seen.entry(a.username.0.as_str()).or_insert((Some(i), j));
        }
    }
    for (i, t) in file.trunks.iter().enumerate() {
        let Some(user) = &t.username else {
            continue;
        };
        if let Some(first) = seen.insert(user.0.as_str(), (None, i)) {
            let first = match first {
                (Some(e), j) => format!("extensions[{e}].accounts[{j}]"),
                (None, t) => format!("trunks[{t}]"),
            };
            return at(
                root.key("trunks").index(i).key("username"),
                format!("duplicate username \"{}\" (first at {first})", user.0),
            );
        }
    }
    Ok(())
}

fn sip(sip: &Sip, path: &FieldPath) -> Check {
    let listen = path.key("listen");
    if sip.listen.is_empty() {
        return at(listen, "at least one address is required");
    }
    for (i, addr) in sip.listen.iter().enumerate() {
        if addr.0.port() == 0 {
            return at(
                listen.index(i),
                format!(
                    "{}: port 0 is not allowed; give the SIP port (usually 5060)",
                    addr.0
                ),
            );
        }
        if let Some(first) = sip
            .listen
            .iter()
            .position(|a| a == addr)
            .filter(|first| *first < i)
        {
            return at(
                listen.index(i),
                format!("duplicate address {addr} (first at sip.listen[{first}])"),
            );
        }
    }
    match &sip.advertise {
        Some(adv) if adv.len() != sip.listen.len() => {
            return at(
                path.key("advertise"),
                format!(
                    "has {} entries but sip.listen has {}: give one per listen address, in the same order",
                    adv.len(),
                    sip.listen.len()
                ),
            );
        }
        Some(_) => {}
        None => {
            if let Some((i, addr)) = sip
                .listen
                .iter()
                .enumerate()
                .find(|(_, a)| a.0.ip().is_unspecified())
            {
                return at(
                    path.key("advertise"),
                    format!(
                        "required because sip.listen[{i}] ({}) is a wildcard address, which cannot go into Via or Contact",
                        addr.0
                    ),
                );
            }
        }
    }
    if sip.max_calls == Some(0) {
        return at(
            path.key("max_calls"),
            "0 would refuse every call: must be at least 1 (or absent: no limit)",
        );
    }
    let timers = path.key("timers");
    if let Some(s) = sip.timers.max_call_duration_s
        && !(1..=MAX_CALL_DURATION_S).contains(&s)
    {
        return at(
            timers.key("max_call_duration_s"),
            format!("{s} is out of range: must be between 1 and {MAX_CALL_DURATION_S} seconds"),
        );
    }
    for (key, value) in [
        ("min_se_s", sip.timers.min_se_s),
        ("session_expires_s", sip.timers.session_expires_s),
    ] {
        if let Some(s) = value
            && !SESSION_INTERVAL_S.contains(&s)
        {
            return at(
                timers.key(key),
                format!(
                    "{s} is out of range: must be between {} and {} seconds (RFC 4028)",
                    SESSION_INTERVAL_S.start(),
                    SESSION_INTERVAL_S.end()
                ),
            );
        }
    }
    if let (Some(se), Some(min)) = (sip.timers.session_expires_s, sip.timers.min_se_s)
        && se < min
    {
        return at(
            timers.key("session_expires_s"),
            format!("{se} is below min_se_s ({min})"),
        );
    }
    let t1 = sip.timers.t1_ms.map_or(TimerConfig::default().t1, |m| m.0);
    match sip.timers.t2_ms {
        Some(t2) if t2.0 < t1 => at(
            timers.key("t2_ms"),
            format!("must be at least t1_ms ({})", t1.as_millis()),
        ),
        None if TimerConfig::default().t2 < t1 => at(
            timers.key("t1_ms"),
            format!(
                "{} is more than t2_ms ({}, the default): set t2_ms to at least t1_ms",
                t1.as_millis(),
                TimerConfig::default().t2.as_millis()
            ),
        ),
        _ => Ok(()),
    }
}

/// A trunk reached over a transport needs a listener of that transport
/// (its requests leave from it, and its Via names it).
fn trunk_transports(file: &ConfigFile, root: &FieldPath) -> Check {
    for (i, trunk) in file.trunks.iter().enumerate() {
        let wanted = trunk.transport.0;
        if trunk.host.is_none() && !file.sip.listen.iter().any(|l| l.1 == wanted) {
            return at(
                root.key("trunks").index(i).key("transport"),
                format!(
                    "\"{}\" needs a {} listen address in sip.listen (like \"{}:127.0.0.1:5060\")",
                    wanted.name(),
                    wanted.token(),
                    wanted.name()
                ),
            );
        }
    }
    Ok(())
}

/// TLS settings where TLS is used, and only complete ones.
fn tls_settings(file: &ConfigFile, root: &FieldPath) -> Check {
    use sbc_core::net::Transport;
    let tls_listener = file.sip.listen.iter().position(|l| l.1 == Transport::Tls);
    let needs_certificate = file
        .sip
        .listen
        .iter()
        .position(|l| matches!(l.1, Transport::Tls | Transport::Wss));
    if let Some(i) = needs_certificate
        && file.sip.tls.is_none()
    {
        return at(
            root.key("sip").key("listen").index(i),
            format!(
                "{} needs the SBC's certificate: add [sip.tls] with certificate and key",
                file.sip.listen[i]
            ),
        );
    }
    for (i, trunk) in file.trunks.iter().enumerate() {
        let path = root.key("trunks").index(i);
        let Some(tls) = &trunk.tls else {
            if trunk.transport.0 == Transport::Tls && trunk.host.is_none() {
                return at(
                    path.key("transport"),
                    "\"tls\" needs tls = { ca = \"...\" }: the authority the trunk's certificate must chain to",
                );
            }
            continue;
        };
        let path = path.key("tls");
        match (&tls.certificate, &tls.key) {
            (Some(_), None) => return at(path.key("key"), "certificate needs its key"),
            (None, Some(_)) => return at(path.key("certificate"), "key needs its certificate"),
            _ => {}
        }
        if let Some(name) = &tls.server_name
            && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            return at(
                path.key("server_name"),
                format!("{name:?} is not a DNS name or IP address"),
            );
        }
        if tls.verify_client {
            if trunk.sources.is_empty() {
                return at(
                    path.key("verify_client"),
                    "needs the trunk's sources (the addresses its connections come from)",
                );
            }
            if tls_listener.is_none() {
                return at(
                    path.key("verify_client"),
                    "needs a tls: listen address in sip.listen for the trunk to connect to",
                );
            }
        }
    }
    Ok(())
}

/// Checks the trunks and returns their ids by name.
fn trunks<'a>(trunks: &'a [Trunk], path: &FieldPath) -> Result<HashMap<&'a Name, usize>, Problem> {
    if trunks.len() > MAX_TRUNKS {
        return Err(Problem::new(
            path.clone(),
            format!("{} trunks are too many: at most {MAX_TRUNKS}", trunks.len()),
        ));
    }
    let mut names: HashMap<&Name, usize> = HashMap::new();
    // A network may be shared by trunks told apart by their source port.
    let mut sources: HashMap<(IpNet, Option<u16>), usize> = HashMap::new();
    for (i, trunk) in trunks.iter().enumerate() {
        let path = path.index(i);
        if let Some(first) = names.insert(&trunk.name, i) {
            return Err(Problem::new(
                path.key("name"),
                format!(
                    "duplicate trunk name \"{}\" (first at trunks[{first}])",
                    trunk.name
                ),
            ));
        }
        if trunk.name.0 == PHONES {
            return Err(Problem::new(
                path.key("name"),
                "\"phones\" is reserved: routes name the registered phones with it",
            ));
        }
        if trunk.host.is_some() {
            dynamic_trunk(trunk, &path)?;
            continue;
        }
        let credentials = [
            ("username", trunk.username.is_some()),
            ("secret", trunk.secret.is_some()),
        ];
        if let Some((key, _)) = credentials.iter().find(|(_, given)| *given) {
            return Err(Problem::new(
                path.key(key),
                "only a trunk with host = \"dynamic\" has credentials (the SBC's own registration goes in register = { ... })",
            ));
        }
        if trunk.sources.is_empty() {
            return Err(Problem::new(
                path.key("sources"),
                "at least one source address or network is required",
            ));
        }
        if trunk.source_port == Some(0) {
            return Err(Problem::new(
                path.key("source_port"),
                "0 is no port: must be between 1 and 65535",
            ));
        }
        for (j, Network(net)) in trunk.sources.iter().enumerate() {
            if let Some(owner) = sources.insert((*net, trunk.source_port), i) {
                // Two registrations with one provider share its addresses:
                // the Contact user each registered tells their calls apart.
                fn contact(t: &super::file::Trunk) -> Option<&str> {
                    t.register.as_ref().map(super::upstream::contact_user)
                }
                let shared = trunks.get(owner).is_some_and(|o| {
                    o.name != trunk.name
                        && matches!((contact(o), contact(trunk)), (Some(a), Some(b)) if a != b)
                });
                if shared {
                    continue;
                }
                let owner = trunks.get(owner).map_or("", |t| t.name.0.as_str());
                let message = if owner == trunk.name.0 {
                    format!("{net} is listed twice")
                } else {
                    format!("{net} is already a source of trunk \"{owner}\"")
                };
                return Err(Problem::new(path.key("sources").index(j), message));
            }
        }
        let Some(address) = trunk.address else {
            return Err(Problem::new(
                path.key("address"),
                "required: where the trunk's calls go (or host = \"dynamic\" for a trunk that registers)",
            ));
        };
        if let Some(message) = not_unicast(address.0) {
            return Err(Problem::new(path.key("address"), message));
        }
        if let Some(codecs) = &trunk.codecs {
            check_codecs(codecs, &path.key("codecs"))?;
        }
        if let Some(probe) = &trunk.probe {
            check_probe(probe, &path.key("probe"))?;
        }
        if let Some(register) = &trunk.register {
            super::upstream::validate(register, &path.key("register"))?;
        }
        check_limits(trunk, &path)?;
    }
    Ok(names)
}

/// A trunk with `host = "dynamic"`: credentials, and nothing that needs a
/// fixed address.
fn dynamic_trunk(trunk: &Trunk, path: &FieldPath) -> Result<(), Problem> {
    if trunk.username.is_none() {
        return Err(Problem::new(
            path.key("username"),
            "required with host = \"dynamic\": the account the trunk registers with",
        ));
    }
    if trunk.secret.is_none() {
        return Err(Problem::new(
            path.key("secret"),
            "required with host = \"dynamic\" (the value is never shown)",
        ));
    }
    let fixed = [
        ("sources", !trunk.sources.is_empty()),
        ("source_port", trunk.source_port.is_some()),
        ("address", trunk.address.is_some()),
        ("probe", trunk.probe.is_some()),
        ("register", trunk.register.is_some()),
    ];
    if let Some((key, _)) = fixed.iter().find(|(_, given)| *given) {
        return Err(Problem::new(
            path.key(key),
            "not with host = \"dynamic\": the trunk is reached where it registered from",
        ));
    }
    if let Some(codecs) = &trunk.codecs {
        check_codecs(codecs, &path.key("codecs"))?;
    }
    check_limits(trunk, path)
}

/// `max_calls`, `max_cps` and `media_share` are in range.
fn check_limits(trunk: &Trunk, path: &FieldPath) -> Result<(), Problem> {
    if let Some(pct) = trunk.media_share
        && !(1..=100).contains(&pct)
    {
        return Err(Problem::new(
            path.key("media_share"),
            format!("{pct} is out of range: a percentage between 1 and 100"),
        ));
    }
    for (key, value) in [("max_calls", trunk.max_calls), ("max_cps", trunk.max_cps)] {
        if let Some(n) = value
            && !(1..=1_000_000).contains(&n)
        {
            return Err(Problem::new(
                path.key(key),
                format!("{n} is out of range: must be between 1 and 1000000"),
            ));
        }
    }
    Ok(())
}

/// Longest probe interval accepted, in seconds.
pub const MAX_PROBE_INTERVAL_S: u32 = 3600;

/// A trunk's probe settings are in range.
fn check_probe(probe: &super::file::Probe, path: &FieldPath) -> Result<(), Problem> {
    if !(1..=MAX_PROBE_INTERVAL_S).contains(&probe.interval_s) {
        return Err(Problem::new(
            path.key("interval_s"),
            format!(
                "{} is out of range: must be between 1 and {MAX_PROBE_INTERVAL_S} seconds",
                probe.interval_s
            ),
        ));
    }
    for (key, n) in [
        ("down_after", probe.down_after),
        ("up_after", probe.up_after),
    ] {
        if !(1..=100).contains(&n) {
            return Err(Problem::new(
                path.key(key),
                format!("{n} is out of range: must be between 1 and 100 probes"),
            ));
        }
    }
    Ok(())
}

/// Why a trunk address cannot receive requests, if it cannot.
fn not_unicast(addr: SocketAddr) -> Option<String> {
    let ip = addr.ip();
    if ip.is_unspecified() || sbc_core::net::is_multicast_or_broadcast(ip) {
        Some(format!("{addr} is not a unicast address"))
    } else if addr.port() == 0 {
        Some(format!(
            "{addr}: port 0 is not allowed; give the trunk's SIP port (usually 5060)"
        ))
    } else {
        None
    }
}

/// The name a route's `from` gives the registered phones (BRIEF §4): no
/// trunk may take it.
pub const PHONES: &str = "phones";

fn from_trunks(from: &[Name], trunks: &HashMap<&Name, usize>, path: &FieldPath) -> Check {
    match from
        .iter()
        .position(|name| name.0 != PHONES && !trunks.contains_key(name))
    {
        Some(j) => at(
            path.index(j),
            format!(
                "no trunk named \"{}\"",
                from.get(j).map_or("", |n| n.0.as_str())
            ),
        ),
        None => Ok(()),
    }
}

fn route(route: &Route, trunks: &HashMap<&Name, usize>, path: &FieldPath) -> Check {
    from_trunks(&route.from, trunks, &path.key("from"))?;
    if route.numbers.is_empty() {
        return at(
            path.key("numbers"),
            "at least one number pattern is required (\"*\" matches any number)",
        );
    }
    if route.targets.is_empty() {
        return at(path.key("targets"), "at least one target trunk is required");
    }
    for (j, Target { trunk, weight, .. }) in route.targets.iter().enumerate() {
        let path = path.key("targets").index(j);
        if !trunks.contains_key(trunk) {
            return at(path.key("trunk"), format!("no trunk named \"{trunk}\""));
        }
        if let Some(first) = route
            .targets
            .iter()
            .position(|t| t.trunk == *trunk)
            .filter(|first| *first < j)
        {
            return at(
                path.key("trunk"),
                format!("trunk \"{trunk}\" is already a target of this route (targets[{first}])"),
            );
        }
        if *weight == 0 {
            return at(path.key("weight"), "must be greater than 0");
        }
    }
    Ok(())
}

fn did(
    did: &Did,
    trunks: &HashMap<&Name, usize>,
    extensions: &[&super::registrar::ExtensionNumber],
    path: &FieldPath,
) -> Check {
    if did.numbers.is_empty() {
        return at(
            path.key("numbers"),
            "at least one number pattern is required (like \"+3906*\")",
        );
    }
    from_trunks(&did.from, trunks, &path.key("from"))?;
    match (&did.trunk, &did.extension) {
        (Some(trunk), None) if !trunks.contains_key(trunk) => {
            at(path.key("trunk"), format!("no trunk named \"{trunk}\""))
        }
        (Some(_), None) => Ok(()),
        (None, Some(number)) if !extensions.contains(&number) => at(
            path.key("extension"),
            format!("no extension {} (see [[extensions]])", number.0),
        ),
        (None, Some(_)) => Ok(()),
        (Some(_), Some(_)) => at(
            path.key("extension"),
            "give either trunk or extension, not both",
        ),
        (None, None) => at(path.clone(), "give the destination: trunk or extension"),
    }
}
