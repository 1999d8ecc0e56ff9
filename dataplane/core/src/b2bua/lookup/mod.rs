//! Where bindings live (BRIEF §4). A registered account's binding is
//! owned by one shard, the one a keyed hash of its extension number names
//! (like a call by its Call-ID): every REGISTER for the extension's
//! accounts is handed there, that shard answers it, keeps the binding,
//! sends its keepalives and lets it expire. Nothing is copied to the other
//! shards; a call to the extension routed elsewhere asks the owner with a
//! [`ShardMessage::Lookup`] and rings what the [`ShardMessage::Located`]
//! answer names (nobody answering within
//! [`LOOKUP_TIMEOUT`](message::LOOKUP_TIMEOUT): nobody to
//! ring). The embedding carries these messages between shards
//! ([`Engine::poll_shard_message`], [`Engine::handle_shard_message`]).
//!
//! Every change is also reported as
//! [`Event::Registration`](super::Event::Registration), for the control
//! plane's store and its views.

use std::sync::Arc;
use std::time::Instant;

use super::context::Engine;
use super::ids::ShardId;
use crate::registrar::{Binding, Location};
use crate::sip::{HeaderName, Message, Method, NameAddr, Uri};

pub(crate) mod message;

use message::{ShardMessage, located};

impl Engine {
    /// Which shard this engine is.
    pub fn shard(&self) -> ShardId {
        self.ctx.shard
    }

    fn owns_binding(&self, b: &Binding) -> bool {
        self.ctx.extension_owner(&b.extension) == self.ctx.shard
    }

    /// The shard a REGISTER belongs to: the owner of the extension its
    /// address of record (an account or an extension number) names.
    /// `None` when it names neither (the Call-ID decides, as for any
    /// request, and the registrar refuses it there).
    pub(crate) fn register_owner(&self, msg: &Message<'_>) -> Option<ShardId> {
        if msg.request_line()?.method != Method::Register {
            return None;
        }
        let accounts = &self.ctx.policy.accounts;
        accounts.settings.as_ref()?;
        let to = NameAddr::parse(msg.value(HeaderName::To)?).ok()?;
        let user = Uri::parse(to.uri).ok()?.user?;
        let extension: &str = match accounts.account(user) {
            Some(a) => &a.extension,
            None => {
                let number = std::str::from_utf8(user).ok()?;
                accounts.is_extension(number).then_some(number)?
            }
        };
        Some(self.ctx.extension_owner(extension))
    }

    /// Replaces this shard's bindings with those of `location` it owns
    /// (tests; a restart goes through [`Engine::restore_bindings`]).
    pub fn set_location(&mut self, location: Location) {
        self.ctx.location = Location::default();
        self.restore_bindings(location.iter().cloned());
    }

    /// Takes the bindings this shard owns, of accounts configured with
    /// the same extension (bindings kept across a restart).
    pub fn restore_bindings(&mut self, bindings: impl IntoIterator<Item = Binding>) {
        for b in bindings {
            if self.owns_binding(&b) && self.ctx.policy.accounts.holds(&b) {
                let account = Arc::clone(&b.account);
                let fresh = self.ctx.location.latest(&account).is_none();
                self.ctx.location.apply(crate::registrar::Change::bound(b));
                self.keepalive_bound(&account, fresh);
            }
        }
    }

    /// Applies a change to a binding this shard owns, and reports it.
    pub(crate) fn record(&mut self, change: crate::registrar::Change) {
        let bound = match &change {
            crate::registrar::Change::Bound(b) => Some((
                Arc::clone(&b.account),
                self.ctx.location.latest(&b.account).is_none(),
            )),
            _ => None,
        };
        self.ctx.location.apply(change.clone());
        if let Some((account, fresh)) = bound {
            self.keepalive_bound(&account, fresh);
        }
        self.ctx.emit(super::Event::Registration(change));
    }

    /// Drops the bindings expired at `now` (the control plane's views
    /// expire them on the same clock, without being told).
    pub(crate) fn expire_bindings(&mut self, now: Instant) {
        self.ctx.location.expire(now);
    }

    /// The bindings this shard owns.
    pub fn location(&self) -> &Location {
        &self.ctx.location
    }

    /// After a reload: bindings of accounts gone, or moved to another
    /// extension, are dropped (a moved phone registers again).
    pub(crate) fn sync_bindings(&mut self) {
        let policy = Arc::clone(&self.ctx.policy);
        let secrets = *self.ctx.ids.secrets();
        let (shard, shards) = (self.ctx.shard, self.ctx.shards);
        self.ctx.location.retain(|b| {
            policy.accounts.holds(b) && secrets.owner(b.extension.as_bytes(), shards) == shard
        });
    }

    /// A message another shard sent this one.
    pub fn handle_shard_message(&mut self, now: Instant, msg: ShardMessage) {
        match msg {
            ShardMessage::Lookup {
                from,
                call,
                extension,
            } => {
                let bindings = located(&self.ctx.policy, &self.ctx.location, &extension, now);
                self.ctx
                    .to_shards
                    .push_back((from, ShardMessage::Located { call, bindings }));
            }
            ShardMessage::Located { call, bindings } => {
                if let Some(c) = self.calls.get_mut(call) {
                    super::outbound::on_located(&mut self.ctx, c, bindings, now);
                    self.after(call);
                }
            }
        }
    }

    /// The next message for another shard: (to whom, what).
    pub fn poll_shard_message(&mut self) -> Option<(ShardId, ShardMessage)> {
        self.ctx.to_shards.pop_front()
    }
}
