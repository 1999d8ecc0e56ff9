//! The registrar's sans-IO parts (RFC 3261 §10, BRIEF §4): the accounts
//! phones register with, the nonces of their digest challenges, the
//! location bindings they leave, and the lockout of sources that keep
//! failing authentication.
//!
//! - [`Accounts`] is part of the configuration snapshot: extensions, their
//!   accounts and secrets, and the registrar's settings.
//! - [`Location`] holds bindings: on each shard, those of the extensions
//!   it owns (a keyed hash of the extension number names the owner,
//!   `b2bua/lookup/`); in the control plane, all of them, as its store
//!   and views see them. A shard that accepts a REGISTER keeps the
//!   binding and reports the change as an event ([`Change`]); the control
//!   plane persists it, and at start hands the stored bindings to the
//!   shards, each keeping those it owns.
//! - [`NonceBook`] is a shard's own state; [`Lockout`] is shared by the
//!   shards (atomics).
//!
//! The engine's side (answering REGISTER) is `b2bua/register.rs`.

mod location;
mod lockout;
mod nonce;

pub use location::{Binding, Change, Location};
pub use lockout::Lockout;
pub use nonce::{NonceBook, NonceCheck};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::sip::digest::{Algorithm, Secret};

/// What became of a REGISTER (the `result` label of
/// `sbc_registrar_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterResult {
    /// 401 with a fresh nonce (no or unusable credentials).
    Challenged = 0,
    /// 401 `stale=true`: right credentials, old (or replayed) nonce.
    Stale,
    /// 200: bound or refreshed.
    Registered,
    /// 200: `Expires: 0` or `*`.
    Unregistered,
    /// 200 to a REGISTER without Contact (a query).
    Queried,
    /// Challenged again (401/407): wrong credentials, an unknown user, a
    /// network the account may not use; or 403: an address of record it
    /// may not use. Why: [`AuthFailure`].
    AuthFailed,
    /// 423: shorter than `min_expires`.
    TooBrief,
    /// 500: an older CSeq of the same Call-ID (RFC 3261 §10.3 step 7).
    OutOfOrder,
    /// 400: a broken Contact, Expires or `*`, or a digest `uri` that is
    /// not the Request-URI.
    BadRequest,
    /// Dropped: the source is locked out after failing too often.
    Blocked,
    /// Dropped: a source that matches no trunk was answered too often.
    Limited,
}

/// Why credentials were refused: the `reason` label of
/// `sbc_auth_failures_total`, for the operator only (the client is
/// answered alike whatever the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No such account.
    UnknownUser = 0,
    /// The account exists; the answer does not match its secret.
    WrongPassword,
    /// Right credentials from outside the account's `networks`.
    Network,
    /// Right credentials for an address of record that is not the
    /// account's (its username or extension).
    AddressOfRecord,
    /// Right credentials over a transport the account may not use (an
    /// account held to TLS or WSS).
    Transport,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 5] = [
        AuthFailure::UnknownUser,
        AuthFailure::WrongPassword,
        AuthFailure::Network,
        AuthFailure::AddressOfRecord,
        AuthFailure::Transport,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::WrongPassword => "wrong_password",
            AuthFailure::Network => "network",
            AuthFailure::AddressOfRecord => "address_of_record",
            AuthFailure::Transport => "transport",
        }
    }
}

impl RegisterResult {
    pub const ALL: [RegisterResult; 11] = [
        RegisterResult::Challenged,
        RegisterResult::Stale,
        RegisterResult::Registered,
        RegisterResult::Unregistered,
        RegisterResult::Queried,
        RegisterResult::AuthFailed,
        RegisterResult::TooBrief,
        RegisterResult::OutOfOrder,
        RegisterResult::BadRequest,
        RegisterResult::Blocked,
        RegisterResult::Limited,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RegisterResult::Challenged => "challenged",
            RegisterResult::Stale => "stale",
            RegisterResult::Registered => "registered",
            RegisterResult::Unregistered => "unregistered",
            RegisterResult::Queried => "queried",
            RegisterResult::AuthFailed => "auth_failed",
            RegisterResult::TooBrief => "too_brief",
            RegisterResult::OutOfOrder => "out_of_order",
            RegisterResult::BadRequest => "bad_request",
            RegisterResult::Blocked => "blocked",
            RegisterResult::Limited => "limited",
        }
    }
}

