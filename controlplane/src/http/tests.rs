use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use sbc_core::stats::{LoopState, ShardStats};

use super::spawn_metrics_server;
use crate::config::{Config, StatsRegistry};
use crate::metrics::tests::{parse_exposition, value};
use crate::metrics::{CONTENT_TYPE, Metrics};

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request over a plain socket, as a scraper would send it.
fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn metrics() -> Arc<Metrics> {
    let config = Config::embedded_default().unwrap();
    let policy = Arc::new(ArcSwap::from_pointee(
        config.compile(&StatsRegistry::new(), 3),
    ));
    let shard = Arc::new(ShardStats::default());
    shard.messages_in.store(42, Ordering::Relaxed);
    Arc::new(Metrics::new(vec![shard], policy))
}

#[test]
fn serves_parseable_metrics_and_health_then_stops() {
    let server = spawn_metrics_server("127.0.0.1:0".parse().unwrap(), metrics()).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let reply = request(addr, "GET", "/metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .headers
            .contains(&format!("content-type: {CONTENT_TYPE}")),
        "{}",
        reply.headers
    );
    assert!(reply.body.ends_with("# EOF\n"));
    let samples = parse_exposition(&reply.body);
    assert_eq!(
        value(
            &samples,
            "sbc_sip_messages_received_total",
            &[("shard", "0")]
        ),
        Some(42.0)
    );
    assert_eq!(value(&samples, "sbc_config_version", &[]), Some(3.0));

    let health = request(addr, "GET", "/health");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    assert_eq!(request(addr, "GET", "/nope").status, 404);
    assert_eq!(request(addr, "POST", "/metrics").status, 405);

    server.stop();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after stop"
    );
}

#[test]
fn bind_error_names_the_address() {
    let first = spawn_metrics_server("127.0.0.1:0".parse().unwrap(), metrics()).unwrap();
    let addr = first.local_addr();
    let err = spawn_metrics_server(addr, metrics()).unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

/// BRIEF §8/issue 12: a shard that died makes /health fail (503, naming
/// it) and shows in `sbc_shard_up`, instead of a silent lost share.
#[test]
fn health_fails_once_a_shard_has_stopped() {
    let config = Config::embedded_default().unwrap();
    let policy = Arc::new(ArcSwap::from_pointee(
        config.compile(&StatsRegistry::new(), 1),
    ));
    let shards: Vec<Arc<ShardStats>> = (0..2).map(|_| Arc::default()).collect();
    for s in &shards {
        s.set_loop_state(LoopState::Running);
    }
    let metrics = Arc::new(Metrics::new(shards.clone(), policy));
    let server = spawn_metrics_server("127.0.0.1:0".parse().unwrap(), metrics).unwrap();
    let addr = server.local_addr();
    assert_eq!(request(addr, "GET", "/health").status, 200);

    shards[1].set_loop_state(LoopState::Stopped);
    let health = request(addr, "GET", "/health");
    assert_eq!(health.status, 503);
    assert!(health.body.contains("shard stopped: 1"), "{}", health.body);
    let samples = parse_exposition(&request(addr, "GET", "/metrics").body);
    assert_eq!(
        value(&samples, "sbc_shard_up", &[("shard", "0")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "sbc_shard_up", &[("shard", "1")]),
        Some(0.0)
    );
    server.stop();
}
