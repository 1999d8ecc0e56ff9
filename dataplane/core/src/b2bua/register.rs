//! The registrar on the shard (RFC 3261 §10.3, BRIEF §4): REGISTERs from
//! phones are authenticated with HTTP Digest (RFC 7616, RFC 8760: MD5 and
//! SHA-256, `qop=auth`). The shard that owns the extension keeps the
//! binding (`lookup/`), and each change is reported as a
//! [`Change`](crate::registrar::Change) event for the control plane to
//! persist.
//!
//! - No usable credentials: 401 with one challenge per configured
//!   algorithm. The nonce is stateless ([`crate::registrar::NonceBook`]):
//!   a flood of REGISTERs costs no memory.
//! - Wrong password, unknown user, or a network or transport the account
//!   may not use: challenged again, as if no credentials had come, after
//!   the same work, so an answer never tells whether a user exists. An
//!   address of record that is not the account's: 403. Each counts
//!   towards the source's lockout (trunks and `lockout.exempt` networks
//!   exempt). A source that matches
//!   no trunk gets these answers within the stranger limits (`[acl]`),
//!   the rest is dropped.
//! - Right credentials with an expired nonce, or a nonce count not higher
//!   than one already used (a replay): 401 `stale=true`.
//! - Expiry: the Contact's `expires`, else `Expires`, else the default;
//!   0 (or `*` with `Expires: 0`) unregisters; under the minimum: 423 with
//!   Min-Expires; over the maximum: cut to it. The 200 OK's Contact says
//!   what was granted.
//! - NAT (RFC 3581): responses go back to the source address and port the
//!   REGISTER came from, and the binding records that flow: requests to
//!   the account go there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use super::context::Engine;
use crate::net::Flow;
use crate::policy::Policy;
use crate::registrar::{
    Account, AuthFailure, Binding, Change, NonceCheck, RegisterResult, Settings,
};
use crate::sip::digest::{Authorization, Expected, Qop, Secret, verify_expected};
use crate::sip::{CommaList, HeaderName, NameAddr, Request, Scheme, Uri};

/// The HA1 an answer for a user that does not exist is checked against,
/// so that it costs what checking a real account's answer costs (accounts
/// keep HA1s, not passwords): hex digits, as long as a SHA-256 hash.
const STAND_IN_HA1: [u8; 64] = [b'0'; 64];

/// What checking a request's credentials found.
enum Auth<'p> {
    Ok(&'p Account),
    /// Challenge again (`stale`: the credentials were right).
    Challenge {
        stale: bool,
    },
    Failed(AuthFailure),
    /// The digest `uri` is not the Request-URI (RFC 7616 §3.4.6: 400).
    BadUri,
}

impl Engine {
    /// A REGISTER outside a dialog, with the registrar on.
    pub(crate) fn on_register(&mut self, now: Instant, req: &Request<'_>, origin: Flow) {
        let policy = Arc::clone(&self.ctx.policy);
        let Some(settings) = policy.accounts.settings.as_ref() else {
            return;
        };
        let secrets = *self.ctx.ids.secrets();
        let ip = origin.remote.ip();
        let trusted = policy.trunk_on(&origin).is_some();
        let exempt = trusted || settings.exempt_from_lockout(ip);
        if !exempt && self.registrar.lockout.is_blocked(ip, now, &secrets) {
            self.ctx.stats.register(RegisterResult::Blocked);
            return;
        }
        match self.authenticate(now, req, origin, &policy, HeaderName::Authorization) {
            Auth::Ok(account) => {
                self.registrar.lockout.succeed(ip, &secrets);
                self.bind(now, req, origin, settings, account);
            }
            refused => {
                let asked = (settings, HeaderName::WwwAuthenticate);
                self.refuse_credentials(now, (req, origin), asked, refused, (trusted, exempt));
            }
        }
    }

