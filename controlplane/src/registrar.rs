//! The registrar's control-plane side (BRIEF §4): the shards answer
//! REGISTERs and report each binding change; this thread applies them to
//! the master [`Location`], publishes it to every shard (`ArcSwap`, read at
//! the top of each shard loop), drops bindings as they expire or when
//! their account leaves the configuration, and keeps them in a state file
//! so they survive a restart.
//!
//! The state file is JSON, written to a temporary file and renamed over
//! the old one (a crash leaves the old or the new file, never half of
//! one), at most once per [`SAVE_EVERY`] and when `sbc` stops. It holds
//! no secret: accounts, contacts, where they registered from, and expiry
//! as wall-clock time, so a restart keeps the time that was left.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use sbc_core::net::{Flow, LocalId, Transport};
use sbc_core::policy::Policy;
use sbc_core::registrar::{Binding, Change, Location};
use sbc_dataplane::shard::Directory;
use serde::{Deserialize, Serialize};

/// How often expired bindings are swept.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The state file is written at most this often.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The running registrar thread.
#[derive(Debug)]
pub struct Registrar {
    location: Arc<ArcSwap<Location>>,
    thread: Option<JoinHandle<()>>,
}

impl Registrar {
    /// Loads the state file (when given), publishes what it held, and
    /// starts the thread. Returns the [`Directory`] to start the shards
    /// with; the thread ends once every shard has dropped its copy.
    pub fn start(
        state_file: Option<PathBuf>,
        policy: Arc<ArcSwap<Policy>>,
    ) -> io::Result<(Registrar, Directory)> {
        let master = match &state_file {
            Some(path) => load(path, &policy.load(), Instant::now(), SystemTime::now()),
            None => Location::default(),
        };
        if !master.is_empty() {
            tracing::info!(
                bindings = master.len(),
                "registrations restored from the state file"
            );
        }
        let location = Arc::new(ArcSwap::from_pointee(master.clone()));
        let (tx, rx) = mpsc::channel();
        let published = Arc::clone(&location);
        let thread = std::thread::Builder::new()
            .name("sbc-registrar".into())
            .spawn(move || run(master, rx, &published, &policy, state_file.as_deref()))?;
        let directory = Directory {
            location: Arc::clone(&location),
            changes: Some(tx),
            lockout: Arc::default(),
        };
        Ok((
            Registrar {
                location,
                thread: Some(thread),
            },
            directory,
        ))
    }

    /// The published snapshot (for `/metrics` and `/registrations`).
    pub fn location(&self) -> Arc<ArcSwap<Location>> {
        Arc::clone(&self.location)
    }

