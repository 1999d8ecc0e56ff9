//! Where each registered account can be reached (RFC 3261 §10.3): one
//! binding per account, the latest REGISTER's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::net::Flow;

/// An account's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub account: Arc<str>,
    pub extension: Arc<str>,
    /// The Contact URI, then the REGISTER's Call-ID, in one allocation
    /// (a registrar holds one binding per phone): [`Binding::contact`],
    /// [`Binding::call_id`].
    text: Box<[u8]>,
    contact_len: u32,
    /// Where the REGISTER really came from (RFC 3581: the NAT's public
    /// address and port, our socket, the connection): requests to the
    /// account go there, whatever host the Contact names.
    pub flow: Flow,
    pub expires: Instant,
    /// The REGISTER's CSeq (with its Call-ID, RFC 3261 §10.3 step 7: a
    /// REGISTER of the same Call-ID with a CSeq not higher is out of
    /// order).
    pub cseq: u32,
    /// False while its keepalives go unanswered: it is not rung.
    pub reachable: bool,
}

impl Binding {
    /// A reachable binding of `account` (of `extension`) to `contact`,
    /// registered by a REGISTER of `call_id` and `cseq`.
    pub fn new(
        (account, extension): (Arc<str>, Arc<str>),
        (contact, call_id): (&[u8], &[u8]),
        flow: Flow,
        expires: Instant,
        cseq: u32,
    ) -> Binding {
        let mut text = Vec::with_capacity(contact.len() + call_id.len());
        text.extend_from_slice(contact);
        text.extend_from_slice(call_id);
        Binding {
            account,
            extension,
            text: text.into_boxed_slice(),
            contact_len: u32::try_from(contact.len()).unwrap_or(u32::MAX),
            flow,
            expires,
            cseq,
            reachable: true,
        }
    }

    /// The Contact URI it registered: the Request-URI of requests to it.
    pub fn contact(&self) -> &[u8] {
        self.text
            .get(..self.contact_len as usize)
            .unwrap_or(&self.text)
    }

    /// The Call-ID of the REGISTER that made it.
    pub fn call_id(&self) -> &[u8] {
        self.text
            .get(self.contact_len as usize..)
            .unwrap_or_default()
    }
}

/// A change a shard made, for the control plane to apply and publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Registered (or refreshed). Shared: the owning shard's location and
    /// the control plane's view hold the one binding.
    Bound(Arc<Binding>),
    /// Unregistered (`Expires: 0`, or `*`).
    Removed { account: Arc<str> },
    /// Its keepalives went unanswered (`false`), or are answered again.
    Reachable { account: Arc<str>, reachable: bool },
}

impl Change {
    /// [`Change::Bound`] with `binding`.
    pub fn bound(binding: Binding) -> Change {
        Change::Bound(Arc::new(binding))
    }

    pub fn account(&self) -> &Arc<str> {
        match self {
            Change::Bound(b) => &b.account,
            Change::Removed { account } | Change::Reachable { account, .. } => account,
        }
    }
}

/// Every account's binding: the snapshot the shards read.
#[derive(Debug, Clone, Default)]
pub struct Location {
    bindings: HashMap<Arc<str>, Arc<Binding>>,
    /// Each binding's expiry as it was bound, soonest first, so that a
    /// sweep reads only what is due instead of every binding. Entries are
    /// not taken out when a binding is refreshed or removed: a due entry
    /// whose binding now expires later, or is gone, is passed over. A
    /// binding always has the entry of its current expiry.
    expiries: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
}

/// Two locations are equal when they hold the same bindings (the expiry
/// index is how they are swept, not what they hold).
impl PartialEq for Location {
    fn eq(&self, other: &Self) -> bool {
        self.bindings == other.bindings
    }
}

impl Eq for Location {}

impl Location {
    /// The account's binding, when it has one that has not expired at `now`.
    pub fn get(&self, account: &str, now: Instant) -> Option<&Binding> {
        self.bindings
            .get(account)
            .map(AsRef::as_ref)
            .filter(|b| b.expires > now)
    }

