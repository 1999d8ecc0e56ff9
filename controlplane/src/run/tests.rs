use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sbc_core::policy::Policy;
use sbc_core::stats::{Direction, ShardStats};

use super::*;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/examples/ip-trunks.toml"
);

/// Stands in for the shard runtime: records that it was stopped.
struct FakeDataPlane {
    shards: Vec<Arc<ShardStats>>,
    stopped: Arc<AtomicBool>,
}

impl DataPlane for FakeDataPlane {
    fn shard_stats(&self) -> Vec<Arc<ShardStats>> {
        self.shards.clone()
    }
    fn stop(self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

/// A config file in a temp dir, like ip-trunks.toml but with metrics on
/// an ephemeral port, so tests never collide.
fn temp_config(dir: &Path, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("127.0.0.1:9090", "127.0.0.1:0")
        .replace(
            "\"certs/",
            concat!(
                "\"",
                env!("CARGO_MANIFEST_DIR"),
                "/../config/examples/certs/"
            ),
        );
    let path = dir.join("sbc.toml");
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    path
}

fn start(path: &Path) -> (Config, Policy, ConfigSource) {
    let config = Config::load(path).unwrap();
    let source = ConfigSource {
        path: Some(path.to_path_buf()),
        stats: StatsRegistry::new(),
    };
    let policy = config.compile(&source.stats, 1);
    (config, policy, source)
}

#[test]
fn supervise_starts_reloads_on_request_and_stops_the_data_plane() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_config(dir.path(), "");
    let (config, policy, source) = start(&path);
    let stopped = Arc::new(AtomicBool::new(false));
    let published: Arc<Mutex<Option<Arc<ArcSwap<Policy>>>>> = Arc::default();
    let seen = Arc::clone(&published);
    let flag = Arc::clone(&stopped);
    let fake = move |cfg: DataPlaneConfig, policy: Arc<ArcSwap<Policy>>, _directory, _secrets| {
        assert!(
            cfg.shards >= 1 && cfg.pin_threads,
            "threads are pinned by default"
        );
        *seen.lock().unwrap() = Some(policy);
        Ok(FakeDataPlane {
            shards: vec![Arc::new(ShardStats::default())],
            stopped: flag,
        })
    };
    source.stats.trunk("pbx").attempt(Direction::Inbound);

    // The file changes before the reload: a trunk is added.
    let path = source.path.clone().unwrap();
    let added = "\n[[trunks]]\nname = \"carrier-c\"\nsources = [\"127.0.0.40\"]\naddress = \"127.0.0.40:5060\"\n";
    let controls = [Control::Reload, Control::Stop("test")]
        .into_iter()
        .inspect(|c| {
            if *c == Control::Reload {
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, format!("{text}{added}")).unwrap();
            }
        });
    supervise(config, policy, &source, fake, controls, None).unwrap();

    assert!(stopped.load(Ordering::SeqCst));
    let snapshot = published.lock().unwrap().take().unwrap().load_full();
    assert_eq!(snapshot.version, 2);
    assert_eq!(snapshot.trunks.len(), 4);
    let pbx = snapshot.trunks.iter().find(|t| &*t.name == "pbx").unwrap();
    assert_eq!(
        pbx.stats.attempted[Direction::Inbound as usize].load(Ordering::Relaxed),
        1
    );
}

#[test]
fn a_busy_metrics_address_fails_before_the_data_plane_starts() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = temp_config(dir.path(), "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:0", &busy.local_addr().unwrap().to_string());
    std::fs::write(&path, text).unwrap();
    let (config, policy, source) = start(&path);
    let fake = |_: DataPlaneConfig, _: Arc<ArcSwap<Policy>>, _, _| -> io::Result<FakeDataPlane> {
        panic!("data plane started although the metrics address is busy")
    };
    let err = supervise(config, policy, &source, fake, [], None).unwrap_err();
    assert!(matches!(err, RunError::Metrics(_)), "{err}");
    assert!(
        err.to_string()
            .contains(&busy.local_addr().unwrap().to_string()),
        "{err}"
    );
}

#[test]
fn reload_refuses_invalid_files_and_listen_changes_and_keeps_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_config(dir.path(), "");
    let (config, policy, source) = start(&path);
    let snapshot = ArcSwap::from_pointee(policy);

    std::fs::write(&path, "[sip]\nlisten = [\"127.0.0.1:5062\"]\n").unwrap();
    let err = reload(&config, &source, &snapshot, &Default::default()).unwrap_err();
    assert!(matches!(err, ReloadError::ListenChanged { .. }), "{err}");

    std::fs::write(&path, "[sip]\nlisten = \"oops\"\n").unwrap();
    let err = reload(&config, &source, &snapshot, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{}: sip.listen: ", path.display())),
        "{err}"
    );
    assert_eq!(snapshot.load().version, 1);
    assert_eq!(snapshot.load().trunks.len(), 3);

    // The same address over UDP only: the TCP listener would go.
    std::fs::write(&path, "[sip]\nlisten = [\"127.0.0.1:5060\"]\n").unwrap();
    let err = reload(&config, &source, &snapshot, &Default::default()).unwrap_err();
    assert!(matches!(err, ReloadError::ListenChanged { .. }), "{err}");

    // The same listeners, a certificate that cannot be read: refused, and
    // the running TLS settings stay.
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/certs");
    let listen = "[sip]\nlisten = [\"127.0.0.1:5060\", \"tcp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\", \"ws:127.0.0.1:8080\", \"wss:127.0.0.1:8443\"]\n";
    let tls = ArcSwap::from(config.tls());
    std::fs::write(
        &path,
        format!("{listen}[sip.tls]\ncertificate = \"{certs}/gone.crt\"\nkey = \"{certs}/localhost.key\"\n"),
    )
    .unwrap();
    let err = reload(&config, &source, &snapshot, &tls)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sip.tls.certificate: cannot read"), "{err}");
    assert!(tls.load().serves());

    // A valid file: published, with its TLS settings (new ones).
    std::fs::write(
        &path,
        format!(
            "{listen}[sip.tls]\ncertificate = \"{certs}/itsp.crt\"\nkey = \"{certs}/itsp.key\"\n"
        ),
    )
    .unwrap();
    let before = tls.load_full();
    assert_eq!(reload(&config, &source, &snapshot, &tls).unwrap(), 2);
    assert!(snapshot.load().trunks.is_empty());
    assert!(tls.load().serves());
    assert!(
        !Arc::ptr_eq(&before, &tls.load_full()),
        "new TLS settings published"
    );

    let embedded = ConfigSource::default();
    assert!(matches!(
        reload(&config, &embedded, &snapshot, &Default::default()),
        Err(ReloadError::NoFile)
    ));
}