    /// Credentials that did not check out, for REGISTER (401,
    /// `WWW-Authenticate`) or a phone's other requests (407,
    /// `Proxy-Authenticate`,
    /// as `header` says): a failure is counted (and towards the source's
    /// lockout unless `exempt`: a trunk's, or from a `lockout.exempt`
    /// network), then, within the stranger limits
    /// for a source that is no trunk, a fresh challenge (alike for a wrong
    /// password and an unknown user, RFC 3261 §22.1), `stale=true`, or 400
    /// for a digest `uri` that is not the request's target.
    fn refuse_credentials(
        &mut self,
        now: Instant,
        (req, origin): (&Request<'_>, Flow),
        (settings, header): (&Settings, HeaderName),
        refused: Auth<'_>,
        (trusted, exempt): (bool, bool),
    ) {
        if let Auth::Failed(why) = refused {
            self.ctx.stats.auth_failure(why);
            if let (false, Some(limits)) = (exempt, settings.lockout) {
                let secrets = *self.ctx.ids.secrets();
                self.registrar
                    .lockout
                    .fail(origin.remote.ip(), now, limits, &secrets);
            }
        }
        if !trusted && !self.ctx.may_answer_stranger(origin) {
            return self
                .ctx
                .stats
                .authenticated(req.method, RegisterResult::Limited);
        }
        let (stale, result) = match refused {
            Auth::Ok(_) => return,
            Auth::Challenge { stale: true } => (true, RegisterResult::Stale),
            Auth::Challenge { stale: false } => (false, RegisterResult::Challenged),
            Auth::Failed(_) => (false, RegisterResult::AuthFailed),
            Auth::BadUri => {
                let why = RegisterRefusal::DigestUri;
                return self.refuse_register(now, (req, origin), settings, why);
            }
        };
        self.challenge(now, req, origin, (settings, header), (stale, result));
    }

    /// Checks the request's credentials for our realm in `header`
    /// (`Authorization` for REGISTER, `Proxy-Authorization` for the rest).
    fn authenticate<'p>(
        &mut self,
        now: Instant,
        req: &Request<'_>,
        origin: Flow,
        policy: &'p Policy,
        header: HeaderName,
    ) -> Auth<'p> {
        let Some(settings) = policy.accounts.settings.as_ref() else {
            return Auth::Failed(AuthFailure::UnknownUser);
        };
        let realm = settings.realm.as_bytes();
        let Some(creds) = req
            .msg
            .all(header)
            .filter_map(|h| Authorization::parse(h.value).ok())
            .find(|a| *a.realm == *realm)
        else {
            return Auth::Challenge { stale: false };
        };
        if !settings.algorithms.contains(&creds.algorithm) {
            return Auth::Challenge { stale: false };
        }
        let shard = self.ctx.shard.0;
        let secrets = *self.ctx.ids.secrets();
        let nonce = self.registrar.nonces.check(
            &creds.nonce,
            now,
            settings.nonce_lifetime,
            shard,
            &secrets,
        );
        if nonce == NonceCheck::Invalid {
            return Auth::Challenge { stale: false };
        }
        let account = policy.accounts.account(&creds.username);
        let right = answers_challenge(realm, &creds, req.method_raw, account);
        let (true, Some(account)) = (right, account) else {
            return Auth::Failed(if account.is_none() {
                AuthFailure::UnknownUser
            } else {
                AuthFailure::WrongPassword
            });
        };
        let uri = req.msg.request_line().map_or(&b""[..], |l| l.uri);
        if !digest_uri_matches(&creds.uri, uri) {
            return Auth::BadUri;
        }
        let NonceCheck::Fresh { serial } = nonce else {
            return Auth::Challenge { stale: true };
        };
        let nc = creds.nc.unwrap_or(0);
        if !self.registrar.nonces.count(serial, nc) {
            return Auth::Challenge { stale: true };
        }
        if !account.may_register_from(origin.remote.ip()) {
            return Auth::Failed(AuthFailure::Network);
        }
        if !account.may_use(origin.transport) {
            return Auth::Failed(AuthFailure::Transport);
        }
        Auth::Ok(account)
    }

    /// One challenge per algorithm, most preferred first, counted as
    /// `result`: in `WWW-Authenticate` with 401 (REGISTER), in
    /// `Proxy-Authenticate` with 407 (a phone's other requests).
    fn challenge(
        &mut self,
        now: Instant,
        req: &Request<'_>,
        origin: Flow,
        (settings, header): (&Settings, HeaderName),
        (stale, result): (bool, RegisterResult),
    ) {
        let (text, ends) = self.challenges(now, settings, stale);
        let mut headers: SmallVec<[(HeaderName, &[u8]); 2]> = SmallVec::new();
        let mut start = 0;
        for end in ends {
            headers.push((header, text.get(start..end).unwrap_or_default()));
            start = end;
        }
        if header == HeaderName::ProxyAuthenticate {
            let status = (407, b"Proxy Authentication Required".as_slice());
            return self.registrar_answer(req, origin, now, result, status, &headers);
        }
        if result != RegisterResult::Challenged {
            // Wrong or stale credentials: the transaction answers their
            // retransmissions, so a lost 401 does not count (towards the
            // lockout too) once per copy.
            let status = (401, b"Unauthorized".as_slice());
            return self.registrar_answer(req, origin, now, result, status, &headers);
        }
        // A REGISTER without credentials is challenged statelessly (RFC
        // 3261 §8.2.7: what a stateless UAS is for): nothing is kept for
        // the 32 s of a transaction, and a retransmission of it is
        // challenged afresh.
        self.ctx.stats.authenticated(req.method, result);
        self.answer_stateless(req, origin, origin, (401, b"Unauthorized"), &headers);
    }

    /// One challenge value per configured algorithm, with a fresh nonce:
    /// written one after the other in one buffer, with where each ends.
    fn challenges(
        &mut self,
        now: Instant,
        settings: &Settings,
        stale: bool,
    ) -> (Vec<u8>, SmallVec<[usize; 2]>) {
        let secrets = *self.ctx.ids.secrets();
        let nonce = self.registrar.nonces.issue(now, self.ctx.shard.0, &secrets);
        let mut text = Vec::with_capacity(128 * settings.algorithms.len());
        let mut ends = SmallVec::new();
        for &algorithm in &settings.algorithms {
            let parts = Expected {
                realm: settings.realm.as_bytes(),
                nonce: &nonce[..],
                opaque: None,
                algorithm,
                qop: &[Qop::Auth],
            };
            if parts.write_challenge(stale, &mut text).is_ok() {
                ends.push(text.len());
            }
        }
        (text, ends)
    }

    /// An INVITE from a source that is no trunk, with the registrar on: a
    /// phone calling. Its credentials are asked for with 407 (RFC 3261
    /// §22.3); once they check out, the call is the account's: to another
    /// extension by its number, anywhere else by the routes that name no
    /// source trunk. Answers before authentication are a stranger's
    /// (rate-limited); failures count towards the source's lockout.
    pub(crate) fn on_phone_invite(&mut self, now: Instant, req: &Request<'_>, origin: Flow) {
        if self.invite_seen(now, req, origin) || self.outside_retransmission(req) {
            return;
        }
        let policy = Arc::clone(&self.ctx.policy);
        let Some(account) = self.phone_authenticated(now, req, origin, &policy) else {
            return;
        };
        // A phone calls as its extension; a trunk that registers calls as
        // itself, by its routes, with its own caller id.
        let (from, caller_id) = match account.trunk {
            Some(trunk) => (trunk, None),
            None => (crate::policy::PHONES, Some(Arc::clone(&account.extension))),
        };
        match self.admit(req, from) {
            Ok(mut admitted) => {
                admitted.caller_id = caller_id;
                self.start_call(now, req, origin, from, admitted);
            }
            Err(why) => self.ctx.refuse(req, origin, why),
        }
    }

    /// A request other than INVITE, REGISTER, ACK or CANCEL, outside a
    /// dialog, from a source that is no trunk, with the registrar on (a
    /// phone's OPTIONS keepalive, its MESSAGE or SUBSCRIBE): its
    /// credentials are asked for with 407, as for its INVITEs (RFC 3261
    /// §22.3). Once they check out it is answered as a trunk's would be:
    /// the refusals of what nobody may send (an unsupported scheme or
    /// `Require`), then 200 to OPTIONS, 481 to a BYE, 405 to what the SBC
    /// does not relay.
    pub(crate) fn on_phone_request(&mut self, now: Instant, req: &Request<'_>, origin: Flow) {
        if self.outside_retransmission(req) {
            return;
        }
        let policy = Arc::clone(&self.ctx.policy);
        if self
            .phone_authenticated(now, req, origin, &policy)
            .is_some()
            && !self.refused_outright(req, origin)
        {
            self.out_of_dialog(now, req, origin, crate::policy::PHONES);
        }
    }

    /// The account a phone's request (not a REGISTER) authenticates as.
    /// `None` once the request is dealt with otherwise: dropped (a blocked
    /// source, or past the stranger limits), or answered with a
    /// challenge, `stale=true` or 400 ([`Engine::refuse_credentials`]).
    fn phone_authenticated<'p>(
        &mut self,
        now: Instant,
        req: &Request<'_>,
        origin: Flow,
        policy: &'p Policy,
    ) -> Option<&'p Account> {
        let settings = policy.accounts.settings.as_ref()?;
        let secrets = *self.ctx.ids.secrets();
        let ip = origin.remote.ip();
        let exempt = settings.exempt_from_lockout(ip);
        if !exempt && self.registrar.lockout.is_blocked(ip, now, &secrets) {
            self.ctx
                .stats
                .authenticated(req.method, RegisterResult::Blocked);
            return None;
        }
        let auth = self.authenticate(now, req, origin, policy, HeaderName::ProxyAuthorization);
        let Auth::Ok(account) = auth else {
            let asked = (settings, HeaderName::ProxyAuthenticate);
            self.refuse_credentials(now, (req, origin), asked, auth, (false, exempt));
            return None;
        };
        self.registrar.lockout.succeed(ip, &secrets);
        Some(account)
    }

    /// The authenticated REGISTER's bindings (RFC 3261 §10.3 steps 6-8).
    fn bind(
        &mut self,
        now: Instant,
        req: &Request<'_>,
        origin: Flow,
        settings: &Settings,
        account: &Account,
    ) {
        let (contact, requested) = match read_register(req, settings, account) {
            Err(why) => return self.refuse_register(now, (req, origin), settings, why),
            Ok(Asked::Query) => return self.answer_query(now, req, origin, account),
            Ok(Asked::Unbind) => return self.unbind(now, req, origin, settings, account),
            Ok(Asked::Bind { contact, requested }) => (contact, requested),
        };
        if self.out_of_order(req, account) {
            let why = RegisterRefusal::OutOfOrder;
            return self.refuse_register(now, (req, origin), settings, why);
        }
        let granted = u32::try_from(requested.min(u64::from(settings.max_expires)))
            .unwrap_or(settings.max_expires);
        self.record(Change::bound(Binding::new(
            (
                Arc::clone(&account.username),
                Arc::clone(&account.extension),
            ),
            (contact.uri, req.call_id),
            origin,
            now + Duration::from_secs(u64::from(granted)),
            req.cseq.seq,
        )));
        let value = contact_value(contact.uri, granted);
        self.registrar_answer(
            req,
            origin,
            now,
            RegisterResult::Registered,
            (200, b"OK"),
            &[(HeaderName::Contact, &value)],
        );
    }

    /// Answers a REGISTER (or a request whose credentials name another
    /// target) the registrar refuses, as `why` says.
    fn refuse_register(
        &mut self,
        now: Instant,
        (req, origin): (&Request<'_>, Flow),
        settings: &Settings,
        why: RegisterRefusal,
    ) {
        if why == RegisterRefusal::NotTheAccounts {
            self.ctx.stats.auth_failure(AuthFailure::AddressOfRecord);
        }
        let mut n = itoa::Buffer::new();
        let min = n.format(settings.min_expires).as_bytes();
        let headers: &[(HeaderName, &[u8])] = match why {
            RegisterRefusal::TooBrief => &[(HeaderName::MinExpires, min)],
            _ => &[],
        };
        self.registrar_answer(req, origin, now, why.result(), why.answer(), headers);
    }

    /// RFC 3261 §10.3 step 7: a REGISTER of the binding's Call-ID whose
    /// CSeq is not higher is older than what is bound.
    fn out_of_order(&self, req: &Request<'_>, account: &Account) -> bool {
        self.ctx
            .location
            .latest(&account.username)
            .is_some_and(|b| b.call_id() == req.call_id && b.cseq >= req.cseq.seq)
    }

    fn unbind(
        &mut self,
        now: Instant,
        req: &Request<'_>,
        origin: Flow,
        settings: &Settings,
        account: &Account,
    ) {
        if self.out_of_order(req, account) {
            let why = RegisterRefusal::OutOfOrder;
            return self.refuse_register(now, (req, origin), settings, why);
        }
        self.record(Change::Removed {
            account: Arc::clone(&account.username),
        });
        self.registrar_answer(
            req,
            origin,
            now,
            RegisterResult::Unregistered,
            (200, b"OK"),
            &[],
        );
    }

    /// A REGISTER without Contact: 200 with the current binding.
    fn answer_query(&mut self, now: Instant, req: &Request<'_>, origin: Flow, account: &Account) {
        let current = self.ctx.location.get(&account.username, now).map(|b| {
            let left = b.expires.saturating_duration_since(now).as_secs();
            contact_value(b.contact(), u32::try_from(left).unwrap_or(u32::MAX))
        });
        let headers: Vec<(HeaderName, &[u8])> = current
            .iter()
            .map(|v| (HeaderName::Contact, v.as_slice()))
            .collect();
        self.registrar_answer(
            req,
            origin,
            now,
            RegisterResult::Queried,
            (200, b"OK"),
            &headers,
        );
    }

    /// Answers through a server transaction, back to where the request
    /// came from (symmetric response routing, RFC 3581 §4, whether or not
    /// it asked with `rport`), and counts the result.
    fn registrar_answer(
        &mut self,
        req: &Request<'_>,
        origin: Flow,
        now: Instant,
        result: RegisterResult,
        status: (u16, &[u8]),
        headers: &[(HeaderName, &[u8])],
    ) {
        self.ctx.stats.authenticated(req.method, result);
        self.answer_outside_to(req, origin, origin, now, status, headers);
    }
}

