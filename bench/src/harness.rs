//! Process helpers the whole-system benchmarks share.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `GET path` from the sbc's metrics listener at `addr`: the whole
/// response, or `None` when nothing answered.
fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    Some(b)
}

/// Whether the sbc's metrics listener at `addr` answers `/health` with 200
/// (it does once every shard is running).
pub fn healthy(addr: &str) -> bool {
    get(addr, "/health").is_some_and(|b| b.starts_with("HTTP/1.1 200"))
}

/// The sbc's `/metrics` text (without the HTTP head), when it answered 200.
pub fn scrape(addr: &str) -> Option<String> {
    let b = get(addr, "/metrics")?;
    if !b.starts_with("HTTP/1.1 200") {
        return None;
    }
    b.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// Waits up to `limit` for [`healthy`]; false when it never was.
pub fn wait_healthy(addr: &str, limit: Duration) -> bool {
    let t0 = Instant::now();
    while !healthy(addr) {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
