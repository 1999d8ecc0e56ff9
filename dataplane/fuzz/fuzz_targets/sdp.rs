//! The SDP parser and the anchoring rewrite on arbitrary bodies: never a
//! panic, and what the rewrite writes parses again, with the same media
//! sections, every anchored one on our address and port.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use sbc_core::media::sdp::{Anchor, Media, Sdp, rewrite};

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = Sdp::parse(data) else {
        return;
    };
    for (i, m) in sdp.media.iter().enumerate() {
        let _ = (
            sdp.connection(i),
            m.is_rtp(),
            m.attr(b"rtpmap"),
            m.has_attr(b"sendonly"),
        );
        for f in &m.fmts {
            let _ = m.encoding(f);
        }
    }
    let ip: IpAddr = if data.len() % 2 == 0 {
        "192.0.2.1".parse().unwrap()
    } else {
        "2001:db8::1".parse().unwrap()
    };
    let anchors: Vec<Anchor> = (0..sdp.media.len())
        .map(|i| Anchor {
            port: if i % 3 == 2 { 0 } else { 30000 + 2 * i as u16 },
            rtcp_mux: i % 2 == 1,
        })
        .collect();
    // Keep every other format: codec filtering on the way.
    let keep = |_: &Media<'_>, f: &[u8]| f.len() % 2 == 0;
    let out = rewrite(&sdp, ip, &anchors, &keep, (1, 2));
    let again = match Sdp::parse(&out) {
        Ok(s) => s,
        Err(e) => panic!(
            "the rewrite wrote SDP that does not parse ({e}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(again.media.len(), sdp.media.len(), "media sections kept");
    for (i, m) in again.media.iter().enumerate() {
        // The media session refuses a stream with no c= (RFC 4566 §5.7)
        // before it rewrites; the rewrite itself adds none.
        if m.port != 0 && sdp.connection(i).is_some() {
            assert_eq!(m.port, anchors[i].port);
            assert_eq!(
                again.connection(i),
                Some(ip),
                "anchored stream on our address"
            );
        }
    }
});