#[test]
fn reload_refuses_a_change_of_the_media_settings_or_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_config(dir.path(), "");
    let (config, policy, source) = start(&path);
    let snapshot = ArcSwap::from_pointee(policy);
    let example = std::fs::read_to_string(&path).unwrap();

    let moved = example.replace("ports = \"30000-39999\"", "ports = \"40000-49999\"");
    std::fs::write(&path, &moved).unwrap();
    let err = reload(&config, &source, &snapshot, &Default::default()).unwrap_err();
    assert!(matches!(err, ReloadError::MediaChanged { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("ports 30000-39999") && message.contains("ports 40000-49999"),
        "{message}"
    );
    assert!(message.contains("restart sbc"), "{message}");

    let longer = example.replace(
        "ports = \"30000-39999\"",
        "ports = \"30000-39999\"\ntimeout_s = 90",
    );
    std::fs::write(&path, &longer).unwrap();
    assert!(matches!(
        reload(&config, &source, &snapshot, &Default::default()),
        Err(ReloadError::MediaChanged { .. })
    ));
    assert_eq!(snapshot.load().version, 1, "nothing was published");

    // The same settings written differently are not a change.
    let explicit = example.replace(
        "listen = \"127.0.0.1\"\nports",
        "listen = \"127.0.0.1\"\nadvertise = \"127.0.0.1\"\ntimeout_s = 60\nports",
    );
    assert_ne!(explicit, example);
    std::fs::write(&path, &explicit).unwrap();
    assert_eq!(
        reload(&config, &source, &snapshot, &Default::default()).unwrap(),
        2
    );
}

#[test]
fn reload_refuses_a_change_of_the_media_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbc.toml");
    let plain = "[sip]\nlisten = [\"127.0.0.1:5060\"]\n";
    std::fs::write(&path, plain).unwrap();
    let (config, policy, source) = start(&path);
    let snapshot = ArcSwap::from_pointee(policy);

    // sip.advertise as an IP address moves the default media advertise.
    std::fs::write(&path, format!("{plain}advertise = [\"203.0.113.5\"]\n")).unwrap();
    let err = reload(&config, &source, &snapshot, &Default::default()).unwrap_err();
    assert!(matches!(err, ReloadError::MediaChanged { .. }), "{err}");
    assert!(err.to_string().contains("advertise 203.0.113.5"), "{err}");

    // A DNS name does not: the media advertise stays the listen IP.
    std::fs::write(&path, format!("{plain}advertise = [\"sbc.example.com\"]\n")).unwrap();
    assert_eq!(
        reload(&config, &source, &snapshot, &Default::default()).unwrap(),
        2
    );
    assert_eq!(
        snapshot.load().media.as_ref().map(|m| m.advertise),
        Some("127.0.0.1".parse().unwrap())
    );
}

/// A shard whose loop ends while sbc runs stops sbc with an error (so the
/// process exits non-zero), found by the watchdog without any signal.
#[test]
fn a_stopped_shard_stops_sbc_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_config(dir.path(), "");
    let (config, policy, source) = start(&path);
    let stopped = Arc::new(AtomicBool::new(false));
    let shards: Vec<Arc<ShardStats>> = (0..2).map(|_| Arc::default()).collect();
    for s in &shards {
        s.set_loop_state(LoopState::Running);
    }
    let dying = Arc::clone(&shards[1]);
    let flag = Arc::clone(&stopped);
    let fake = move |_: DataPlaneConfig, _: Arc<ArcSwap<Policy>>, _, _| {
        Ok(FakeDataPlane {
            shards,
            stopped: flag,
        })
    };
    let killer = std::thread::spawn(move || {
        std::thread::sleep(3 * WATCH_EVERY);
        dying.set_loop_state(LoopState::Stopped);
    });
    // No signal ever comes: only the watchdog can end supervise.
    let (tx, controls) = mpsc::channel();
    let err = supervise(config, policy, &source, fake, controls, Some(tx)).unwrap_err();
    killer.join().unwrap();
    assert!(matches!(err, RunError::ShardStopped(1)), "{err}");
    assert!(
        stopped.load(Ordering::SeqCst),
        "the data plane was not stopped"
    );
}

#[test]
fn the_fault_injection_setting_is_read_or_named_in_its_error() {
    assert_eq!(parse_fault("1:1500"), Ok((1, Duration::from_millis(1500))));
    assert_eq!(parse_fault(" 0 : 0 "), Ok((0, Duration::ZERO)));
    assert!(parse_fault("1").unwrap_err().contains("SHARD:MILLISECONDS"));
    assert!(parse_fault("x:5").unwrap_err().contains("shard number"));
    assert!(parse_fault("1:soon").unwrap_err().contains("milliseconds"));
}
