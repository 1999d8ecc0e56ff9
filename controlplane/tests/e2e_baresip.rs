//! A real softphone: two `baresip` instances (Debian package) register
//! with digest authentication to the SBC of config/examples/remote-phones.toml
//! and call each other by extension number, each way, with audio (a sine
//! tone, PCMU) relayed both ways through the SBC.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A baresip instance, killed when dropped.
struct Phone(Child);

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fails at once, saying why, when a phone's SIP port is taken: a baresip
/// left running by an earlier run that was killed would hold it, register
/// to this run's SBC (same address) and answer its calls.
fn port_free(port: u16) {
    if let Err(e) = std::net::UdpSocket::bind(("127.0.0.1", port)) {
        panic!(
            "127.0.0.1:{port} is taken ({e}): is a baresip of an earlier run still running? (`pkill baresip`)"
        );
    }
}

/// baresip's configuration in `dir`: SIP on 127.0.0.1:`port` (its RTP goes
/// out from 127.0.0.1, so both match: the SBC latches media from where
/// the phone registered), a 440 Hz tone as microphone, a null speaker, and
/// `account`.
fn phone_dir(dir: &Path, port: u16, rtp: u16, account: &str) {
    port_free(port);
    std::fs::create_dir_all(dir).unwrap();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{port}\nsip_transports udp\n\
         audio_player aubridge,p{port}\naudio_source ausine,440\naudio_alert aubridge,p{port}\n\
         ausrc_srate 48000\nauplay_srate 48000\nausrc_channels 2\nauplay_channels 2\n\
         rtp_ports {rtp}-{}\n\
         module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule ausine.so\nmodule aubridge.so\n\
         module_app account.so\nmodule_app menu.so\n",
        rtp + 20
    );
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(dir.join("accounts"), format!("{account}\n")).unwrap();
}

fn baresip(dir: &Path, extra: &[&str]) -> Phone {
    assert!(
        Command::new("baresip").arg("-h").output().is_ok(),
        "baresip is required (Debian package baresip); .ci/run installs it"
    );
    let log = std::fs::File::create(dir.join("out.txt")).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("start baresip");
    Phone(child)
}

/// The phone of `callee` registers (answering by itself); the phone of
/// `caller` dials `number` and hangs up after 6 s. The media packets the
/// SBC relayed during the call, caller to callee and back.
fn one_call(sbc: &Sbc, caller: &Path, callee: &Path, number: &str) -> [f64; 2] {
    let relayed = || {
        ["caller_to_callee", "callee_to_caller"]
            .map(|d| sbc.metric(&format!("sbc_media_packets_total{{direction=\"{d}\"}}")))
    };
    let registered = || sbc.metric("sbc_registrar_requests_total{result=\"registered\"}");
    let before = relayed();
    let (before_registered, started) = (registered(), Instant::now());
    let answering = baresip(callee, &[]);
    while registered() <= before_registered && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(registered() > before_registered, "{}", sbc.log());
    let dial = format!("/dial {number}");
    let mut dialling = baresip(caller, &["-e", &dial, "-t", "6"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && dialling.0.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(answering);
    let after = relayed();
    [after[0] - before[0], after[1] - before[1]]
}

#[test]
fn two_baresip_phones_call_each_other_by_extension_through_the_sbc() {
    let net = Net(130);
    let mut config = example("remote-phones.toml", net);
    config.push_str(
        "\n[acl]\nstranger_answers_per_s = 50\n\n[shards]\ncount = 2\npin_threads = false\n",
    );
    let sbc = Sbc::start(net, &config);
    let dir = tempfile::tempdir().unwrap();
    let (alice_dir, bob_dir) = (dir.path().join("alice"), dir.path().join("bob"));
    let sbc_host = net.ip(1);
    phone_dir(
        &bob_dir,
        25_080,
        26_100,
        &format!(
            "<sip:bob@{sbc_host}:5060>;auth_pass=Bob-7x1z-Secret;regint=60;answermode=auto;audio_codecs=PCMU"
        ),
    );
    phone_dir(
        &alice_dir,
        25_070,
        26_000,
        &format!(
            "<sip:alice-desk@{sbc_host}:5060>;auth_pass=Desk-9f2k-Alice;regint=60;answermode=auto;audio_codecs=PCMU"
        ),
    );
    // bob registers and waits; alice dials his extension and hangs up
    // after 6 s. Then the other way round: alice waits, bob dials 100.
    let outputs = || {
        format!(
            "alice:\n{}\nbob:\n{}\nsbc:\n{}",
            std::fs::read_to_string(alice_dir.join("out.txt")).unwrap_or_default(),
            std::fs::read_to_string(bob_dir.join("out.txt")).unwrap_or_default(),
            sbc.log()
        )
    };
    for (caller, callee, number) in [(&alice_dir, &bob_dir, "101"), (&bob_dir, &alice_dir, "100")] {
        let relayed = one_call(&sbc, caller, callee, number);
        // Audio both ways, through the SBC's relay: at 50 packets a
        // second, a few seconds of call is well over 100 each way.
        for (direction, packets) in ["caller_to_callee", "callee_to_caller"].iter().zip(relayed) {
            assert!(
                packets >= 100.0,
                "dialling {number}, {direction}: {packets}\n{}",
                outputs()
            );
        }
    }
    let log = sbc.log();
    let answered = log
        .lines()
        .filter(|l| l.contains("call ended") && l.contains("answered=true"))
        .count();
    assert_eq!(answered, 2, "{}", outputs());
    assert!(!log.contains("Desk-9f2k-Alice") && !log.contains("Bob-7x1z-Secret"));
}
