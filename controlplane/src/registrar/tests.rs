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
    Binding {
        account: account.into(),
        extension: extension.into(),
        contact: Bytes::from(format!("sip:{account}@10.0.0.5:5062")),
        flow: Flow {
            transport: Transport::Udp,
            remote: "203.0.113.7:40001".parse().unwrap(),
            local: LocalId(0),
            conn: None,
        },
        expires,
        call_id: Bytes::from_static(b"reg-call-id"),
        cseq: 7,
        reachable: true,
    }
}

#[test]
fn the_state_file_keeps_the_time_left_across_a_restart() {
    let p = policy(CONFIG, 1);
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut loc = Location::default();
    loc.apply(Change::Bound(binding(
        "alice",
        "201",
        t0 + Duration::from_secs(600),
    )));
    loc.apply(Change::Bound(binding(
        "bob",
        "202",
        t0 + Duration::from_secs(5),
    )));
    let text = render(&loc, t0, wall).unwrap();
    assert!(!text.contains("secret"));
    // "Restarted" 100 s later: alice has 500 s left, bob has expired.
    let t1 = Instant::now();
    let back = parse(&text, &p, t1, wall + Duration::from_secs(100)).unwrap();
    assert_eq!(back.len(), 1);
    let alice = back.get("alice", t1).unwrap();
    assert_eq!(alice.expires, t1 + Duration::from_secs(500));
    let want = binding("alice", "201", alice.expires);
    assert_eq!(alice, &want);
}

#[test]
fn bindings_of_accounts_no_longer_configured_are_not_restored() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut loc = Location::default();
    loc.apply(Change::Bound(binding(
        "alice",
        "201",
        t0 + Duration::from_secs(600),
    )));
    loc.apply(Change::Bound(binding(
        "carol",
        "203",
        t0 + Duration::from_secs(600),
    )));
    let text = render(&loc, t0, wall).unwrap();
    let back = parse(&text, &policy(CONFIG, 1), t0, wall).unwrap();
    assert_eq!(
        back.iter().map(|b| &*b.account).collect::<Vec<_>>(),
        ["alice"]
    );
}

#[test]
fn a_broken_state_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.json");
    std::fs::write(&path, "{ not json").unwrap();
    let loc = load(&path, &policy(CONFIG, 1), Instant::now(), SystemTime::now());
    assert!(loc.is_empty());
    assert!(!path.exists());
    assert!(path.with_extension("bad").exists());
    // A missing file is simply empty.
    assert!(load(&path, &policy(CONFIG, 1), Instant::now(), SystemTime::now()).is_empty());
}

#[test]
fn the_thread_publishes_saves_and_forgets_removed_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.json");
    let snapshot = Arc::new(ArcSwap::from_pointee(policy(CONFIG, 1)));
    let (registrar, directory) =
        Registrar::start(Some(path.clone()), Arc::clone(&snapshot)).unwrap();
    let location = registrar.location();
    let tx = directory.changes.clone().unwrap();
    let now = Instant::now();
    tx.send(Change::Bound(binding(
        "alice",
        "201",
        now + Duration::from_secs(600),
    )))
    .unwrap();
    tx.send(Change::Bound(binding(
        "bob",
        "202",
        now + Duration::from_millis(300),
    )))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while location.load().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(location.load().get("alice", Instant::now()).is_some());
    // bob expires and is swept.
    while location.load().len() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(location.load().len(), 1);
    // A reload without alice drops her binding.
    let without = CONFIG.replace(
        "{ username = \"alice\", secret = \"a-secret\" }",
        "{ username = \"alice2\", secret = \"a-secret\" }",
    );
    snapshot.store(Arc::new(policy(&without, 2)));
    while !location.load().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(location.load().is_empty());
    tx.send(Change::Bound(binding(
        "bob",
        "202",
        now + Duration::from_secs(900),
    )))
    .unwrap();
    drop(tx);
    drop(directory);
    registrar.join();
    // The last state is on disk once the thread has ended.
    let text = std::fs::read_to_string(&path).unwrap();
    let back = parse(&text, &policy(CONFIG, 1), Instant::now(), SystemTime::now()).unwrap();
    assert_eq!(
        back.iter().map(|b| &*b.account).collect::<Vec<_>>(),
        ["bob"]
    );
}
