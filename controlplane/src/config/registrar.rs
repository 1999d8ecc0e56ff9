//! `[registrar]` and `[[extensions]]`: the registrar's settings and the
//! accounts phones register with (BRIEF §4). Their schema, checks and
//! compiled form, kept together. Secrets are never echoed in errors or
//! `Debug` output.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sbc_core::registrar::{
    Account, AccountSecret, Accounts, Keepalive, KeepaliveMethod, LockoutSettings, Settings,
};
use sbc_core::sip::digest::Algorithm;
use serde::Deserialize;

use super::error::Problem;
use super::path::FieldPath;
use super::values::Network;

/// `[registrar]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registrar {
    /// Digest realm; default "sbc".
    pub realm: Option<Realm>,
    pub min_expires_s: Option<u32>,
    pub max_expires_s: Option<u32>,
    pub default_expires_s: Option<u32>,
    pub nonce_lifetime_s: Option<u32>,
    /// Challenges offered, most preferred first; default MD5 alone
    /// (libre-based clients give up on a second, SHA-256 challenge; many,
    /// SIPp among them, read only the first).
    pub algorithms: Option<Vec<AlgorithmName>>,
    /// `{ failures = 10, window_s = 60, block_s = 600, exempt = [] }`;
    /// `failures = 0` turns the lockout off; `exempt` lists networks never
    /// locked out (the trunks' sources never are).
    pub lockout: Option<Lockout>,
    /// The store (redb) that keeps bindings across restarts, relative to
    /// the configuration file's folder; absent: not kept.
    pub state_file: Option<PathBuf>,
    /// `{ method = "options", interval_s = 30, unreachable_after = 3 }`:
    /// a phone that misses `unreachable_after` OPTIONS in a row is
    /// unreachable until it answers or registers again. `method = "crlf"`
    /// sends a bare CRLF CRLF, which nothing answers (`unreachable_after`
    /// does not apply): over UDP it only holds the NAT open; over a stream
    /// one that cannot be sent marks the phone unreachable, as any message
    /// would. `method = "off"` sends nothing.
    pub keepalive: Option<KeepaliveConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    #[serde(default)]
    pub method: KeepaliveKind,
    #[serde(default = "keepalive_interval_s")]
    pub interval_s: u32,
    #[serde(default = "keepalive_unreachable_after")]
    pub unreachable_after: u32,
}

fn keepalive_interval_s() -> u32 {
    30
}

fn keepalive_unreachable_after() -> u32 {
    3
}

/// `"options"` (the default), `"crlf"` or `"off"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepaliveKind {
    #[default]
    Options,
    Crlf,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockout {
    pub failures: u32,
    #[serde(default = "window_s")]
    pub window_s: u32,
    #[serde(default = "block_s")]
    pub block_s: u32,
    /// Networks never locked out (besides the trunks' sources).
    #[serde(default)]
    pub exempt: Vec<Network>,
}

fn window_s() -> u32 {
    60
}

fn block_s() -> u32 {
    600
}

/// `[[extensions]]`: a number and its accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    pub number: ExtensionNumber,
    pub accounts: Vec<AccountEntry>,
}

/// One account: `{ username = "alice", secret = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    pub username: Username,
    /// The password.
    pub secret: Option<SecretText>,
    /// Or only MD5(username:realm:password) in hex...
    pub ha1: Option<SecretText>,
    /// ...and/or SHA-256(username:realm:password) in hex.
    pub ha1_sha256: Option<SecretText>,
    /// Networks it may register from; absent or empty: anywhere.
    #[serde(default)]
    pub networks: Vec<Network>,
    /// Transports it may register and call over (e.g. `["tls", "wss"]`
    /// to hold it to encrypted signalling); absent or empty: any.
    #[serde(default)]
    pub transports: Vec<super::values::AnyTransport>,
}

/// A digest realm: 1 to 128 printable characters, no quote or backslash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Realm(pub String);

impl TryFrom<String> for Realm {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            && !s.contains(['"', '\\']);
        if ok {
            Ok(Realm(s))
        } else {
            Err(format!(
                "{s:?} is not a valid realm: use 1 to 128 printable ASCII characters, without '\"' or '\\'"
            ))
        }
    }
}

/// An extension number: 1 to 32 of digits, `+`, `*`, `#`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ExtensionNumber(pub String);

impl TryFrom<String> for ExtensionNumber {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'*' | b'#'));
        if ok {
            Ok(ExtensionNumber(s))
        } else {
            Err(format!(
                "{s:?} is not a valid extension number: use 1 to 32 digits, '+', '*' or '#'"
            ))
        }
    }
}

/// A SIP username: 1 to 64 of letters, digits, `_ . - + !  ~ * ' ( )`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Username(pub String);