/// How the registrar answers (the `[registrar]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The digest realm of every challenge.
    pub realm: Arc<str>,
    /// Shortest registration granted; shorter ones get 423 (RFC 3261
    /// §10.3 step 7).
    pub min_expires: u32,
    /// Longest registration granted; longer ones are cut to it.
    pub max_expires: u32,
    /// Granted when the REGISTER names no expiry.
    pub default_expires: u32,
    /// A nonce older than this gets `stale=true` (RFC 7616 §3.3).
    pub nonce_lifetime: Duration,
    /// Challenges offered, in order of preference (RFC 8760 §2.4).
    pub algorithms: Vec<Algorithm>,
    /// Sources that fail authentication too often are ignored for a
    /// while; `None`: never.
    pub lockout: Option<LockoutSettings>,
    /// Sources never locked out, besides the trunks' (an office network,
    /// a monitoring host): their failures are not counted.
    pub lockout_exempt: Vec<IpNet>,
    /// Keeping registered phones' NAT bindings open, and finding the dead
    /// ones; `None`: nothing sent.
    pub keepalive: Option<Keepalive>,
}

/// What the SBC sends to each registered phone every `interval`
/// (BRIEF §4, RFC 3581 NAT traversal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub method: KeepaliveMethod,
    pub interval: Duration,
    /// An OPTIONS keepalive unanswered this many times in a row marks the
    /// phone unreachable (it is not rung) until it answers or registers
    /// again.
    pub unreachable_after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveMethod {
    /// An OPTIONS request: any final answer says the phone is alive.
    Options,
    /// A bare CRLF CRLF datagram: keeps the NAT open, tells nothing back.
    Crlf,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            method: KeepaliveMethod::Options,
            interval: Duration::from_secs(30),
            unreachable_after: 3,
        }
    }
}

impl Settings {
    /// Whether failures from `ip` never lock it out (a network of
    /// `lockout_exempt`; trunks are exempt by the engine).
    pub fn exempt_from_lockout(&self, ip: std::net::IpAddr) -> bool {
        let ip = crate::net::canonical(ip);
        self.lockout_exempt.iter().any(|n| n.contains(&ip))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            realm: "sbc".into(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec![Algorithm::Md5],
            lockout: Some(LockoutSettings::default()),
            lockout_exempt: Vec::new(),
            keepalive: Some(Keepalive::default()),
        }
    }
}

/// `failures` failed authentications from one source within `window`
/// block it for `block` (its requests are dropped unanswered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutSettings {
    pub failures: u32,
    pub window: Duration,
    pub block: Duration,
}

impl Default for LockoutSettings {
    fn default() -> Self {
        LockoutSettings {
            failures: 10,
            window: Duration::from_secs(60),
            block: Duration::from_secs(600),
        }
    }
}

/// What an account authenticates with. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum AccountSecret {
    /// The password: every algorithm can be checked.
    Password(Box<[u8]>),
    /// Only `H(username:realm:password)` per algorithm, in hex (so the
    /// configuration need not hold the password); an answer with an
    /// algorithm that has none fails.
    Ha1 {
        md5: Option<Box<[u8]>>,
        sha256: Option<Box<[u8]>>,
    },
}

impl fmt::Debug for AccountSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccountSecret::Password(_) => "Password(<redacted>)",
            AccountSecret::Ha1 { .. } => "Ha1(<redacted>)",
        })
    }
}

impl AccountSecret {
    /// The secret as the registrar keeps it: a password becomes its HA1
    /// (`H(username:realm:password)`) for each of `algorithms`, computed
    /// once here instead of for every answer checked, and the password is
    /// not kept.
    pub fn hashed(self, username: &str, realm: &str, algorithms: &[Algorithm]) -> Self {
        let AccountSecret::Password(password) = self else {
            return self;
        };
        let ha1 = |alg: Algorithm| {
            algorithms.contains(&alg).then(|| {
                alg.ha1(username.as_bytes(), realm.as_bytes(), &password)
                    .as_bytes()
                    .into()
            })
        };
        AccountSecret::Ha1 {
            md5: ha1(Algorithm::Md5),
            sha256: ha1(Algorithm::Sha256),
        }
    }

    /// The secret to check an answer made with `algorithm`.
    pub fn for_algorithm(&self, algorithm: Algorithm) -> Option<Secret<'_>> {
        match self {
            AccountSecret::Password(p) => Some(Secret::Password(p)),
            AccountSecret::Ha1 { md5, sha256 } => match algorithm {
                Algorithm::Md5 => md5.as_deref().map(Secret::Ha1),
                Algorithm::Sha256 => sha256.as_deref().map(Secret::Ha1),
                _ => None,
            },
        }
    }
}

/// The name the account of a trunk that registers to the SBC is kept
/// under (its `extension`): not a number anyone can dial, and distinct
/// from every extension.
pub fn trunk_account_key(trunk: &str) -> Arc<str> {
    Arc::from(format!("trunk:{trunk}"))
}