/// Why the registrar refuses a REGISTER, with the answer that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegisterRefusal {
    /// RFC 3261 §22.4: the credentials' `uri` is not the request's target.
    DigestUri,
    /// The To names an address of record that is not the account's (its
    /// username or extension number).
    NotTheAccounts,
    /// An Expires header that is not a number.
    BadExpires,
    /// RFC 3261 §10.3 step 6: `*` beside other Contacts, or without
    /// `Expires: 0`.
    BadWildcard,
    /// A Contact that does not parse.
    BadContact,
    /// A Contact `expires` parameter that is not a number.
    BadContactExpires,
    /// RFC 5630 §5.2: a SIPS Contact under a Request-URI that is not SIPS.
    SipsContact,
    /// RFC 3261 §10.3 step 7: shorter than the configured minimum.
    TooBrief,
    /// RFC 3261 §10.3 step 7: a CSeq not above the bound one's, on its
    /// Call-ID.
    OutOfOrder,
}

impl RegisterRefusal {
    /// Counted under.
    fn result(self) -> RegisterResult {
        match self {
            Self::NotTheAccounts => RegisterResult::AuthFailed,
            Self::TooBrief => RegisterResult::TooBrief,
            Self::OutOfOrder => RegisterResult::OutOfOrder,
            _ => RegisterResult::BadRequest,
        }
    }

