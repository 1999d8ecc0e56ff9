//! `[registrar]` and `[[extensions]]`: what is rejected (naming the field,
//! never showing a secret) and what reaches the policy.

use super::super::{Config, StatsRegistry};
use sbc_core::registrar::{Keepalive, KeepaliveMethod};
use sbc_core::sip::digest::Algorithm;

const BASE: &str = "[sip]\nlisten = [\"127.0.0.1:5060\"]\n";

fn error(extra: &str) -> String {
    let text = format!("{BASE}{extra}");
    let err = Config::from_toml_str(&text).expect_err("accepted an invalid configuration");
    err.to_string()
}

fn ext(accounts: &str) -> String {
    format!("[[extensions]]\nnumber = \"201\"\naccounts = [{accounts}]\n")
}

#[test]
fn rejected_settings_name_the_field() {
    for (extra, want) in [
        (
            "[registrar]\nmin_expires_s = 600\nmax_expires_s = 60\n",
            "registrar.min_expires_s: 600 is more than max_expires_s (60)",
        ),
        (
            "[registrar]\ndefault_expires_s = 10\n",
            "registrar.default_expires_s: 10 must lie between min_expires_s (60) and max_expires_s (3600)",
        ),
        (
            "[registrar]\nmax_expires_s = 0\n",
            "registrar.max_expires_s: 0 is out of range",
        ),
        (
            "[registrar]\nalgorithms = [\"SHA-512\"]\n",
            "registrar.algorithms[0]: \"SHA-512\" is not a digest algorithm",
        ),
        (
            "[registrar]\nalgorithms = [\"MD5\", \"md5\"]\n",
            "registrar.algorithms[1]: MD5 is listed twice",
        ),
        (
            "[registrar]\nalgorithms = []\n",
            "registrar.algorithms: at least one",
        ),
        (
            "[registrar]\nrealm = \"a\\\"b\"\n",
            "registrar.realm: \"a\\\"b\" is not a valid realm",
        ),
        (
            "[registrar]\nnonce_lifetime_s = 1\n",
            "registrar.nonce_lifetime_s: 1 is out of range",
        ),
        (
            "[registrar]\nlockout = { failures = 5, window_s = 0 }\n",
            "registrar.lockout.window_s: 0 is out of range",
        ),
        (
            "[registrar]\nlockout = { failures = 5, exempt = [\"10.0.0.0/33\"] }\n",
            "registrar.lockout.exempt[0]",
        ),
        (
            "[registrar]\nkeepalive = { interval_s = 1 }\n",
            "registrar.keepalive.interval_s: 1 is out of range: 5 to 3600 seconds",
        ),
        (
            "[registrar]\nkeepalive = { unreachable_after = 0 }\n",
            "registrar.keepalive.unreachable_after: 0 is out of range",
        ),
        (
            "[registrar]\nkeepalive = { method = \"stun\" }\n",
            "registrar.keepalive.method: unknown variant `stun`",
        ),
        (
            "[registrar]\nrealms = \"x\"\n",
            "registrar.realms: unknown field `realms`",
        ),
    ] {
        let message = error(extra);
        assert!(message.contains(want), "expected {want:?} in {message:?}");
    }
}

