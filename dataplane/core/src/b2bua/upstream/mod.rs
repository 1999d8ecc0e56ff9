//! The SBC's own registrations with trunks that ask for one (BRIEF §2):
//! a REGISTER from the shard that owns the trunk (its index modulo the
//! shard count), through a transaction outside calls, answering the
//! registrar's digest challenge (RFC 3261 §10.2, §22.2; RFC 7616, 8760).
//!
//! Every round starts without credentials; a 401 or 407 gets one answer
//! (two when the first came back `stale=true`). A 423 raises the expiry to
//! the registrar's Min-Expires and asks again at once. A 2xx is registered
//! for the expiry it grants our Contact, refreshed at about half of it
//! (RFC 3261 §10.2.4 keeps the Call-ID, CSeq counts up). Anything else,
//! or no answer, is a failure, retried after a backoff that doubles up to
//! its cap. The state is the trunk's [`TrunkStats`] registration fields,
//! and changes are reported as [`Event::Upstream`].
//!
//! [`TrunkStats`]: crate::stats::TrunkStats

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::context::Engine;
use super::event::{Event, Upstream};
use super::standalone::{Alarm, Outcome, OwnRequest, TxId};
use crate::policy::{Registration, Trunk};
use crate::sip::digest::{Algorithm, Challenge, Credentials, Qop, answer};
use crate::sip::{CommaList, HeaderName, Message, Method, NameAddr};
use crate::stats::Registered;
pub(crate) mod state;

use state::{State, Upstreams};

/// Answers to challenges within one round, at most.
const MAX_ANSWERS: u8 = 2;
/// Refreshes never come closer than this, whatever the registrar grants.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// A Min-Expires above this (a day) is not followed.
const MAX_EXPIRES: u32 = 86_400;

/// What a final response to our REGISTER means.
enum Step {
    Registered(u32),
    Answer(Challenge, HeaderName),
    Longer(u32),
    Failed(Option<u16>),
}

impl Engine {
    /// Plans the registrations of the current policy: trunks this shard
    /// owns that ask for one start now (new or changed) or keep their
    /// plan; the rest are forgotten.
    pub(crate) fn sync_upstreams(&mut self, now: Instant) {
        let policy = Arc::clone(&self.ctx.policy);
        let mut keep: Vec<Arc<str>> = Vec::new();
        for (i, trunk) in policy.trunks.iter().enumerate() {
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            let Some(config) = trunk.registration.as_ref().filter(|_| self.owns_trunk(i)) else {
                continue;
            };
            let same = self
                .upstreams
                .trunks
                .get(&trunk.name)
                .is_some_and(|s| *s.config == **config);
            if !same {
                let call_id = self.own_call_id();
                if self
                    .upstreams
                    .trunks
                    .insert(
                        Arc::clone(&trunk.name),
                        State {
                            config: Arc::clone(config),
                            call_id,
                            cseq: 0,
                            next_at: now,
                            answers: 0,
                            expires: u32::try_from(config.expires.as_secs()).unwrap_or(MAX_EXPIRES),
                            nonce: Vec::new(),
                            nc: 0,
                            failures: 0,
                        },
                    )
                    .is_some()
                    && let Some(tx) = self.upstreams.in_flight.take(&trunk.name)
                {
                    self.standalone.abandon(tx);
                }
                set_state(trunk, Registered::Trying, 0);
            }
            keep.push(Arc::clone(&trunk.name));
            if let Some(state) = self.upstreams.trunks.get(&trunk.name) {
                self.standalone
                    .set_alarm(state.next_at, Alarm::Register(index));
            }
        }
        let Upstreams { trunks, in_flight } = &mut self.upstreams;
        trunks.retain(|name, _| keep.contains(name));
        self.standalone
            .abandon_unless(in_flight, |name| trunks.contains_key(name));
    }

    /// The registration alarm of the trunk at `index` is due: a new round.
    pub(crate) fn upstream_due(&mut self, now: Instant, index: u16) {
        let policy = Arc::clone(&self.ctx.policy);
        let Some(trunk) = policy.trunks.get(usize::from(index)) else {
            return;
        };
        let Some(state) = self.upstreams.trunks.get_mut(&trunk.name) else {
            return;
        };
        if now < state.next_at || self.upstreams.in_flight.has(&trunk.name) {
            // A stale alarm, or the round still runs (its outcome plans
            // the next).
            return;
        }
        state.answers = 0;
        self.send_register(now, trunk, None);
    }

