//! RFC 4475 torture messages through the parser: valid messages parse,
//! invalid ones are rejected with the right status, nothing panics.
use sbc_dataplane::sip::{Message, Request, Response};

fn corpus() -> Vec<(String, String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/rfc4475");
    let manifest = std::fs::read_to_string(format!("{dir}/MANIFEST.tsv")).unwrap();
    manifest
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let bytes = std::fs::read(format!("{dir}/{}", cols[0])).unwrap();
            (cols[0].to_owned(), cols[6].to_owned(), bytes)
        })
        .collect()
}

#[test]
fn explore() {
    for (file, rule, bytes) in corpus() {
        let outcome = match Message::parse(&bytes) {
            Err(e) => format!("parse error {e} -> {}", e.status()),
            Ok(m) if m.is_request() => match Request::parse(m) {
                Ok(r) => format!("request ok {:?}", r.method),
                Err(e) => format!("request error {e} -> {}", e.status()),
            },
            Ok(m) => match Response::parse(m) {
                Ok(r) => format!("response ok {}", r.code),
                Err(e) => format!("response error {e}"),
            },
        };
        println!("{file:32} {rule:16} {outcome}");
    }
}
