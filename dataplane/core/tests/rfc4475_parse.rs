//! RFC 4475 torture messages through the parser and the engine: each gets
//! the answer MANIFEST.tsv says a correct server gives, nothing panics,
//! nothing malformed is relayed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::IpAddr;

use sbc_core::sip::{HeaderName, Message, Request};
use support::*;

struct Case {
    file: String,
    rule: String,
    preferred: String,
    bytes: Vec<u8>,
}

fn corpus() -> Vec<Case> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");
    let manifest = std::fs::read_to_string(format!("{dir}/MANIFEST.tsv")).unwrap();
    let cases: Vec<Case> = manifest
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            Case {
                file: cols[0].to_owned(),
                rule: cols[6].to_owned(),
                preferred: cols[7].to_owned(),
                bytes: std::fs::read(format!("{dir}/{}", cols[0])).unwrap(),
            }
        })
        .collect();
    assert!(cases.len() >= 49, "the whole corpus is present");
    cases
}

fn codes(c: &str) -> Vec<u16> {
    c.split('|').filter_map(|x| x.parse().ok()).collect()
}

#[test]
fn valid_messages_parse_and_invalid_ones_are_refused() {
    for case in corpus() {
        let parsed = Message::parse(&case.bytes).ok().and_then(|m| {
            if m.is_request() {
                Request::parse(m).ok().map(|_| ())
            } else {
                Some(())
            }
        });
        match case.rule.split(';').next().unwrap() {
            "VALID" | "REJECT" | "RESPOND" => assert!(parsed.is_some(), "{} must parse", case.file),
            r if r.starts_with("INVALID") && !case.file.contains("scalarlg") => {
                assert!(parsed.is_none(), "{} must be refused", case.file)
            }
            _ => {}
        }
    }
}

#[test]
fn engine_answers_each_torture_message_as_the_manifest_says() {
    let pbx_ip: IpAddr = addr(PBX).ip();
    for case in corpus() {
        let mut sim = Sim::new();
        sim.recv_bytes(PBX, &case.bytes);
        let sent = sim.sent();
        let answers: Vec<u16> = sent
            .iter()
            .filter(|s| s.to.ip() == pbx_ip)
            .filter_map(|s| s.code())
            .collect();
        let relayed = sent.iter().filter(|s| s.to.ip() != pbx_ip).count();
        let finals: Vec<u16> = answers.iter().copied().filter(|c| *c >= 200).collect();
        let ctx = format!(
            "{} ({} / {}): answers {answers:?}, relayed {relayed}",
            case.file, case.rule, case.preferred
        );
        let rule = case.rule.split(';').next().unwrap();
        match rule {
            "VALID" => {
                assert!(!answers.contains(&400), "{ctx}");
                assert!(
                    !answers.is_empty() || relayed > 0,
                    "a valid request is processed: {ctx}"
                );
                let allowed = codes(&case.preferred);
                if !allowed.is_empty() && !case.preferred.contains("any") && !finals.is_empty() {
                    assert!(finals.iter().all(|c| allowed.contains(c)), "{ctx}");
                }
                if case.rule.contains("cseq=REGISTER") {
                    let s = sent.iter().find(|s| s.code().is_some()).unwrap();
                    assert_eq!(
                        s.header(HeaderName::CSeq).split_whitespace().nth(1),
                        Some("REGISTER"),
                        "{ctx}"
                    );
                    assert_eq!(answers.len(), 1, "trailing INVITE ignored: {ctx}");
                }
            }
            "DROP" => assert!(sent.is_empty(), "responses are never answered: {ctx}"),
            "REJECT" => {
                assert_eq!(relayed, 0, "{ctx}");
                let allowed = codes(&case.preferred);
                assert!(finals.len() == 1 && allowed.contains(&finals[0]), "{ctx}");
            }
            "RESPOND" => assert!(!finals.is_empty() || relayed > 0, "{ctx}"),
            r if r.starts_with("INVALID") => {
                assert_eq!(relayed, 0, "malformed input never crosses: {ctx}");
                let mut allowed = vec![400];
                if let Some(code) = r.strip_prefix("INVALID:") {
                    allowed.push(code.parse().unwrap());
                }
                assert!(finals.iter().all(|c| allowed.contains(c)), "{ctx}");
            }
            "LIBERAL" => {
                // Either refused (400) or processed; never a crash. If it
                // was relayed, what crossed must itself parse.
                for s in sent.iter().filter(|s| s.to.ip() != pbx_ip) {
                    assert!(Request::parse(s.msg()).is_ok(), "{ctx}");
                }
            }
            other => panic!("unknown rule {other}"),
        }
    }
}
