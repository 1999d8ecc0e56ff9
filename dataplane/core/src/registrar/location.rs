//! Where each registered account can be reached (RFC 3261 §10.3): one
//! binding per account, the latest REGISTER's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::net::Flow;

/// An account's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub account: Arc<str>,
    pub extension: Arc<str>,
    /// The Contact URI it registered: the Request-URI of requests to it.
    pub contact: Bytes,
    /// Where the REGISTER really came from (RFC 3581: the NAT's public
    /// address and port, our socket, the connection): requests to the
    /// account go there, whatever host the Contact names.
    pub flow: Flow,
    pub expires: Instant,
    /// The REGISTER's Call-ID and CSeq (RFC 3261 §10.3 step 7: a REGISTER
    /// of the same Call-ID with a CSeq not higher is out of order).
    pub call_id: Bytes,
    pub cseq: u32,
    /// False while its keepalives go unanswered: it is not rung.
    pub reachable: bool,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    bindings: HashMap<Arc<str>, Arc<Binding>>,
}

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
                self.bindings.insert(Arc::clone(&b.account), b);
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

    /// Drops the bindings expired at `now`; returns their accounts.
    pub fn expire(&mut self, now: Instant) -> Vec<Arc<str>> {
        let gone: Vec<Arc<str>> = self
            .bindings
            .values()
            .filter(|b| b.expires <= now)
            .map(|b| Arc::clone(&b.account))
            .collect();
        for a in &gone {
            self.bindings.remove(a);
        }
        gone
    }

    /// Keeps only the bindings `keep` says yes to (e.g. of accounts still
    /// configured after a reload).
    pub fn retain(&mut self, mut keep: impl FnMut(&Binding) -> bool) {
        self.bindings.retain(|_, b| keep(b));
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
        Binding {
            account: account.into(),
            extension: "201".into(),
            contact: Bytes::from_static(b"sip:alice@10.0.0.2:5062"),
            flow: Flow {
                transport: Transport::Udp,
                remote: "198.51.100.7:40000".parse().unwrap(),
                local: LocalId(0),
                conn: None,
            },
            expires,
            call_id: Bytes::from_static(b"c1"),
            cseq: 1,
            reachable: true,
        }
    }

    #[test]
    fn latest_wins_and_bindings_expire_on_time() {
        let t0 = Instant::now();
        let mut loc = Location::default();
        loc.apply(Change::bound(binding(
            "alice",
            t0 + Duration::from_secs(60),
        )));
        let mut again = binding("alice", t0 + Duration::from_secs(120));
        again.contact = Bytes::from_static(b"sip:alice@10.0.0.3");
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
