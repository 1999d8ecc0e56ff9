//! Media sockets: captures played by `play_pcap_*` leave from the media
//! address's ports (one socket per port for the whole run, shared by the
//! load threads, as SIPp sends every call's media from the same ports),
//! and `-rtp_echo` sends what arrives on the media port (and port + 2, for
//! video) back to where it came from.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The run's media sockets, bound on first use.
#[derive(Debug)]
pub struct MediaSockets {
    ip: IpAddr,
    bound: Mutex<HashMap<u16, Arc<UdpSocket>>>,
}

impl MediaSockets {
    pub fn new(ip: IpAddr) -> Self {
        MediaSockets {
            ip,
            bound: Mutex::new(HashMap::new()),
        }
    }

    /// The socket on `port` of the media address (bound now if it is not).
    pub fn socket(&self, port: u16) -> io::Result<Arc<UdpSocket>> {
        let mut bound = self
            .bound
            .lock()
            .map_err(|_| io::Error::other("media sockets poisoned"))?;
        if let Some(s) = bound.get(&port) {
            return Ok(Arc::clone(s));
        }
        let s = UdpSocket::bind(SocketAddr::new(self.ip, port))?;
        let _ = socket2::SockRef::from(&s).set_send_buffer_size(4 << 20);
        let s = Arc::new(s);
        bound.insert(port, Arc::clone(&s));
        Ok(s)
    }
}

/// A load thread's handle on the media sockets (its own cache of them, so
/// the shared table is only locked for a port it has not used yet).
#[derive(Debug)]
pub struct MediaSender {
    shared: Arc<MediaSockets>,
    cache: HashMap<u16, Arc<UdpSocket>>,
}

impl MediaSender {
    pub fn new(shared: Arc<MediaSockets>) -> Self {
        MediaSender {
            shared,
            cache: HashMap::new(),
        }
    }

    /// Sends one datagram from `from_port` without waiting; false when it
    /// could not leave (no socket on that port, a full send buffer...).
    pub fn send(&mut self, from_port: u16, dst: SocketAddr, bytes: &[u8]) -> bool {
        let sock = match self.cache.get(&from_port) {
            Some(s) => s,
            None => match self.shared.socket(from_port) {
                Ok(s) => self.cache.entry(from_port).or_insert(s),
                Err(_) => return false,
            },
        };
        socket2::SockRef::from(&**sock)
            .send_to_with_flags(bytes, &dst.into(), libc::MSG_DONTWAIT)
            .is_ok()
    }
}

/// `-rtp_echo`: a thread per echoed port.
#[derive(Debug)]
pub struct Echo {
    pub packets: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// How often an echo thread looks at its stop flag.
const ECHO_POLL: Duration = Duration::from_millis(50);

impl Echo {
    /// Starts echoing on `ports` of the media address.
    pub fn start(sockets: &MediaSockets, ports: &[u16]) -> io::Result<Self> {
        let packets = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            let sock = sockets.socket(port)?;
            sock.set_read_timeout(Some(ECHO_POLL))?;
            let _ = socket2::SockRef::from(&*sock).set_recv_buffer_size(4 << 20);
            let (packets, bytes, stop) =
                (Arc::clone(&packets), Arc::clone(&bytes), Arc::clone(&stop));
            let t = std::thread::Builder::new()
                .name(format!("sbc-load-echo-{port}"))
                .spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((n, from)) = sock.recv_from(&mut buf) else {
                            continue;
                        };
                        let data = buf.get(..n).unwrap_or(&[]);
                        if sock.send_to(data, from).is_ok() {
                            packets.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                })?;
            threads.push(t);
        }
        Ok(Echo {
            packets,
            bytes,
            stop,
            threads,
        })
    }

    /// Stops the echo threads; returns the packets and bytes echoed.
    pub fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn media_leaves_from_the_asked_port_and_is_echoed_back() {
        let ip: IpAddr = "127.176.1.1".parse().unwrap();
        let sockets = Arc::new(MediaSockets::new(ip));
        let echo = Echo::start(&sockets, &[41_000]).unwrap();
        let peer = UdpSocket::bind("127.176.1.2:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A playback from port 41002 arrives from there.
        let mut sender = MediaSender::new(Arc::clone(&sockets));
        assert!(sender.send(41_002, peer.local_addr().unwrap(), b"rtp"));
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"rtp");
        assert_eq!(from, SocketAddr::new(ip, 41_002));
        // What reaches the echoed port comes back to its sender.
        peer.send_to(b"hello", (ip, 41_000)).unwrap();
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from, SocketAddr::new(ip, 41_000));
        assert_eq!(echo.stop(), (1, 5));
    }
}