    /// Sends the trunk's REGISTER, with `credentials` (header, value)
    /// when answering a challenge.
    fn send_register(
        &mut self,
        now: Instant,
        trunk: &Trunk,
        credentials: Option<(HeaderName, Bytes)>,
    ) {
        let Some(state) = self.upstreams.trunks.get_mut(&trunk.name) else {
            return;
        };
        let r = Arc::clone(&state.config);
        let flow = self.ctx.policy.flow_to(trunk.transport, r.registrar);
        let parts = self.ctx.local(flow.local);
        let (local, params) = (parts.host.clone(), parts.uri_params);
        state.cseq = state.cseq.wrapping_add(1).max(1);
        let aor = Bytes::from(format!("<sip:{}@{}>", r.user, r.domain));
        let mut headers = vec![
            (
                HeaderName::Contact,
                Bytes::from(format!(
                    "<sip:{}@{}{params}>",
                    r.contact_user,
                    String::from_utf8_lossy(&local)
                )),
            ),
            (HeaderName::Expires, Bytes::from(state.expires.to_string())),
        ];
        headers.extend(credentials);
        let request = OwnRequest {
            method: Method::Register,
            flow,
            request_uri: request_uri(&r),
            from: aor.clone(),
            to: aor,
            call_id: Some(state.call_id.clone()),
            cseq: state.cseq,
            headers,
        };
        let tx = self.send_request(now, request);
        if self.upstreams.trunks.contains_key(&trunk.name) {
            self.upstreams.in_flight.start(Arc::clone(&trunk.name), tx);
        }
    }

    /// A transaction outside calls ended: true when it was one of our
    /// REGISTERs (then handled here, not reported).
    pub(crate) fn upstream_outcome(&mut self, now: Instant, tx: TxId, outcome: &Outcome) -> bool {
        let Some(name) = self.upstreams.in_flight.finish(tx) else {
            return false;
        };
        let policy = Arc::clone(&self.ctx.policy);
        let Some(trunk) = policy.trunks.iter().find(|t| t.name == name) else {
            return true;
        };
        let Some(state) = self.upstreams.trunks.get_mut(&name) else {
            return true;
        };
        let step = match outcome {
            Outcome::Timeout => Step::Failed(None),
            Outcome::Response { code, message } => read_answer(state, *code, message),
        };
        match step {
            Step::Registered(granted) => self.registered(now, trunk, granted),
            Step::Answer(challenge, header) => {
                let credentials = self.credentials(trunk, &challenge, header);
                match credentials {
                    Some(c) => self.send_register(now, trunk, Some(c)),
                    None => self.register_failed(now, trunk, Some(challenge_code(header))),
                }
            }
            Step::Longer(expires) => {
                if let Some(s) = self.upstreams.trunks.get_mut(&name) {
                    s.expires = expires;
                }
                self.send_register(now, trunk, None);
            }
            Step::Failed(status) => self.register_failed(now, trunk, status),
        }
        true
    }

    /// The `Authorization` (401) or `Proxy-Authorization` (407) answering
    /// `challenge` for the trunk's next REGISTER.
    fn credentials(
        &mut self,
        trunk: &Trunk,
        challenge: &Challenge,
        header: HeaderName,
    ) -> Option<(HeaderName, Bytes)> {
        let cnonce = self.ctx.ids.tag();
        let state = self.upstreams.trunks.get_mut(&trunk.name)?;
        let r = Arc::clone(&state.config);
        if state.nonce != challenge.nonce {
            state.nonce.clone_from(&challenge.nonce);
            state.nc = 0;
        }
        state.nc = state.nc.wrapping_add(1);
        state.answers += 1;
        let value = authorization(
            &r,
            challenge,
            b"REGISTER",
            &request_uri(&r),
            &cnonce,
            state.nc,
        )?;
        let name = if header == HeaderName::ProxyAuthenticate {
            HeaderName::ProxyAuthorization
        } else {
            HeaderName::Authorization
        };
        Some((name, value))
    }

    fn registered(&mut self, now: Instant, trunk: &Trunk, granted: u32) {
        let Some(state) = self.upstreams.trunks.get_mut(&trunk.name) else {
            return;
        };
        state.failures = 0;
        let expires = Duration::from_secs(u64::from(granted));
        state.next_at = now + (expires / 2).max(MIN_REFRESH);
        let at = state.next_at;
        let was = trunk.stats.registered();
        set_state(trunk, Registered::Yes, 200);
        trunk.stats.registrations[0].fetch_add(1, Ordering::Relaxed);
        self.set_register_alarm(trunk, at);
        if was != Registered::Yes {
            self.ctx.emit(Event::Upstream {
                trunk: Arc::clone(&trunk.name),
                state: Upstream::Registered { expires },
            });
        }
    }

