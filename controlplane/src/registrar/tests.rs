#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::config::{Config, StatsRegistry};

const CONFIG: &str = r#"
[sip]
listen = ["127.0.0.1:5060"]

[registrar]
realm = "test"

[[extensions]]
number = "201"
accounts = [{ username = "alice", secret = "a-secret" }]

[[extensions]]
number = "202"
accounts = [{ username = "bob", secret = "b-secret" }]
"#;

fn policy(text: &str, version: u64) -> Policy {
    Config::from_toml_str(text)
        .unwrap()
        .compile(&StatsRegistry::new(), version)
}

fn binding(account: &str, extension: &str, expires: Instant) -> Binding {
    Binding::new(
        (account.into(), extension.into()),
        (
            format!("sip:{account}@10.0.0.5:5062").as_bytes(),
            b"reg-call-id",
        ),
        Flow {
            transport: Transport::Udp,
            remote: "203.0.113.7:40001".parse().unwrap(),
            local: LocalId(0),
            conn: None,
        },
        expires,
        7,
    )
}

/// A store in `dir` holding `loc` as of `t0`/`wall`.
fn stored(dir: &Path, loc: &Location, t0: Instant, wall: SystemTime) -> Database {
    let db = open(&dir.join("registrations.redb")).unwrap();
    let view: LocationView = Arc::new(Mutex::new(loc.clone()));
    let mut dirty: HashSet<Arc<str>> = loc.iter().map(|b| Arc::clone(&b.account)).collect();
    save(&db, &view, &mut dirty, t0, wall);
    assert!(dirty.is_empty(), "saved");
    db
}

#[test]
fn the_store_keeps_the_time_left_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(CONFIG, 1);
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut loc = Location::default();
    loc.apply(Change::bound(binding(
        "alice",
        "201",
        t0 + Duration::from_secs(600),
    )));
    loc.apply(Change::bound(binding(
        "bob",
        "202",
        t0 + Duration::from_secs(5),
    )));
    let db = stored(dir.path(), &loc, t0, wall);
    // "Restarted" 100 s later: alice has 500 s left, bob has expired.
    let t1 = Instant::now();
    let (back, _) = load(&db, &p, t1, wall + Duration::from_secs(100));
    assert_eq!(back.len(), 1);
    let alice = back.get("alice", t1).unwrap();
    assert_eq!(alice.expires, t1 + Duration::from_secs(500));
    let want = binding("alice", "201", alice.expires);
    assert_eq!(alice, &want);
    drop(db);
    let bytes = std::fs::read(dir.path().join("registrations.redb")).unwrap();
    assert!(!bytes.windows(8).any(|w| w == b"a-secret"));
}

#[test]
fn bindings_of_accounts_no_longer_configured_are_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut loc = Location::default();
    for (account, extension) in [("alice", "201"), ("carol", "203"), ("bob", "299")] {
        loc.apply(Change::bound(binding(
            account,
            extension,
            t0 + Duration::from_secs(600),
        )));
    }
    let db = stored(dir.path(), &loc, t0, wall);
    // carol is gone; bob now belongs to another extension.
    let (back, stale) = load(&db, &policy(CONFIG, 1), t0, wall);
    assert_eq!(
        back.iter().map(|b| &*b.account).collect::<Vec<_>>(),
        ["alice"]
    );
    // The rows not restored are removed by the first save.
    let mut stale: Vec<&str> = stale.iter().map(|a| &**a).collect();
    stale.sort_unstable();
    assert_eq!(stale, ["bob", "carol"]);
}

#[test]
fn a_broken_store_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.redb");
    std::fs::write(&path, "{ not a database").unwrap();
    let db = open(&path).expect("a new store");
    assert!(
        load(&db, &policy(CONFIG, 1), Instant::now(), SystemTime::now())
            .0
            .is_empty()
    );
    assert!(path.with_extension("bad").exists());
    // A new, empty one is simply empty.
    let fresh = open(&dir.path().join("new.redb")).unwrap();
    assert!(
        load(
            &fresh,
            &policy(CONFIG, 1),
            Instant::now(),
            SystemTime::now()
        )
        .0
        .is_empty()
    );
}

#[test]
fn the_thread_applies_saves_and_forgets_removed_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.redb");
    let snapshot = Arc::new(ArcSwap::from_pointee(policy(CONFIG, 1)));
    let (registrar, directory) =
        Registrar::start(Some(path.clone()), Arc::clone(&snapshot)).unwrap();
    assert!(directory.restored.is_empty());
    let view = registrar.location();
    let len = || read_view(&view, Location::len);
    let tx = directory.changes.clone().unwrap();
    let now = Instant::now();
    tx.send(Change::bound(binding(
        "alice",
        "201",
        now + Duration::from_secs(600),
    )))
    .unwrap();
    tx.send(Change::bound(binding(
        "bob",
        "202",
        now + Duration::from_millis(300),
    )))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(read_view(&view, |l| l
        .get("alice", Instant::now())
        .is_some()));
    // bob expires and is swept.
    while len() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(len(), 1);
    // A reload without alice drops her binding.
    let without = CONFIG.replace(
        "{ username = \"alice\", secret = \"a-secret\" }",
        "{ username = \"alice2\", secret = \"a-secret\" }",
    );
    snapshot.store(Arc::new(policy(&without, 2)));
    while len() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(len(), 0);
    tx.send(Change::bound(binding(
        "bob",
        "202",
        now + Duration::from_secs(900),
    )))
    .unwrap();
    drop(tx);
    drop(directory);
    registrar.join();
    // The last state is in the store once the thread has ended, and the
    // next start hands it to the shards.
    let (again, directory) = Registrar::start(Some(path), Arc::clone(&snapshot)).unwrap();
    assert_eq!(
        directory
            .restored
            .iter()
            .map(|b| &*b.account)
            .collect::<Vec<_>>(),
        ["bob"]
    );
    drop(directory);
    again.join();
}

#[test]
fn a_store_in_use_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.redb");
    let first = open(&path).expect("a new store");
    // A second sbc on the same file: no store for it, and the first
    // one's file is not moved aside.
    assert!(open(&path).is_none());
    assert!(!path.with_extension("bad").exists());
    drop(first);
}

#[test]
fn the_thread_sleeps_until_its_sweep_or_a_pending_save() {
    let t0 = Instant::now();
    let now = t0 + Duration::from_millis(200);
    // Nothing to save (or no store): the next sweep.
    assert_eq!(housekeeping_wait(now, t0, None), Duration::from_millis(300));
    // A save pending since a write 900 ms ago: due in 100 ms, first.
    let saved = t0 - Duration::from_millis(700);
    assert_eq!(
        housekeeping_wait(now, t0, Some(Some(saved))),
        Duration::from_millis(100)
    );
    // Never written yet: at once.
    assert_eq!(housekeeping_wait(now, t0, Some(None)), Duration::ZERO);
    // Overdue sweeps do not wait.
    assert_eq!(
        housekeeping_wait(t0 + Duration::from_secs(2), t0, None),
        Duration::ZERO
    );
}
