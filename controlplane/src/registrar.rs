//! The registrar's control-plane side (BRIEF §4). The shards own the
//! bindings (each the accounts of the extensions its hash names) and
//! report every change; this thread keeps the control plane's view of
//! them (for `/registrations` and `/metrics`), expires it on the same
//! clock, drops bindings whose account left the configuration, and keeps
//! them in an embedded store (redb) so they survive a restart: at start
//! the store's bindings that have not expired go back to their shards.
//!
//! The store is written at most once per [`SAVE_EVERY`] (one transaction
//! for every binding that changed since) and when `sbc` stops; a commit is
//! durable when it returns, and a crash leaves the previous commit. It
//! holds no secret: accounts, contacts, where they registered from, and
//! expiry as wall-clock time, so a restart keeps the time that was left.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sbc_core::net::{Flow, LocalId, Transport};
use sbc_core::policy::Policy;
use sbc_core::registrar::{Binding, Change, Location};
use sbc_dataplane::shard::Directory;
use serde::{Deserialize, Serialize};

/// How often expired bindings are swept from the view.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// After a change arrives, how long the thread waits for more before it
/// takes them in one batch.
pub const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// The store is written at most this often.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The control plane's view of every binding (the shards own them).
pub type LocationView = Arc<Mutex<Location>>;

/// Reads the view (a poisoned lock still holds the data).
pub fn read_view<R>(view: &LocationView, f: impl FnOnce(&Location) -> R) -> R {
    let guard = view.lock().unwrap_or_else(PoisonError::into_inner);
    f(&guard)
}

/// Bindings by account; the value is a [`Saved`] in JSON.
const BINDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("bindings_v1");

/// The running registrar thread.
#[derive(Debug)]
pub struct Registrar {
    view: LocationView,
    thread: Option<JoinHandle<()>>,
}

impl Registrar {
    /// Opens the store (when given) and starts the thread. Returns the
    /// [`Directory`] to start the shards with, holding the bindings the
    /// store kept; the thread ends once every shard has dropped its copy.
    pub fn start(
        store: Option<PathBuf>,
        policy: Arc<ArcSwap<Policy>>,
    ) -> io::Result<(Registrar, Directory)> {
        let db = store.as_deref().and_then(open);
        let (restored, stale) = match &db {
            Some(db) => load(db, &policy.load(), Instant::now(), SystemTime::now()),
            None => (Location::default(), HashSet::new()),
        };
        if !restored.is_empty() {
            tracing::info!(
                bindings = restored.len(),
                "registrations restored from the store"
            );
        }
        let directory_bindings: Arc<[Binding]> = restored.iter().cloned().collect();
        let view: LocationView = Arc::new(Mutex::new(restored));
        let (tx, rx) = mpsc::channel();
        let thread_view = Arc::clone(&view);
        let thread = std::thread::Builder::new()
            .name("sbc-registrar".into())
            .spawn(move || run(&thread_view, rx, &policy, db.as_ref(), stale))?;
        let directory = Directory {
            changes: Some(tx),
            lockout: Arc::default(),
            restored: directory_bindings,
            tls: Arc::default(),
        };
        Ok((
            Registrar {
                view,
                thread: Some(thread),
            },
            directory,
        ))
    }

    /// The view (for `/metrics` and `/registrations`).
    pub fn location(&self) -> LocationView {
        Arc::clone(&self.view)
    }