    fn register_failed(&mut self, now: Instant, trunk: &Trunk, status: Option<u16>) {
        let Some(state) = self.upstreams.trunks.get_mut(&trunk.name) else {
            return;
        };
        state.failures = state.failures.saturating_add(1);
        let retry_in = state.config.backoff(state.failures);
        state.next_at = now + retry_in;
        let at = state.next_at;
        set_state(trunk, Registered::Failed, status.unwrap_or(0));
        trunk.stats.registrations[1].fetch_add(1, Ordering::Relaxed);
        self.set_register_alarm(trunk, at);
        self.ctx.emit(Event::Upstream {
            trunk: Arc::clone(&trunk.name),
            state: Upstream::Failed { status, retry_in },
        });
    }

    fn set_register_alarm(&mut self, trunk: &Trunk, at: Instant) {
        let policy = Arc::clone(&self.ctx.policy);
        if let Some(i) = policy.trunks.iter().position(|t| t.name == trunk.name) {
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            self.standalone.set_alarm(at, Alarm::Register(index));
        }
    }
}

fn set_state(trunk: &Trunk, state: Registered, status: u16) {
    trunk
        .stats
        .registration
        .store(state as u8, Ordering::Relaxed);
    trunk
        .stats
        .registration_status
        .store(status, Ordering::Relaxed);
}

fn challenge_code(header: HeaderName) -> u16 {
    if header == HeaderName::ProxyAuthenticate {
        407
    } else {
        401
    }
}

/// `sip:domain`, the Request-URI of a REGISTER (RFC 3261 §10.2).
fn request_uri(r: &Registration) -> Bytes {
    Bytes::from(format!("sip:{}", r.domain))
}

/// What the final answer `code` (the whole `message`) to our REGISTER
/// means for the round.
fn read_answer(state: &State, code: u16, message: &[u8]) -> Step {
    let Ok(msg) = Message::parse(message) else {
        return Step::Failed(Some(code));
    };
    match code {
        // Granted nothing: our Contact is not bound.
        200..=299 => match granted(state, &msg) {
            0 => Step::Failed(Some(code)),
            n => Step::Registered(n),
        },
        401 | 407 => {
            let header = if code == 401 {
                HeaderName::WwwAuthenticate
            } else {
                HeaderName::ProxyAuthenticate
            };
            let realm = state.config.realm.as_deref().map(str::as_bytes);
            let challenge = msg
                .all(header)
                .filter_map(|h| Challenge::parse(h.value).ok())
                .find(|c| {
                    realm.is_none_or(|r| r == c.realm.as_slice())
                        && (c.qop.is_empty() || c.offers(Qop::Auth))
                        && matches!(c.algorithm, Algorithm::Md5 | Algorithm::Sha256)
                });
            let Some(challenge) = challenge else {
                return Step::Failed(Some(code));
            };
            // A second challenge to the same nonce means the password was
            // wrong, unless the registrar says the nonce went stale.
            let again = state.answers > 0 && !challenge.stale && challenge.nonce == state.nonce;
            if state.answers >= MAX_ANSWERS || again {
                return Step::Failed(Some(code));
            }
            Step::Answer(challenge, header)
        }
        423 => {
            let min = msg
                .value(HeaderName::MinExpires)
                .and_then(crate::sip::scan_decimal)
                .and_then(|n| u32::try_from(n).ok());
            match min {
                Some(n) if n > state.expires && n <= MAX_EXPIRES => Step::Longer(n),
                _ => Step::Failed(Some(code)),
            }
        }
        _ => Step::Failed(Some(code)),
    }
}

/// The expiry a 2xx grants our Contact: its `expires` parameter, else the
/// Expires header, else what we asked (RFC 3261 §10.2.4).
fn granted(state: &State, msg: &Message<'_>) -> u32 {
    let ours = state.config.contact_user.as_bytes();
    let from_contact = msg
        .all(HeaderName::Contact)
        .flat_map(|h| CommaList::new(h.value))
        .filter_map(|c| NameAddr::parse(c).ok())
        .filter(|c| {
            crate::sip::Uri::parse(c.uri)
                .ok()
                .and_then(|u| u.user)
                .is_some_and(|u| u == ours)
        })
        .find_map(|c| match c.param(b"expires") {
            Some(Some(v)) => crate::sip::scan_decimal(v),
            _ => None,
        });
    let header = msg
        .value(HeaderName::Expires)
        .and_then(crate::sip::scan_decimal);
    from_contact
        .or(header)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(state.expires)
        .min(MAX_EXPIRES)
}

/// The credentials header value answering `challenge` for `method uri`.
pub(crate) fn authorization(
    r: &Registration,
    challenge: &Challenge,
    method: &[u8],
    uri: &[u8],
    cnonce: &[u8],
    nc: u32,
) -> Option<Bytes> {
    let credentials = Credentials {
        username: r.auth_user.as_bytes(),
        password: r.secret.as_bytes(),
    };
    let a = answer(challenge, &credentials, method, uri, cnonce, nc).ok()?;
    let mut value = Vec::with_capacity(256);
    a.write(&mut value).ok()?;
    Some(Bytes::from(value))
}
