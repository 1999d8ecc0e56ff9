//! Every SIP parser on arbitrary bytes: framing, typed headers, URIs, Via,
//! name-addr, and the salvage path used to answer broken requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc_core::sip::{HeaderName, Message, NameAddr, Request, Response, Uri, Via, via_values};

fuzz_target!(|data: &[u8]| {
    let _ = Message::salvage(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    for h in msg.headers() {
        match h.name {
            HeaderName::Via => {
                for v in via_values(h.value) {
                    if let Ok(via) = Via::parse(v) {
                        let _ = (via.branch(), via.rport(), via.received());
                    }
                }
            }
            HeaderName::From
            | HeaderName::To
            | HeaderName::Contact
            | HeaderName::Route
            | HeaderName::RecordRoute => {
                if let Ok(n) = NameAddr::parse(h.value) {
                    let _ = (n.tag(), n.parsed_uri());
                }
            }
            _ => {}
        }
    }
    if msg.is_request() {
        if let Ok(req) = Request::parse(msg) {
            let _ = Uri::parse(req.msg.request_line().map_or(&b""[..], |l| l.uri));
        }
    } else {
        let _ = Response::parse(msg);
    }
});