    /// Status code and reason phrase.
    fn answer(self) -> (u16, &'static [u8]) {
        match self {
            Self::DigestUri => (400, b"Digest URI Does Not Match Request-URI"),
            Self::NotTheAccounts => (403, b"Forbidden"),
            Self::BadExpires => (400, b"Invalid Expires"),
            Self::BadWildcard => (400, b"Wildcard Contact Needs Expires: 0"),
            Self::BadContact => (400, b"Invalid Contact"),
            Self::BadContactExpires => (400, b"Invalid Contact expires"),
            Self::SipsContact => (400, b"SIPS Contact Needs A SIPS Request-URI"),
            Self::TooBrief => (423, b"Interval Too Brief"),
            Self::OutOfOrder => (500, b"Registration Out Of Order"),
        }
    }
}

/// What an authenticated REGISTER asks for.
enum Asked<'a> {
    /// No Contact: the current binding.
    Query,
    /// `*` or an expiry of 0.
    Unbind,
    /// A binding to `contact` for `requested` seconds (not yet capped).
    Bind {
        contact: NameAddr<'a>,
        requested: u64,
    },
}

/// Reads what an authenticated REGISTER asks for, in the order of RFC
/// 3261 §10.3 steps 5-7, or why it is refused. The binding's age (step 7's
/// CSeq check) is the caller's, which knows what is bound.
fn read_register<'a>(
    req: &Request<'a>,
    settings: &Settings,
    account: &Account,
) -> Result<Asked<'a>, RegisterRefusal> {
    // The address of record is the account's: its username or its
    // extension number.
    let to_user = req.to.parsed_uri().ok().and_then(|u| u.user);
    if to_user != Some(account.username.as_bytes()) && to_user != Some(account.extension.as_bytes())
    {
        return Err(RegisterRefusal::NotTheAccounts);
    }
    let expires_header = match req.msg.value(HeaderName::Expires) {
        None => None,
        Some(v) => Some(crate::sip::scan_decimal(v).ok_or(RegisterRefusal::BadExpires)?),
    };
    let contacts: SmallVec<[&'a [u8]; 2]> = req
        .msg
        .all(HeaderName::Contact)
        .flat_map(|h| CommaList::new(h.value))
        .collect();
    let Some(&first) = contacts.first() else {
        return Ok(Asked::Query);
    };
    if contacts.iter().any(|c| c.trim_ascii() == b"*") {
        // RFC 3261 §10.3 step 6: `*` alone, with Expires: 0.
        if contacts.len() != 1 || expires_header != Some(0) {
            return Err(RegisterRefusal::BadWildcard);
        }
        return Ok(Asked::Unbind);
    }
    let contact = NameAddr::parse(first).map_err(|_| RegisterRefusal::BadContact)?;
    let requested = match contact.param(b"expires") {
        Some(Some(v)) => crate::sip::scan_decimal(v).ok_or(RegisterRefusal::BadContactExpires)?,
        Some(None) => return Err(RegisterRefusal::BadContactExpires),
        None => expires_header.unwrap_or(u64::from(settings.default_expires)),
    };
    if requested == 0 {
        return Ok(Asked::Unbind);
    }
    // RFC 5630 §5.2: a SIPS Contact is bound only when the request was for
    // a SIPS URI too (and a SIPS Request-URI only arrives over TLS:
    // `on_request` refuses it otherwise), so a phone is never reached at a
    // SIPS Contact without TLS.
    let sips = super::build::is_sips_uri;
    if req.uri.scheme != Scheme::Sips
        && (sips(contact.uri)
            || contacts
                .iter()
                .skip(1)
                .any(|c| NameAddr::parse_structure(c).is_ok_and(|n| sips(n.uri))))
    {
        return Err(RegisterRefusal::SipsContact);
    }
    if requested < u64::from(settings.min_expires) {
        return Err(RegisterRefusal::TooBrief);
    }
    Ok(Asked::Bind { contact, requested })
}