#[test]
fn rejected_extensions_name_the_field_and_never_show_secrets() {
    let dup_number = format!(
        "{}{}",
        ext("{ username = \"a\", secret = \"s1\" }"),
        ext("{ username = \"b\", secret = \"s2\" }")
    );
    let dup_user = format!(
        "{}[[extensions]]\nnumber = \"202\"\naccounts = [{{ username = \"a\", secret = \"s2\" }}]\n",
        ext("{ username = \"a\", secret = \"s1\" }")
    );
    for (extra, want) in [
        (
            dup_number,
            "extensions[1].number: duplicate extension 201 (first at extensions[0])",
        ),
        (
            dup_user,
            "extensions[1].accounts[0].username: duplicate username \"a\" (first at extensions[0].accounts[0])",
        ),
        (
            ext(""),
            "extensions[0].accounts: at least one account is required",
        ),
        (
            ext("{ username = \"a\" }"),
            "extensions[0].accounts[0]: give the account a secret",
        ),
        (
            ext(
                "{ username = \"a\", secret = \"hunter2\", ha1 = \"0123456789abcdef0123456789abcdef\" }",
            ),
            "extensions[0].accounts[0].secret: give either secret or the ha1 hashes, not both",
        ),
        (
            ext("{ username = \"a\", ha1 = \"hunter2-not-hex\" }"),
            "extensions[0].accounts[0].ha1: must be 32 hexadecimal digits (the value is not shown)",
        ),
        (
            ext("{ username = \"a\", secret = \"\" }"),
            "extensions[0].accounts[0].secret: must be 1 to 256 characters (the value is not shown)",
        ),
        (
            ext("{ username = \"a b\", secret = \"x\" }"),
            "extensions[0].accounts[0].username: \"a b\" is not a valid username",
        ),
        (
            "[[extensions]]\nnumber = \"20a\"\naccounts = [{ username = \"a\", secret = \"x\" }]\n"
                .to_owned(),
            "extensions[0].number: \"20a\" is not a valid extension number",
        ),
        (
            ext("{ username = \"a\", secret = \"x\", networks = [\"10.0.0.1/8\"] }"),
            "extensions[0].accounts[0].networks[0]: \"10.0.0.1/8\" has host bits set",
        ),
    ] {
        let message = error(&extra);
        assert!(message.contains(want), "expected {want:?} in {message:?}");
        assert!(!message.contains("hunter2"), "a secret in {message:?}");
    }
}