impl TryFrom<String> for Username {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'_' | b'.' | b'-' | b'+' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
                    )
            });
        if ok {
            Ok(Username(s))
        } else {
            Err(format!(
                "{s:?} is not a valid username: use 1 to 64 letters, digits or _ . - + ! ~ * ' ( )"
            ))
        }
    }
}

/// A password or hash: never shown.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl TryFrom<String> for SecretText {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 256 {
            return Err("must be 1 to 256 characters (the value is not shown)".into());
        }
        Ok(SecretText(s))
    }
}

/// `"MD5"` or `"SHA-256"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AlgorithmName(pub Algorithm);

impl TryFrom<String> for AlgorithmName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Ok(AlgorithmName(Algorithm::Md5)),
            "SHA-256" => Ok(AlgorithmName(Algorithm::Sha256)),
            _ => Err(format!(
                "{s:?} is not a digest algorithm: use \"SHA-256\" or \"MD5\""
            )),
        }
    }
}

pub const DEFAULT_REALM: &str = "sbc";
pub const DEFAULT_MIN_EXPIRES_S: u32 = 60;
pub const DEFAULT_MAX_EXPIRES_S: u32 = 3600;
pub const DEFAULT_EXPIRES_S: u32 = 3600;
pub const DEFAULT_NONCE_LIFETIME_S: u32 = 300;
/// Longest registration accepted in the settings (a week).
pub const MAX_EXPIRES_S: u32 = 7 * 24 * 3600;

type Check = Result<(), Problem>;

fn at(field: FieldPath, message: impl Into<String>) -> Check {
    Err(Problem::new(field, message))
}

/// Checks `[registrar]` and `[[extensions]]` together.
pub fn validate(
    registrar: Option<&Registrar>,
    extensions: &[Extension],
    root: &FieldPath,
) -> Check {
    if let Some(r) = registrar {
        settings(r, &root.key("registrar"))?;
    }
    let mut numbers: HashMap<&ExtensionNumber, usize> = HashMap::new();
    let mut users: HashMap<&Username, (usize, usize)> = HashMap::new();
    for (i, ext) in extensions.iter().enumerate() {
        let path = root.key("extensions").index(i);
        if let Some(first) = numbers.insert(&ext.number, i) {
            return at(
                path.key("number"),
                format!(
                    "duplicate extension {} (first at extensions[{first}])",
                    ext.number.0
                ),
            );
        }
        if ext.accounts.is_empty() {
            return at(path.key("accounts"), "at least one account is required");
        }
        for (j, account) in ext.accounts.iter().enumerate() {
            let apath = path.key("accounts").index(j);
            if let Some((fi, fj)) = users.insert(&account.username, (i, j)) {
                return at(
                    apath.key("username"),
                    format!(
                        "duplicate username \"{}\" (first at extensions[{fi}].accounts[{fj}])",
                        account.username.0
                    ),
                );
            }
            self::account(account, &apath)?;
        }
    }
    Ok(())
}

fn settings(r: &Registrar, path: &FieldPath) -> Check {
    let min = r.min_expires_s.unwrap_or(DEFAULT_MIN_EXPIRES_S);
    let max = r.max_expires_s.unwrap_or(DEFAULT_MAX_EXPIRES_S);
    let default = r.default_expires_s.unwrap_or(DEFAULT_EXPIRES_S.min(max));
    for (key, value) in [
        ("min_expires_s", min),
        ("max_expires_s", max),
        ("default_expires_s", default),
    ] {
        if value == 0 || value > MAX_EXPIRES_S {
            return at(
                path.key(key),
                format!("{value} is out of range: 1 to {MAX_EXPIRES_S} seconds"),
            );
        }
    }
    if min > max {
        return at(
            path.key("min_expires_s"),
            format!("{min} is more than max_expires_s ({max})"),
        );
    }
    if !(min..=max).contains(&default) {
        return at(
            path.key("default_expires_s"),
            format!("{default} must lie between min_expires_s ({min}) and max_expires_s ({max})"),
        );
    }
    if let Some(n) = r.nonce_lifetime_s
        && !(10..=86_400).contains(&n)
    {
        return at(
            path.key("nonce_lifetime_s"),
            format!("{n} is out of range: 10 to 86400 seconds"),
        );
    }
    if let Some(list) = &r.algorithms {
        if list.is_empty() {
            return at(path.key("algorithms"), "at least one algorithm is required");
        }
        for (i, a) in list.iter().enumerate() {
            if list[..i].contains(a) {
                return at(
                    path.key("algorithms").index(i),
                    format!("{} is listed twice", a.0.name()),
                );
            }
        }
    }
    if let Some(k) = r.keepalive {
        let kp = path.key("keepalive");
        if !(5..=3600).contains(&k.interval_s) {
            return at(
                kp.key("interval_s"),
                format!("{} is out of range: 5 to 3600 seconds", k.interval_s),
            );
        }
        if !(1..=100).contains(&k.unreachable_after) {
            return at(
                kp.key("unreachable_after"),
                format!(
                    "{} is out of range: 1 to 100 keepalives",
                    k.unreachable_after
                ),
            );
        }
    }
    if let Some(l) = &r.lockout
        && l.failures > 0
    {
        let lp = path.key("lockout");
        if l.failures > 1000 {
            return at(
                lp.key("failures"),
                format!("{} is too many: at most 1000", l.failures),
            );
        }
        if !(1..=86_400).contains(&l.window_s) {
            return at(
                lp.key("window_s"),
                format!("{} is out of range: 1 to 86400 seconds", l.window_s),
            );
        }
        if !(1..=MAX_EXPIRES_S).contains(&l.block_s) {
            return at(
                lp.key("block_s"),
                format!(
                    "{} is out of range: 1 to {MAX_EXPIRES_S} seconds",
                    l.block_s
                ),
            );
        }
    }
    Ok(())
}

