//! Process helpers the whole-system benchmarks share.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Whether the sbc's metrics listener at `addr` answers `/health` with 200
/// (it does once every shard is running).
pub fn healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = write!(
        s,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    b.starts_with("HTTP/1.1 200")
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