/// Whether credentials answer the challenge we sent with `account`'s
/// secret. The challenge is rebuilt from the nonce they carry (ours,
/// checked before): our realm, qop=auth. We send no opaque, so what the
/// client returns as one is taken as it is (not checked). The same work is
/// done whether or not the account exists.
fn answers_challenge(
    realm: &[u8],
    creds: &Authorization<'_>,
    method: &[u8],
    account: Option<&Account>,
) -> bool {
    let challenge = Expected {
        realm,
        nonce: &creds.nonce,
        opaque: creds.opaque.as_deref(),
        algorithm: creds.algorithm,
        qop: &[Qop::Auth],
    };
    match account.and_then(|a| a.secret.for_algorithm(creds.algorithm)) {
        Some(s) => verify_expected(challenge, creds, method, s).is_ok(),
        None => {
            let stand_in = &STAND_IN_HA1[..creds.algorithm.hex_len()];
            let _ = verify_expected(challenge, creds, method, Secret::Ha1(stand_in));
            false
        }
    }
}

/// `<uri>;expires=N`.
fn contact_value(uri: &[u8], expires: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(uri.len() + 24);
    v.push(b'<');
    v.extend_from_slice(uri);
    v.extend_from_slice(b">;expires=");
    let mut n = itoa::Buffer::new();
    v.extend_from_slice(n.format(expires).as_bytes());
    v
}