#[test]
fn accounts_and_defaults_reach_the_policy() {
    let text = format!(
        "{BASE}{}[[extensions]]\nnumber = \"202\"\naccounts = [{{ username = \"bob\", ha1 = \"0123456789ABCDEF0123456789abcdef\", networks = [\"192.0.2.0/24\"] }}]\n",
        ext(
            "{ username = \"alice\", secret = \"s\" }, { username = \"alice-soft\", secret = \"t\" }"
        )
    );
    let config = Config::from_toml_str(&text).unwrap();
    let policy = config.compile(&StatsRegistry::new(), 1);
    let settings = policy
        .accounts
        .settings
        .as_ref()
        .expect("on with extensions");
    assert_eq!(&*settings.realm, "sbc");
    assert_eq!(
        (
            settings.min_expires,
            settings.max_expires,
            settings.default_expires
        ),
        (60, 3600, 3600)
    );
    assert_eq!(settings.algorithms, [Algorithm::Md5]);
    assert_eq!(settings.lockout.map(|l| l.failures), Some(10));
    assert_eq!(settings.keepalive, Some(Keepalive::default()));
    assert_eq!(
        settings
            .keepalive
            .map(|k| (k.method, k.interval.as_secs(), k.unreachable_after)),
        Some((KeepaliveMethod::Options, 30, 3))
    );
    let names: Vec<&str> = policy
        .accounts
        .extension("201")
        .map(|a| &*a.username)
        .collect();
    assert_eq!(names, ["alice", "alice-soft"]);
    let bob = policy.accounts.account(b"bob").unwrap();
    assert_eq!(&*bob.extension, "202");
    assert!(bob.may_register_from("192.0.2.9".parse().unwrap()));
    assert!(!bob.may_register_from("198.51.100.9".parse().unwrap()));
    // The HA1 is kept lowercase; Debug never shows it.
    assert!(!format!("{:?}", bob.secret).contains("0123"));
    assert!(!format!("{config:?}").contains("0123456789ABCDEF"));
    // No extensions and no [registrar]: no registrar.
    let off = Config::from_toml_str(BASE)
        .unwrap()
        .compile(&StatsRegistry::new(), 1);
    assert!(off.accounts.settings.is_none());
    // Lockout off, algorithms and realm set.
    let text = format!(
        "{BASE}[registrar]\nrealm = \"voice.example\"\nalgorithms = [\"SHA-256\"]\nlockout = {{ failures = 0 }}\nstate_file = \"/var/lib/sbc/registrations.redb\"\n"
    );
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(
        config.registrar_state_file(),
        Some(std::path::Path::new("/var/lib/sbc/registrations.redb"))
    );
    // A relative store is in the configuration file's folder, an absolute
    // one where it says.
    let relative = format!("{BASE}[registrar]\nstate_file = \"state/registrations.redb\"\n");
    let at = |base: &str, text: &str| {
        Config::parse_at("sbc.toml", text, std::path::Path::new(base))
            .unwrap()
            .registrar_state_file()
            .map(std::path::Path::to_path_buf)
    };
    assert_eq!(
        at("/etc/sbc", &relative),
        Some("/etc/sbc/state/registrations.redb".into())
    );
    assert_eq!(
        at("/etc/sbc", &text),
        Some("/var/lib/sbc/registrations.redb".into())
    );
    let policy = config.compile(&StatsRegistry::new(), 1);
    let settings = policy.accounts.settings.as_ref().unwrap();
    assert_eq!(&*settings.realm, "voice.example");
    assert_eq!(settings.algorithms, [Algorithm::Sha256]);
    assert!(settings.lockout.is_none());
    assert!(settings.lockout_exempt.is_empty());
    // Networks exempt from the lockout.
    let text = format!(
        "{BASE}[registrar]\nlockout = {{ failures = 5, exempt = [\"192.168.0.0/16\", \"2001:db8::/32\"] }}\n"
    );
    let policy = Config::from_toml_str(&text)
        .unwrap()
        .compile(&StatsRegistry::new(), 1);
    let settings = policy.accounts.settings.as_ref().unwrap();
    assert_eq!(settings.lockout.map(|l| l.failures), Some(5));
    assert!(settings.exempt_from_lockout("192.168.7.9".parse().unwrap()));
    assert!(settings.exempt_from_lockout("2001:db8::1".parse().unwrap()));
    assert!(!settings.exempt_from_lockout("203.0.113.5".parse().unwrap()));
    // Keepalives: CRLF every 20 s, or none.
    for (value, want) in [
        (
            "{ method = \"crlf\", interval_s = 20 }",
            Some((KeepaliveMethod::Crlf, 20)),
        ),
        ("{ method = \"off\" }", None),
    ] {
        let text = format!("{BASE}[registrar]\nkeepalive = {value}\n");
        let policy = Config::from_toml_str(&text)
            .unwrap()
            .compile(&StatsRegistry::new(), 1);
        let keepalive = policy.accounts.settings.as_ref().unwrap().keepalive;
        assert_eq!(keepalive.map(|k| (k.method, k.interval.as_secs())), want);
    }
}

#[test]
fn a_did_may_go_to_an_extension() {
    let trunk =
        "[[trunks]]\nname = \"carrier\"\nsources = [\"192.0.2.1\"]\naddress = \"192.0.2.1:5060\"\n";
    let did = |dest: &str| {
        format!(
            "{trunk}{}[[dids]]\nnumbers = [\"+3902999\"]\n{dest}\n",
            ext("{ username = \"a\", secret = \"s\" }")
        )
    };
    let policy = Config::from_toml_str(&format!("{BASE}{}", did("extension = \"201\"")))
        .unwrap()
        .compile(&StatsRegistry::new(), 1);
    let route = policy.routes.last().unwrap();
    assert_eq!(route.extension.as_deref(), Some("201"));
    assert!(route.targets.is_empty());
    for (dest, want) in [
        (
            "extension = \"299\"",
            "dids[0].extension: no extension 299 (see [[extensions]])",
        ),
        (
            "extension = \"201\"\ntrunk = \"carrier\"",
            "dids[0].extension: give either trunk or extension, not both",
        ),
        ("", "dids[0]: give the destination: trunk or extension"),
    ] {
        let message = error(&did(dest));
        assert!(message.contains(want), "expected {want:?} in {message:?}");
    }
}
