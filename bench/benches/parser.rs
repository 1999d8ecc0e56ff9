//! Parser throughput: our lazy parser (framing + the headers a B2BUA
//! decision needs) against rsip (full parse), on INVITE, 200 and BYE.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sbc_bench::MESSAGES;
use sbc_core::sip::{Message, Request, Response};
use std::hint::black_box;

fn parse_ours(raw: &[u8]) -> usize {
    let msg = Message::parse(raw).unwrap();
    if msg.is_request() {
        let r = Request::parse(msg).unwrap();
        r.call_id.len() + r.from_tag().len() + usize::from(r.via.has_rfc3261_branch())
    } else {
        let r = Response::parse(msg).unwrap();
        r.call_id.len() + r.to_tag().map_or(0, <[u8]>::len)
    }
}

fn parser(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    for (name, text) in MESSAGES {
        let raw = text.as_bytes();
        g.bench_function(format!("sbc/{name}"), |b| {
            b.iter(|| parse_ours(black_box(raw)))
        });
        g.bench_function(format!("rsip/{name}"), |b| {
            b.iter(|| rsip::SipMessage::try_from(black_box(raw)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, parser);
criterion_main!(benches);