    /// Waits for the thread (after the shards have stopped): the store is
    /// written one last time.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    view: &LocationView,
    rx: mpsc::Receiver<Change>,
    policy: &ArcSwap<Policy>,
    db: Option<&Database>,
    // Rows the store holds that were not restored: removed by the first save.
    mut dirty: HashSet<Arc<str>>,
) {
    let mut version = policy.load().version;
    let mut saved_at: Option<Instant> = None;
    let mut swept_at = Instant::now();
    loop {
        // Asleep until a change arrives or housekeeping is due (a sweep, a
        // deferred save, the configuration's version): an idle registrar
        // wakes twice a second, not at every drain.
        let pending_save = db.is_some() && !dirty.is_empty();
        let wait = housekeeping_wait(Instant::now(), swept_at, pending_save.then_some(saved_at));
        let mut changes = Vec::new();
        let disconnected = match rx.recv_timeout(wait) {
            Ok(first) => {
                // Changes are taken in batches: the thread is not woken for
                // each REGISTER the shards answer.
                changes.push(first);
                std::thread::sleep(DRAIN_EVERY);
                drain(&rx, &mut changes)
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let now = Instant::now();
        let current = policy.load();
        {
            let mut location = view.lock().unwrap_or_else(PoisonError::into_inner);
            for change in changes {
                dirty.insert(Arc::clone(change.account()));
                apply(&mut location, change);
            }
            if current.version != version {
                version = current.version;
                let gone: Vec<Arc<str>> = location
                    .iter()
                    .filter(|b| !current.accounts.holds(b))
                    .map(|b| Arc::clone(&b.account))
                    .collect();
                if !gone.is_empty() {
                    tracing::info!(
                        removed = gone.len(),
                        "registrations of accounts no longer configured dropped"
                    );
                }
                for account in gone {
                    location.apply(Change::Removed {
                        account: Arc::clone(&account),
                    });
                    dirty.insert(account);
                }
            }
            // A sweep looks at every binding: at most every SWEEP_EVERY,
            // however many changes arrive.
            if now.saturating_duration_since(swept_at) >= SWEEP_EVERY {
                swept_at = now;
                for account in location.expire(now) {
                    tracing::info!(account = &*account, "registration expired");
                    dirty.insert(account);
                }
            }
        }
        if let Some(db) = db
            && !dirty.is_empty()
            && saved_at.is_none_or(|t| now.saturating_duration_since(t) >= SAVE_EVERY)
        {
            save(db, view, &mut dirty, now, SystemTime::now());
            saved_at = Some(now);
        }
        if db.is_none() {
            // Nothing to save them to.
            dirty.clear();
        }
        if disconnected {
            break;
        }
    }
    if let Some(db) = db
        && !dirty.is_empty()
    {
        save(db, view, &mut dirty, Instant::now(), SystemTime::now());
    }
}

/// How long the thread may sleep at `now` before housekeeping is due: the
/// next sweep (the last was at `swept_at`), or, with a save pending
/// (`Some`, holding when the store was last written), the save.
fn housekeeping_wait(
    now: Instant,
    swept_at: Instant,
    pending_save: Option<Option<Instant>>,
) -> Duration {
    let sweep = (swept_at + SWEEP_EVERY).saturating_duration_since(now);
    match pending_save {
        None => sweep,
        Some(None) => Duration::ZERO,
        Some(Some(saved_at)) => sweep.min((saved_at + SAVE_EVERY).saturating_duration_since(now)),
    }
}

/// Takes every change waiting; whether the shards are all gone.
fn drain(rx: &mpsc::Receiver<Change>, changes: &mut Vec<Change>) -> bool {
    loop {
        match rx.try_recv() {
            Ok(change) => changes.push(change),
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
}

fn apply(location: &mut Location, change: Change) {
    match &change {
        Change::Bound(b) => {
            let moved = location
                .latest(&b.account)
                .is_none_or(|old| old.contact() != b.contact() || old.flow != b.flow);
            if moved {
                tracing::info!(
                    account = &*b.account,
                    extension = &*b.extension,
                    source = %b.flow.remote,
                    contact = %String::from_utf8_lossy(b.contact()),
                    "registered"
                );
            }
        }
        Change::Removed { account } => tracing::info!(account = &**account, "unregistered"),
        // Logged by the shard that found it.
        Change::Reachable { .. } => {}
    }
    location.apply(change);
}

/// One binding as the store keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    account: String,
    extension: String,
    contact: String,
    transport: String,
    /// Where the REGISTER came from (the NAT's address).
    source: SocketAddr,
    /// Index of the listen address it arrived on.
    local: u16,
    /// Expiry, milliseconds since 1970 (UTC).
    expires_unix_ms: u64,
    call_id: String,
    cseq: u32,
}

fn transport_of(token: &str) -> Option<Transport> {
    [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ]
    .into_iter()
    .find(|t| t.token().eq_ignore_ascii_case(token))
}

fn wall_ms(wall: SystemTime) -> u64 {
    u64::try_from(
        wall.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// A binding as stored (expiry turned into wall-clock time with
/// `now`/`wall`).
fn saved(b: &Binding, now: Instant, wall: SystemTime) -> Saved {
    let left = u64::try_from(b.expires.saturating_duration_since(now).as_millis()).unwrap_or(0);
    Saved {
        account: b.account.to_string(),
        extension: b.extension.to_string(),
        contact: String::from_utf8_lossy(b.contact()).into_owned(),
        transport: b.flow.transport.token().to_owned(),
        source: b.flow.remote,
        local: b.flow.local.0,
        expires_unix_ms: wall_ms(wall).saturating_add(left),
        call_id: String::from_utf8_lossy(b.call_id()).into_owned(),
        cseq: b.cseq,
    }
}

/// Writes the `dirty` accounts' bindings (or their absence) in one
/// transaction; they stay dirty when it fails.
fn save(
    db: &Database,
    view: &LocationView,
    dirty: &mut HashSet<Arc<str>>,
    now: Instant,
    wall: SystemTime,
) {
    let rows: Vec<(Arc<str>, Option<Vec<u8>>)> = read_view(view, |location| {
        dirty
            .iter()
            .map(|account| {
                let row = location
                    .latest(account)
                    .and_then(|b| serde_json::to_vec(&saved(b, now, wall)).ok());
                (Arc::clone(account), row)
            })
            .collect()
    });
    let result = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(BINDINGS)?;
            for (account, row) in &rows {
                match row {
                    Some(bytes) => {
                        table.insert(&**account, bytes.as_slice())?;
                    }
                    None => {
                        table.remove(&**account)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    })();
    match result {
        Ok(()) => dirty.clear(),
        Err(e) => tracing::error!(error = %e, "cannot write the registrations store"),
    }
}

/// A stored binding, when it is still valid at `wall` and its account is
/// configured in `policy` with the same extension.
fn restore(bytes: &[u8], policy: &Policy, now: Instant, wall: SystemTime) -> Option<Binding> {
    let s: Saved = serde_json::from_slice(bytes).ok()?;
    let left = s
        .expires_unix_ms
        .checked_sub(wall_ms(wall))
        .filter(|l| *l > 0)?;
    let account = policy
        .accounts
        .account(s.account.as_bytes())
        .filter(|a| *a.extension == *s.extension)?;
    let transport = transport_of(&s.transport)?;
    sbc_core::sip::Uri::parse(s.contact.as_bytes()).ok()?;
    Some(Binding::new(
        (
            Arc::clone(&account.username),
            Arc::clone(&account.extension),
        ),
        (s.contact.as_bytes(), s.call_id.as_bytes()),
        Flow {
            transport,
            remote: s.source,
            local: LocalId(s.local),
            // Connections do not survive a restart.
            conn: None,
        },
        now + Duration::from_millis(left),
        s.cseq,
    ))
}

/// Opens (or creates) the store; one that is not a readable store is
/// logged, moved aside (`.bad`) and started afresh. One that cannot be
/// opened for another reason (in use by another process, no permission)
/// is left as it is, and bindings are not kept.
fn open(path: &Path) -> Option<Database> {
    match Database::create(path) {
        Ok(db) => return Some(db),
        Err(e) if !unreadable(&e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the registrations store; bindings will not survive a restart");
            return None;
        }
        Err(e) => {
            let aside = path.with_extension("bad");
            let _ = std::fs::rename(path, &aside);
            tracing::error!(
                path = %path.display(),
                moved_to = %aside.display(),
                error = %e,
                "the registrations store cannot be opened; starting a new one"
            );
        }
    }
    match Database::create(path) {
        Ok(db) => Some(db),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot create the registrations store; bindings will not survive a restart");
            None
        }
    }
}

/// The file is there but its contents are not a store this version reads
/// (rather than a store in use by another process, or out of reach).
fn unreadable(e: &redb::DatabaseError) -> bool {
    use redb::{DatabaseError, StorageError};
    match e {
        DatabaseError::DatabaseAlreadyOpen
        | DatabaseError::LockProtocolMismatch
        | DatabaseError::TransactionInProgress => false,
        DatabaseError::Storage(StorageError::Io(io)) => matches!(
            io.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
        ),
        _ => true,
    }
}

/// The store's bindings still valid now, of accounts still configured,
/// and the accounts of the rows that are not (to be removed).
fn load(
    db: &Database,
    policy: &Policy,
    now: Instant,
    wall: SystemTime,
) -> (Location, HashSet<Arc<str>>) {
    let mut location = Location::default();
    let mut stale = HashSet::new();
    let rows = (|| -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
        let txn = db.begin_read()?;
        let table = match txn.open_table(BINDINGS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut rows = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            rows.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(rows)
    })();
    match rows {
        Ok(rows) => {
            for (account, row) in rows {
                match restore(&row, policy, now, wall) {
                    Some(b) => location.apply(Change::bound(b)),
                    None => {
                        stale.insert(Arc::from(account));
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the registrations store; starting without")
        }
    }
    (location, stale)
}

#[cfg(test)]
mod tests;
