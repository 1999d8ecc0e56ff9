//! Black-box tests of the `sbc` binary's command line.
#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sbc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sbc"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run sbc")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/ip-trunks.toml")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_accepts_the_example_with_a_summary() {
    let file = example();
    let out = sbc(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{}: OK (3 trunks, 1 route, 1 DID, 5 listen addresses)\n",
            file.display()
        )
    );
}

#[test]
fn check_config_rejects_a_broken_file_naming_file_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    let broken = std::fs::read_to_string(example()).unwrap().replace(
        "{ trunk = \"carrier-b\", priority = 2 }",
        "{ trunk = \"carrier-z\", priority = 2 }",
    );
    std::fs::write(&file, broken).unwrap();

    let out = sbc(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    let expected = format!(
        "{}: routes[0].targets[1].trunk: no trunk named \"carrier-z\" (line ",
        file.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn check_config_rejects_unknown_keys_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[sip]\nlisten = [\"127.0.0.1:5060\"]\nlisen = []\n").unwrap();
    let out = sbc(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("sip.lisen: unknown field `lisen`"),
        "{}",
        text(&out.stderr)
    );

    let missing = dir.path().join("missing.toml");
    let out = sbc(&["check-config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with(&format!("{}: ", missing.display())));
}

#[test]
fn help_describes_sbc_and_both_modes() {
    let out = sbc(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for needle in [
        "Session Border Controller",
        "check-config",
        "--config <FILE>",
        "--log-format",
        "SIGHUP",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
    let out = sbc(&["check-config", "--help"]);
    assert!(
        text(&out.stdout).contains("exits 2"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let out = sbc(&["--log-format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("xml"));
}
