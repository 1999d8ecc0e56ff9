//! Setting up the relayed streams for the media benchmark: calls through
//! the real `sbc` (SIP over loopback), or offer/answer with rtpengine over
//! its ng control protocol (bencode over UDP).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// The m=audio port of an SDP body.
fn audio_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.trim_start().strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

fn recv_text(sock: &UdpSocket, skip_provisional: bool) -> io::Result<String> {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = sock.recv_from(&mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !(skip_provisional && text.starts_with("SIP/2.0 1")) {
            return Ok(text);
        }
    }
}

/// Sets up `n` anchored calls through the SBC at `sbc`; the caller's media
/// comes from `caller_ip`, the callee's SDP points at `sink`. Returns the
/// SBC ports facing each side of each call.
pub fn sbc_calls(
    sbc: SocketAddr,
    caller_ip: &str,
    callee_ip: &str,
    sink: SocketAddr,
    n: usize,
) -> io::Result<SbcCalls> {
    let caller = UdpSocket::bind(format!("{caller_ip}:5060"))?;
    let callee = UdpSocket::bind(format!("{callee_ip}:5060"))?;
    for s in [&caller, &callee] {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
    }
    let mut ports = Vec::with_capacity(n);
    let mut callee_ports = Vec::with_capacity(n);
    for i in 0..n {
        let offer = sdp(caller_ip, 9000);
        let invite = format!(
            "INVITE sip:+15550{i}@{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {caller_ip}:5060;branch=z9hG4bKbench{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:bench@{caller_ip}>;tag=a{i}\r\nTo: <sip:+15550{i}@{sbc}>\r\nCall-ID: bench{i}@{caller_ip}\r\nCSeq: 1 INVITE\r\nContact: <sip:bench@{caller_ip}:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        );
        caller.send_to(invite.as_bytes(), sbc)?;
        let step = |what: &'static str| {
            move |e: io::Error| io::Error::new(e.kind(), format!("call {i}: {what}: {e}"))
        };
        let inv = recv_text(&callee, false).map_err(step("INVITE at the callee"))?;
        callee_ports.push(
            audio_port(inv.split("\r\n\r\n").nth(1).unwrap_or(""))
                .ok_or_else(|| io::Error::other(format!("no SDP port in: {inv}")))?,
        );
        let answer = sdp(&sink.ip().to_string(), sink.port());
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for l in inv.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
            let lower = l.to_ascii_lowercase();
            if lower.starts_with("via:")
                || lower.starts_with("from:")
                || lower.starts_with("call-id:")
                || lower.starts_with("cseq:")
            {
                ok.push_str(l);
                ok.push_str("\r\n");
            } else if lower.starts_with("to:") {
                ok.push_str(&format!("{l};tag=b{i}\r\n"));
            }
        }
        ok.push_str(&format!(
            "Contact: <sip:callee@{callee_ip}:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        ));
        callee.send_to(ok.as_bytes(), sbc)?;
        let ok = recv_text(&caller, true).map_err(step("200 at the caller"))?;
        let to = header(&ok, "To").unwrap_or("").to_owned();
        let body = ok.split("\r\n\r\n").nth(1).unwrap_or("");
        ports.push(
            audio_port(body).ok_or_else(|| io::Error::other(format!("no SDP port in: {ok}")))?,
        );
        let ack = format!(
            "ACK sip:{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {caller_ip}:5060;branch=z9hG4bKbenchack{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:bench@{caller_ip}>;tag=a{i}\r\nTo: {to}\r\nCall-ID: bench{i}@{caller_ip}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        caller.send_to(ack.as_bytes(), sbc)?;
        let _ = recv_text(&callee, false).map_err(step("ACK at the callee"))?;
    }
    Ok(SbcCalls {
        caller_ports: ports,
        callee_ports,
    })
}

/// The sbc's media ports of the calls [`sbc_calls`] set up.
#[derive(Debug)]
pub struct SbcCalls {
    /// Where the caller sends each call's RTP.
    pub caller_ports: Vec<u16>,
    /// Where the callee sends each call's RTP.
    pub callee_ports: Vec<u16>,
}

/// Minimal bencode for the ng protocol: dictionaries of strings.
fn bencode_dict(pairs: &[(&str, &str)]) -> String {
    let mut sorted: Vec<_> = pairs.to_vec();
    sorted.sort();
    let mut s = String::from("d");
    for (k, v) in sorted {
        s.push_str(&format!("{}:{}{}:{}", k.len(), k, v.len(), v));
    }
    s.push('e');
    s
}

/// The string value of `key` in a flat bencoded dictionary.
fn bencode_get(reply: &str, key: &str) -> Option<String> {
    let needle = format!("{}:{}", key.len(), key);
    let at = reply.find(&needle)? + needle.len();
    let rest = &reply[at..];
    let colon = rest.find(':')?;
    let len: usize = rest[..colon].parse().ok()?;
    rest.get(colon + 1..colon + 1 + len).map(str::to_owned)
}

fn ng(
    sock: &UdpSocket,
    ng: SocketAddr,
    cookie: &str,
    pairs: &[(&str, &str)],
) -> io::Result<String> {
    sock.send_to(format!("{cookie} {}", bencode_dict(pairs)).as_bytes(), ng)?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf)?;
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    let body = reply
        .split_once(' ')
        .map_or(reply.as_str(), |(_, b)| b)
        .to_owned();
    if bencode_get(&body, "result").as_deref() != Some("ok") {
        return Err(io::Error::other(format!("rtpengine: {body}")));
    }
    Ok(body)
}

/// Sets up `n` streams in rtpengine (offer from the caller, answer from the
/// callee pointing at `sink`); returns rtpengine's port facing the caller.
pub fn rtpengine_streams(
    ng_addr: SocketAddr,
    caller_ip: &str,
    sink: SocketAddr,
    n: usize,
) -> io::Result<Vec<u16>> {
    let sock = UdpSocket::bind(format!("{caller_ip}:0"))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut ports = Vec::with_capacity(n);
    for i in 0..n {
        let (call, from, to) = (format!("bench{i}"), format!("a{i}"), format!("b{i}"));
        let offer = sdp(caller_ip, 9000);
        ng(
            &sock,
            ng_addr,
            &format!("o{i}"),
            &[
                ("command", "offer"),
                ("call-id", &call),
                ("from-tag", &from),
                ("sdp", &offer),
            ],
        )?;
        let answer = sdp(&sink.ip().to_string(), sink.port());
        let reply = ng(
            &sock,
            ng_addr,
            &format!("a{i}"),
            &[
                ("command", "answer"),
                ("call-id", &call),
                ("from-tag", &from),
                ("to-tag", &to),
                ("sdp", &answer),
            ],
        )?;
        let sdp = bencode_get(&reply, "sdp").unwrap_or_default();
        ports.push(
            audio_port(&sdp).ok_or_else(|| {
                io::Error::other(format!("no port in rtpengine's answer: {reply}"))
            })?,
        );
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trip() {
        let d = bencode_dict(&[("sdp", "v=0"), ("command", "offer")]);
        assert_eq!(d, "d7:command5:offer3:sdp3:v=0e");
        assert_eq!(
            bencode_get("d6:result2:ok3:sdp3:v=0e", "sdp").as_deref(),
            Some("v=0")
        );
        assert_eq!(
            audio_port("v=0\r\nm=audio 30000 RTP/AVP 0\r\n"),
            Some(30000)
        );
    }
}
