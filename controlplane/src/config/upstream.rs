//! A trunk's `register = { ... }`: the SBC registers itself to the trunk
//! (BRIEF §2, the "registration string" of PBX and SBC products), and its
//! credentials answer the trunk's challenges to our INVITEs. Schema,
//! checks and compiled form, kept together; the secret is never echoed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sbc_core::policy::Registration;
use serde::Deserialize;

use super::error::Problem;
use super::path::FieldPath;
use super::registrar::{Realm, SecretText, Username};
use super::values::SocketAddress;

/// `register = { user = "...", secret = "...", expires_s = 600, ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The account: the user part of the address of record.
    pub user: Username,
    pub secret: SecretText,
    /// Where REGISTERs go; default: the trunk's address.
    pub registrar: Option<SocketAddress>,
    /// The host of the address of record and Request-URI; default: the
    /// registrar's IP address.
    pub domain: Option<Domain>,
    /// The name digest answers carry; default: `user`.
    pub auth_user: Option<Username>,
    /// Answer only this realm's challenges; default: any.
    pub realm: Option<Realm>,
    /// The user part of the Contact registered (the provider's calls
    /// arrive for it); default: `user`.
    pub contact_user: Option<Username>,
    /// The expiry asked for; default 600 s.
    pub expires_s: Option<u32>,
    /// The wait after a failure, doubled after each one in a row up to
    /// `retry_max_s`; defaults 10 s and 300 s.
    pub retry_min_s: Option<u32>,
    pub retry_max_s: Option<u32>,
}

/// A host name or IP address: letters, digits, `.`, `-` (and `:[]` for
/// IPv6), 1 to 253 characters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Domain(pub String);

impl TryFrom<String> for Domain {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        if ok {
            Ok(Domain(s))
        } else {
            Err(format!(
                "{s:?} is not a host name or IP address (letters, digits, '.', '-')"
            ))
        }
    }
}

const DEFAULT_EXPIRES_S: u32 = 600;
const DEFAULT_RETRY_MIN_S: u32 = 10;
const DEFAULT_RETRY_MAX_S: u32 = 300;

/// The ranges the numbers must fall in.
pub fn validate(r: &Register, path: &FieldPath) -> Result<(), Problem> {
    for (key, value, (lo, hi)) in [
        ("expires_s", r.expires_s, (10, 86_400)),
        ("retry_min_s", r.retry_min_s, (1, 3600)),
        ("retry_max_s", r.retry_max_s, (1, 86_400)),
    ] {
        if let Some(n) = value
            && !(lo..=hi).contains(&n)
        {
            return Err(Problem::new(
                path.key(key),
                format!("{n} is out of range: must be between {lo} and {hi} seconds"),
            ));
        }
    }
    let min = r.retry_min_s.unwrap_or(DEFAULT_RETRY_MIN_S);
    let max = r.retry_max_s.unwrap_or(DEFAULT_RETRY_MAX_S);
    if max < min {
        return Err(Problem::new(
            path.key("retry_max_s"),
            format!("{max} is below retry_min_s ({min})"),
        ));
    }
    Ok(())
}

/// The contact user a trunk's registration binds (its default is `user`).
pub fn contact_user(r: &Register) -> &str {
    r.contact_user.as_ref().unwrap_or(&r.user).0.as_str()
}

/// The compiled registration of a trunk whose address is `address`.
pub fn compile(r: &Register, address: SocketAddr) -> Arc<Registration> {
    let registrar = r.registrar.map_or(address, |a| a.0);
    let domain = match &r.domain {
        Some(d) => d.0.clone(),
        None => match registrar.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        },
    };
    let secs = |s: Option<u32>, default: u32| Duration::from_secs(u64::from(s.unwrap_or(default)));
    Arc::new(Registration {
        registrar,
        domain: domain.into(),
        user: r.user.0.as_str().into(),
        auth_user: r.auth_user.as_ref().unwrap_or(&r.user).0.as_str().into(),
        secret: r.secret.0.as_str().into(),
        realm: r.realm.as_ref().map(|x| x.0.as_str().into()),
        contact_user: contact_user(r).into(),
        expires: secs(r.expires_s, DEFAULT_EXPIRES_S),
        retry_min: secs(r.retry_min_s, DEFAULT_RETRY_MIN_S),
        retry_max: secs(r.retry_max_s, DEFAULT_RETRY_MAX_S),
    })
}