fn account(a: &AccountEntry, path: &FieldPath) -> Check {
    match (&a.secret, &a.ha1, &a.ha1_sha256) {
        (None, None, None) => {
            return at(
                path.clone(),
                "give the account a secret (or its ha1 / ha1_sha256 hash)",
            );
        }
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return at(
                path.key("secret"),
                "give either secret or the ha1 hashes, not both",
            );
        }
        _ => {}
    }
    for (key, value, len) in [("ha1", &a.ha1, 32), ("ha1_sha256", &a.ha1_sha256, 64)] {
        if let Some(v) = value
            && (v.0.len() != len || !v.0.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return at(
                path.key(key),
                format!("must be {len} hexadecimal digits (the value is not shown)"),
            );
        }
    }
    Ok(())
}

/// The registrar is on when `[registrar]`, any extension or any trunk that
/// registers (`trunk_accounts`) is configured.
pub fn compile(
    registrar: Option<&Registrar>,
    extensions: &[Extension],
    trunk_accounts: Vec<Account>,
) -> Accounts {
    if registrar.is_none() && extensions.is_empty() && trunk_accounts.is_empty() {
        return Accounts::default();
    }
    let r = registrar.cloned().unwrap_or_default();
    let max = r.max_expires_s.unwrap_or(DEFAULT_MAX_EXPIRES_S);
    let settings = Settings {
        realm: r
            .realm
            .as_ref()
            .map_or(DEFAULT_REALM, |x| x.0.as_str())
            .into(),
        min_expires: r.min_expires_s.unwrap_or(DEFAULT_MIN_EXPIRES_S),
        max_expires: max,
        default_expires: r.default_expires_s.unwrap_or(DEFAULT_EXPIRES_S.min(max)),
        nonce_lifetime: Duration::from_secs(u64::from(
            r.nonce_lifetime_s.unwrap_or(DEFAULT_NONCE_LIFETIME_S),
        )),
        algorithms: r
            .algorithms
            .as_ref()
            .map_or_else(|| vec![Algorithm::Md5], |l| l.iter().map(|a| a.0).collect()),
        lockout: match &r.lockout {
            None => Some(LockoutSettings::default()),
            Some(l) if l.failures == 0 => None,
            Some(l) => Some(LockoutSettings {
                failures: l.failures,
                window: Duration::from_secs(u64::from(l.window_s)),
                block: Duration::from_secs(u64::from(l.block_s)),
            }),
        },
        lockout_exempt: r
            .lockout
            .as_ref()
            .map(|l| l.exempt.iter().map(|n| n.0).collect())
            .unwrap_or_default(),
        keepalive: match r.keepalive {
            None => Some(Keepalive::default()),
            Some(k) => {
                let method = match k.method {
                    KeepaliveKind::Options => Some(KeepaliveMethod::Options),
                    KeepaliveKind::Crlf => Some(KeepaliveMethod::Crlf),
                    KeepaliveKind::Off => None,
                };
                method.map(|method| Keepalive {
                    method,
                    interval: Duration::from_secs(u64::from(k.interval_s)),
                    unreachable_after: k.unreachable_after,
                })
            }
        },
    };
    let accounts = extensions
        .iter()
        .flat_map(|e| {
            e.accounts.iter().map(|a| Account {
                username: a.username.0.as_str().into(),
                extension: e.number.0.as_str().into(),
                secret: match &a.secret {
                    Some(s) => AccountSecret::Password(s.0.as_bytes().into()),
                    None => AccountSecret::Ha1 {
                        md5: a
                            .ha1
                            .as_ref()
                            .map(|h| h.0.to_ascii_lowercase().into_bytes().into()),
                        sha256: a
                            .ha1_sha256
                            .as_ref()
                            .map(|h| h.0.to_ascii_lowercase().into_bytes().into()),
                    },
                },
                networks: a.networks.iter().map(|n| n.0).collect(),
                transports: a.transports.iter().map(|t| t.0).collect(),
                trunk: None,
            })
        })
        .chain(trunk_accounts)
        .collect();
    Accounts::new(Some(settings), accounts)
}