    /// [`Location::get`], when the phone is also reachable (to ring it).
    pub fn reachable(&self, account: &str, now: Instant) -> Option<&Binding> {
        self.get(account, now).filter(|b| b.reachable)
    }

    /// The binding whatever its expiry (for the CSeq order check).
    pub fn latest(&self, account: &str) -> Option<&Binding> {
        self.bindings.get(account).map(AsRef::as_ref)
    }

    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Bound(b) => {
                self.expiries
                    .push(Reverse((b.expires, Arc::clone(&b.account))));
                self.bindings.insert(Arc::clone(&b.account), b);
                // Refreshes leave entries behind: bounded, at an amortised
                // constant cost, by a rebuild once they outnumber the
                // bindings twice over.
                self.compact_index();
            }
            Change::Removed { account } => {
                self.bindings.remove(&account);
            }
            Change::Reachable { account, reachable } => {
                if let Some(b) = self.bindings.get_mut(&account) {
                    Arc::make_mut(b).reachable = reachable;
                }
            }
        }
    }

    /// Drops the bindings expired at `now`; returns their accounts. Reads
    /// only the entries due, not every binding.
    pub fn expire(&mut self, now: Instant) -> Vec<Arc<str>> {
        let mut gone = Vec::new();
        while let Some(Reverse((at, _))) = self.expiries.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, account))) = self.expiries.pop() else {
                break;
            };
            if self
                .bindings
                .get(&account)
                .is_some_and(|b| b.expires <= now)
            {
                self.bindings.remove(&account);
                gone.push(account);
            }
        }
        gone
    }

    /// Keeps only the bindings `keep` says yes to (e.g. of accounts still
    /// configured after a reload).
    pub fn retain(&mut self, mut keep: impl FnMut(&Binding) -> bool) {
        self.bindings.retain(|_, b| keep(b));
        self.compact_index();
    }

    /// Rebuilds the expiry index from the bindings once entries passed
    /// over (of refreshed or removed bindings) make up most of it.
    fn compact_index(&mut self) {
        if self.expiries.len() > 2 * self.bindings.len() + 64 {
            self.expiries = self
                .bindings
                .values()
                .map(|b| Reverse((b.expires, Arc::clone(&b.account))))
                .collect();
        }
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values().map(AsRef::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{LocalId, Transport};
    use std::time::Duration;

    fn binding(account: &str, expires: Instant) -> Binding {
        binding_to(account, b"sip:alice@10.0.0.2:5062", expires)
    }

    fn binding_to(account: &str, contact: &[u8], expires: Instant) -> Binding {
        Binding::new(
            (account.into(), "201".into()),
            (contact, b"c1"),
            Flow {
                transport: Transport::Udp,
                remote: "198.51.100.7:40000".parse().unwrap(),
                local: LocalId(0),
                conn: None,
            },
            expires,
            1,
        )
    }

    #[test]
    fn a_bindings_contact_and_call_id_share_one_buffer() {
        let b = binding_to("alice", b"sip:alice@10.0.0.2:5062", Instant::now());
        assert_eq!(b.contact(), b"sip:alice@10.0.0.2:5062");
        assert_eq!(b.call_id(), b"c1");
        assert!(b.reachable);
        let empty = binding_to("bob", b"", Instant::now());
        assert_eq!((empty.contact(), empty.call_id()), (&b""[..], &b"c1"[..]));
    }

    #[test]
    fn latest_wins_and_bindings_expire_on_time() {
        let t0 = Instant::now();
        let mut loc = Location::default();
        loc.apply(Change::bound(binding(
            "alice",
            t0 + Duration::from_secs(60),
        )));
        let again = binding_to(
            "alice",
            b"sip:alice@10.0.0.3",
            t0 + Duration::from_secs(120),
        );
        loc.apply(Change::bound(again.clone()));
        assert_eq!(loc.len(), 1);
        assert_eq!(loc.get("alice", t0), Some(&again));
        assert_eq!(loc.get("alice", t0 + Duration::from_secs(120)), None);
        assert!(loc.latest("alice").is_some(), "until swept");
        assert!(loc.expire(t0 + Duration::from_secs(119)).is_empty());
        assert_eq!(
            loc.expire(t0 + Duration::from_secs(120)),
            vec![Arc::<str>::from("alice")]
        );
        assert!(loc.is_empty());
    }

    #[test]
    fn a_refreshed_binding_outlives_its_first_expiry_and_the_index_stays_bounded() {
        let t0 = Instant::now();
        let mut loc = Location::default();
        // Refreshed every second for a long expiry: 1,000 entries made,
        // one binding, each refresh pushing its expiry 1 s further.
        for i in 0..1000u64 {
            loc.apply(Change::bound(binding(
                "alice",
                t0 + Duration::from_secs(3600 + i),
            )));
            loc.apply(Change::bound(binding(
                &format!("once-{i}"),
                t0 + Duration::from_secs(10),
            )));
            loc.apply(Change::Removed {
                account: format!("once-{i}").into(),
            });
        }
        assert_eq!(loc.len(), 1);
        // 2,000 bindings made, without the rebuilds as many entries.
        assert!(loc.expiries.len() < 100, "{} entries", loc.expiries.len());
        // The first expiries pass: alice stays, its latest expiry holds.
        assert!(loc.expire(t0 + Duration::from_secs(3600 + 998)).is_empty());
        assert!(
            loc.get("alice", t0 + Duration::from_secs(3600 + 998))
                .is_some()
        );
        assert_eq!(
            loc.expire(t0 + Duration::from_secs(3600 + 999)),
            vec![Arc::<str>::from("alice")]
        );
        assert!(loc.is_empty());
    }

    #[test]
    fn expiry_reads_only_what_is_due_and_retain_keeps_the_index_right() {
        let t0 = Instant::now();
        let mut loc = Location::default();
        for i in 0..100u64 {
            loc.apply(Change::bound(binding(
                &format!("u{i}"),
                t0 + Duration::from_secs(i + 1),
            )));
        }
        // Every other account goes (a reload): its entries are passed over.
        loc.retain(|b| {
            b.account
                .trim_start_matches('u')
                .parse::<u64>()
                .is_ok_and(|n| n % 2 == 0)
        });
        assert_eq!(loc.len(), 50);
        let gone = loc.expire(t0 + Duration::from_secs(10));
        let want: Vec<Arc<str>> = [0, 2, 4, 6, 8]
            .iter()
            .map(|i| format!("u{i}").into())
            .collect();
        assert_eq!(gone, want);
        assert_eq!(loc.len(), 45);
        assert_eq!(loc.expire(t0 + Duration::from_secs(1000)).len(), 45);
        assert!(loc.is_empty());
    }

    #[test]
    fn an_unreachable_phone_is_kept_but_not_rung() {
        let t0 = Instant::now();
        let mut loc = Location::default();
        loc.apply(Change::bound(binding(
            "alice",
            t0 + Duration::from_secs(60),
        )));
        loc.apply(Change::Reachable {
            account: "alice".into(),
            reachable: false,
        });
        assert!(loc.get("alice", t0).is_some());
        assert!(loc.reachable("alice", t0).is_none());
        loc.apply(Change::Reachable {
            account: "alice".into(),
            reachable: true,
        });
        assert!(loc.reachable("alice", t0).is_some());
    }

    #[test]
    fn removal() {
        let t0 = Instant::now();
        let mut loc = Location::default();
        loc.apply(Change::bound(binding(
            "alice",
            t0 + Duration::from_secs(60),
        )));
        loc.apply(Change::Removed {
            account: "alice".into(),
        });
        assert!(loc.get("alice", t0).is_none());
    }
}