/// RFC 3261 §22.4 asks that the credentials' `uri` name the request's
/// target. It matches when it is the Request-URI itself, or names the same
/// scheme, host and port without the user part (what SIPp and phones behind
/// rewriting ALGs send); the response hash covers the `uri`, and the nonce
/// count stops a replay either way.
fn digest_uri_matches(digest_uri: &[u8], request_uri: &[u8]) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    let (Ok(d), Ok(r)) = (Uri::parse(digest_uri), Uri::parse(request_uri)) else {
        return false;
    };
    let default = if r.scheme == Scheme::Sips { 5061 } else { 5060 };
    d.user.is_none()
        && d.scheme == r.scheme
        && d.host.eq_ignore_ascii_case(r.host)
        && d.port.unwrap_or(default) == r.port.unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::digest_uri_matches;

    #[test]
    fn the_digest_uri_names_the_request_target() {
        let ruri = b"sip:+441234567@192.0.2.1:5060;user=phone";
        assert!(digest_uri_matches(ruri, ruri));
        assert!(digest_uri_matches(b"sip:192.0.2.1:5060", ruri));
        assert!(digest_uri_matches(b"sip:192.0.2.1", b"sip:100@192.0.2.1"));
        assert!(!digest_uri_matches(b"sip:192.0.2.9:5060", ruri));
        assert!(!digest_uri_matches(b"sip:192.0.2.1:5080", ruri));
        assert!(!digest_uri_matches(b"sip:999@192.0.2.1:5060", ruri));
        assert!(!digest_uri_matches(b"sips:192.0.2.1:5060", ruri));
        assert!(!digest_uri_matches(b"garbage", ruri));
    }
}