/// A SIP account of an extension (a desk phone, a softphone).
#[derive(Debug, Clone)]
pub struct Account {
    /// The digest username, and the user part of its address of record.
    pub username: Arc<str>,
    /// The extension number it belongs to.
    pub extension: Arc<str>,
    pub secret: AccountSecret,
    /// Where it may register from; empty: anywhere.
    pub networks: Vec<IpNet>,
    /// The transports it may register and call over; empty: any.
    pub transports: Vec<crate::net::Transport>,
    /// The account is a trunk's that registers to the SBC (`host =
    /// "dynamic"`): its `extension` is a name no one can dial, and calls
    /// from it are that trunk's.
    pub trunk: Option<crate::policy::TrunkId>,
}

impl Account {
    pub fn may_register_from(&self, ip: std::net::IpAddr) -> bool {
        let ip = crate::net::canonical(ip);
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip))
    }

    /// Whether it may register and call over `transport`.
    pub fn may_use(&self, transport: crate::net::Transport) -> bool {
        self.transports.is_empty() || self.transports.contains(&transport)
    }
}

/// Extensions and their accounts, with the registrar's settings: the part
/// of the [`crate::policy::Policy`] snapshot the registrar reads.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// `None`: no registrar (REGISTER is refused as before).
    pub settings: Option<Settings>,
    accounts: Vec<Account>,
    by_username: HashMap<Arc<str>, usize>,
    /// Extension number → its accounts (indices into `accounts`).
    extensions: HashMap<Arc<str>, Vec<usize>>,
}

impl Accounts {
    /// Builds the index. Usernames must be unique (the control plane's
    /// validation sees to it; a repeated one keeps the first).
    /// With settings, passwords are kept as their HA1 for the realm and
    /// algorithms ([`AccountSecret::hashed`]).
    pub fn new(settings: Option<Settings>, mut accounts: Vec<Account>) -> Self {
        if let Some(s) = &settings {
            for a in &mut accounts {
                let secret =
                    std::mem::replace(&mut a.secret, AccountSecret::Password(Box::new([])));
                a.secret = secret.hashed(&a.username, &s.realm, &s.algorithms);
            }
        }
        let mut by_username = HashMap::with_capacity(accounts.len());
        let mut extensions: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (i, a) in accounts.iter().enumerate() {
            if by_username.contains_key(&a.username) {
                continue;
            }
            by_username.insert(Arc::clone(&a.username), i);
            extensions
                .entry(Arc::clone(&a.extension))
                .or_default()
                .push(i);
        }
        Accounts {
            settings,
            accounts,
            by_username,
            extensions,
        }
    }

    pub fn account(&self, username: &[u8]) -> Option<&Account> {
        let name = std::str::from_utf8(username).ok()?;
        self.by_username
            .get(name)
            .and_then(|&i| self.accounts.get(i))
    }

    /// The binding's account is still configured, in the same extension
    /// (otherwise the binding is dropped: a moved phone registers again).
    pub fn holds(&self, b: &Binding) -> bool {
        self.account(b.account.as_bytes())
            .is_some_and(|a| a.extension == b.extension)
    }

    /// The accounts of extension `number`, in configuration order.
    pub fn extension(&self, number: &str) -> impl Iterator<Item = &Account> {
        self.extensions
            .get(number)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.accounts.get(i))
    }

    /// Whether `number` is an extension phones may dial (not the name a
    /// registering trunk's account is kept under).
    pub fn is_extension(&self, number: &str) -> bool {
        self.extension(number).any(|a| a.trunk.is_none())
    }

    pub fn all(&self) -> &[Account] {
        &self.accounts
    }
}

/// A shard's registrar state: its nonces, and the lockout table it shares
/// with the other shards.
#[derive(Debug, Default)]
pub(crate) struct RegistrarState {
    pub nonces: NonceBook,
    pub lockout: Arc<Lockout>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn account(secret: &str) -> Account {
        Account {
            username: "alice".into(),
            extension: "100".into(),
            secret: AccountSecret::Password(secret.as_bytes().into()),
            networks: Vec::new(),
            transports: Vec::new(),
            trunk: None,
        }
    }

    #[test]
    fn a_password_is_kept_as_its_ha1_for_the_configured_algorithms() {
        let settings = Settings {
            realm: "sbc.example".into(),
            algorithms: vec![Algorithm::Sha256],
            ..Settings::default()
        };
        let accounts = Accounts::new(Some(settings), vec![account("s3cret")]);
        let a = accounts.account(b"alice").unwrap();
        let want = Algorithm::Sha256.ha1(b"alice", b"sbc.example", b"s3cret");
        assert_eq!(
            a.secret,
            AccountSecret::Ha1 {
                md5: None,
                sha256: Some(want.as_bytes().into()),
            }
        );
        assert!(a.secret.for_algorithm(Algorithm::Md5).is_none());
        // Without a registrar there is no realm: the password stays.
        let plain = Accounts::new(None, vec![account("s3cret")]);
        assert_eq!(
            plain.account(b"alice").unwrap().secret,
            AccountSecret::Password(b"s3cret".to_vec().into())
        );
    }
}