    /// Waits for the thread (after the shards have stopped): the state
    /// file is written one last time.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    mut master: Location,
    rx: mpsc::Receiver<Change>,
    published: &ArcSwap<Location>,
    policy: &ArcSwap<Policy>,
    state_file: Option<&Path>,
) {
    let mut version = policy.load().version;
    let mut dirty = false;
    let mut saved_at: Option<Instant> = None;
    loop {
        let mut changed = false;
        match rx.recv_timeout(SWEEP_EVERY) {
            Ok(change) => {
                apply(&mut master, change);
                while let Ok(change) = rx.try_recv() {
                    apply(&mut master, change);
                }
                changed = true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let current = policy.load();
        if current.version != version {
            version = current.version;
            let before = master.len();
            master.retain(|b| current.accounts.account(b.account.as_bytes()).is_some());
            if master.len() != before {
                tracing::info!(
                    removed = before - master.len(),
                    "registrations of accounts no longer configured dropped"
                );
                changed = true;
            }
        }
        for account in master.expire(now) {
            tracing::info!(account = &*account, "registration expired");
            changed = true;
        }
        if changed {
            published.store(Arc::new(master.clone()));
            dirty = true;
        }
        if let (true, Some(path)) = (dirty, state_file)
            && saved_at.is_none_or(|t| now.saturating_duration_since(t) >= SAVE_EVERY)
        {
            save(path, &master, now, SystemTime::now());
            saved_at = Some(now);
            dirty = false;
        }
    }
    if let (true, Some(path)) = (dirty, state_file) {
        save(path, &master, Instant::now(), SystemTime::now());
    }
}

fn apply(master: &mut Location, change: Change) {
    match &change {
        Change::Bound(b) => {
            let moved = master
                .latest(&b.account)
                .is_none_or(|old| old.contact != b.contact || old.flow != b.flow);
            if moved {
                tracing::info!(
                    account = &*b.account,
                    extension = &*b.extension,
                    source = %b.flow.remote,
                    contact = %String::from_utf8_lossy(&b.contact),
                    "registered"
                );
            }
        }
        Change::Removed { account } => tracing::info!(account = &**account, "unregistered"),
        // Logged by the shard that found it.
        Change::Reachable { .. } => {}
    }
    master.apply(change);
}

/// One binding as the state file keeps it.
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

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    bindings: Vec<Saved>,
}

const STATE_VERSION: u32 = 1;

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

/// The state file's text for `location` (expiry turned into wall-clock
/// time with `now`/`wall`).
fn render(location: &Location, now: Instant, wall: SystemTime) -> serde_json::Result<String> {
    let wall_ms = wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut bindings: Vec<Saved> = location
        .iter()
        .map(|b| {
            let left = b.expires.saturating_duration_since(now).as_millis();
            Saved {
                account: b.account.to_string(),
                extension: b.extension.to_string(),
                contact: String::from_utf8_lossy(&b.contact).into_owned(),
                transport: b.flow.transport.token().to_owned(),
                source: b.flow.remote,
                local: b.flow.local.0,
                expires_unix_ms: u64::try_from(wall_ms + left).unwrap_or(u64::MAX),
                call_id: String::from_utf8_lossy(&b.call_id).into_owned(),
                cseq: b.cseq,
            }
        })
        .collect();
    bindings.sort_by(|a, b| a.account.cmp(&b.account));
    serde_json::to_string_pretty(&StateFile {
        version: STATE_VERSION,
        bindings,
    })
}

fn save(path: &Path, location: &Location, now: Instant, wall: SystemTime) {
    let result = render(location, now, wall)
        .map_err(io::Error::other)
        .and_then(|text| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)
        });
    if let Err(e) = result {
        tracing::error!(path = %path.display(), error = %e, "cannot write the registrations state file");
    }
}

/// The bindings `text` holds that are still valid at `wall` and whose
/// account is configured in `policy` (its extension as configured now).
fn parse(
    text: &str,
    policy: &Policy,
    now: Instant,
    wall: SystemTime,
) -> serde_json::Result<Location> {
    let file: StateFile = serde_json::from_str(text)?;
    let wall_ms = u64::try_from(
        wall.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    let mut location = Location::default();
    for s in file.bindings {
        let Some(left) = s.expires_unix_ms.checked_sub(wall_ms).filter(|l| *l > 0) else {
            continue;
        };
        let (Some(account), Some(transport)) = (
            policy.accounts.account(s.account.as_bytes()),
            transport_of(&s.transport),
        ) else {
            continue;
        };
        if sbc_core::sip::Uri::parse(s.contact.as_bytes()).is_err() {
            continue;
        }
        location.apply(Change::Bound(Binding {
            account: Arc::clone(&account.username),
            extension: Arc::clone(&account.extension),
            contact: Bytes::from(s.contact),
            flow: Flow {
                transport,
                remote: s.source,
                local: LocalId(s.local),
                // Connections do not survive a restart.
                conn: None,
            },
            expires: now + Duration::from_millis(left),
            call_id: Bytes::from(s.call_id),
            cseq: s.cseq,
            reachable: true,
        }));
    }
    Ok(location)
}

/// Reads the state file; a missing file is an empty location, an
/// unreadable one is logged, moved aside (`.bad`) and ignored.
fn load(path: &Path, policy: &Policy, now: Instant, wall: SystemTime) -> Location {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Location::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the registrations state file; starting without");
            return Location::default();
        }
    };
    match parse(&text, policy, now, wall) {
        Ok(location) => location,
        Err(e) => {
            let aside = path.with_extension("bad");
            let _ = std::fs::rename(path, &aside);
            tracing::error!(
                path = %path.display(),
                moved_to = %aside.display(),
                error = %e,
                "the registrations state file is not valid; starting without it"
            );
            Location::default()
        }
    }
}

#[cfg(test)]
mod tests;
