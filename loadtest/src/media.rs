//! Media sockets: captures played by `play_pcap_*` leave from the media
//! address's ports (one socket per port for the whole run, shared by the
//! load threads, as SIPp sends every call's media from the same ports),
//! and `-rtp_echo` sends what arrives on the media port (and port + 2, for
//! video) back to where it came from.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::MediaOut;

/// The run's media sockets, bound on first use.
#[derive(Debug)]
pub struct MediaSockets {
    ip: IpAddr,
    bound: Mutex<HashMap<u16, Arc<UdpSocket>>>,
    /// `-rtp_buffsize`: each socket's send and receive buffer (bytes).
    buffers: Option<usize>,
}

impl MediaSockets {
    pub fn new(ip: IpAddr) -> Self {
        MediaSockets {
            ip,
            bound: Mutex::new(HashMap::new()),
            buffers: None,
        }
    }

    /// Sockets with `bytes` of send and receive buffer (`-rtp_buffsize`).
    pub fn with_buffers(mut self, bytes: Option<usize>) -> Self {
        self.buffers = bytes;
        self
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
        let sock = socket2::SockRef::from(&s);
        match self.buffers {
            // As SIPp: a size the kernel refuses is an error.
            Some(n) => {
                sock.set_send_buffer_size(n)?;
                sock.set_recv_buffer_size(n)?;
            }
            None => {
                let _ = sock.set_send_buffer_size(4 << 20);
                let _ = sock.set_recv_buffer_size(4 << 20);
            }
        }
        let s = Arc::new(s);
        bound.insert(port, Arc::clone(&s));
        Ok(s)
    }
}

/// Most datagrams in one UDP GSO send, and most bytes.
const GSO_SEGMENTS: usize = 64;
const GSO_BYTES: usize = 60_000;
/// Most messages in one `sendmmsg`.
const BATCH: usize = 256;

/// A load thread's handle on the media sockets (its own cache of them, so
/// the shared table is only locked for a port it has not used yet).
#[derive(Debug)]
pub struct MediaSender {
    shared: Arc<MediaSockets>,
    cache: HashMap<u16, Arc<UdpSocket>>,
    /// Off once the kernel refuses a GSO send.
    gso: bool,
}

impl MediaSender {
    pub fn new(shared: Arc<MediaSockets>) -> Self {
        MediaSender {
            shared,
            cache: HashMap::new(),
            gso: true,
        }
    }

    /// Sends a batch of datagrams: those from one port go in `sendmmsg`
    /// calls, and those of one size to one destination (RTP of one stream,
    /// or every call's when they all go to one peer port) in UDP GSO sends
    /// within them; each stays its own datagram on the wire, in order per
    /// destination. Returns how many could not leave.
    pub fn send_all(&mut self, out: &[MediaOut], buf: &[u8]) -> u64 {
        let mut failed = 0;
        let mut order: Vec<usize> = (0..out.len()).collect();
        // By port, then destination; stable, so each stream keeps its
        // order (runs of one size within it go in one GSO send).
        order.sort_by_key(|&i| (out[i].from_port, out[i].dst));
        let mut at = 0;
        while at < order.len() {
            let port = out[order[at]].from_port;
            let end = order[at..]
                .iter()
                .position(|&i| out[i].from_port != port)
                .map_or(order.len(), |n| at + n);
            let Ok(sock) = self.socket(port) else {
                failed += (end - at) as u64;
                at = end;
                continue;
            };
            failed += self.send_port(&sock, out, buf, &order[at..end]);
            at = end;
        }
        failed
    }

    /// The socket of media port `port` (bound now if no thread has yet).
    fn socket(&mut self, port: u16) -> io::Result<Arc<UdpSocket>> {
        if let Some(s) = self.cache.get(&port) {
            return Ok(Arc::clone(s));
        }
        let s = self.shared.socket(port)?;
        Ok(Arc::clone(self.cache.entry(port).or_insert(s)))
    }

    /// Reads up to `max` datagrams waiting on media port `port` without
    /// waiting, handing each (its sender and bytes) to `take`.
    pub fn receive(
        &mut self,
        port: u16,
        buf: &mut [u8],
        max: usize,
        mut take: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<()> {
        let sock = self.socket(port)?;
        for _ in 0..max {
            match recv_now(&sock, buf)? {
                Some((n, from)) => take(from, buf.get(..n).unwrap_or_default()),
                None => break,
            }
        }
        Ok(())
    }

    /// `send_all` for the datagrams `idx` (sorted) of one socket.
    fn send_port(&mut self, sock: &UdpSocket, out: &[MediaOut], buf: &[u8], idx: &[usize]) -> u64 {
        // Groups: runs of one destination and size, at most GSO_SEGMENTS.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        while i < idx.len() {
            let first = &out[idx[i]];
            let mut n = 1;
            while self.gso
                && first.len > 0
                && i + n < idx.len()
                && n < GSO_SEGMENTS
                && (n + 1) * first.len <= GSO_BYTES
                && out[idx[i + n]].dst == first.dst
                && out[idx[i + n]].len == first.len
            {
                n += 1;
            }
            groups.push((i, n));
            i += n;
        }
        let mut failed = 0;
        for chunk in groups.chunks(BATCH) {
            failed += self.send_groups(sock, out, buf, idx, chunk);
        }
        failed
    }

    fn send_groups(
        &mut self,
        sock: &UdpSocket,
        out: &[MediaOut],
        buf: &[u8],
        idx: &[usize],
        groups: &[(usize, usize)],
    ) -> u64 {
        use std::os::fd::AsRawFd;
        let iovs: Vec<libc::iovec> = groups
            .iter()
            .flat_map(|&(start, n)| &idx[start..start + n])
            .map(|&k| {
                let m = &out[k];
                let data = buf.get(m.start..m.start + m.len).unwrap_or(&[]);
                libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                }
            })
            .collect();
        let names: Vec<socket2::SockAddr> = groups
            .iter()
            .map(|&(start, _)| socket2::SockAddr::from(out[idx[start]].dst))
            .collect();
        // One cmsg (UDP_SEGMENT, a u16) per group of several datagrams.
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
        let mut control = vec![0u8; space * groups.len()];
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(groups.len());
        let mut iov_at = 0;
        for (g, &(start, n)) in groups.iter().enumerate() {
            // SAFETY: an all-zero mmsghdr is a valid empty message.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = names[g].as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = names[g].len();
            h.msg_hdr.msg_iov = iovs[iov_at..].as_ptr() as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = n;
            iov_at += n;
            if n > 1 {
                let ctl = &mut control[g * space..(g + 1) * space];
                h.msg_hdr.msg_control = ctl.as_mut_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_controllen = space;
                // SAFETY: the control buffer is CMSG_SPACE(2) bytes, so
                // CMSG_FIRSTHDR is non-null and its data holds a u16.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
                    let seg = u16::try_from(out[idx[start]].len).unwrap_or(u16::MAX);
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
                }
            }
            msgs.push(h);
        }
        let mut sent = 0;
        let mut failed = 0u64;
        while sent < msgs.len() {
            // SAFETY: every mmsghdr points at names, iovecs, payloads and
            // control buffers that live until this call returns.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    u32::try_from(msgs.len() - sent).unwrap_or(u32::MAX),
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
                continue;
            }
            // The message at `sent` failed: a GSO group the kernel refuses
            // (no GSO on the device, a segment over the MTU) turns GSO off,
            // the next batches go datagram by datagram; a full buffer does
            // not. Its datagrams, or the datagram, count as failed.
            let (_, n) = groups[sent];
            let refused = matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EINVAL | libc::EIO | libc::EOPNOTSUPP)
            );
            if n > 1 && refused {
                self.gso = false;
            }
            failed += n as u64;
            sent += 1;
        }
        failed
    }
}

/// One datagram waiting on `sock` (its length and sender), `None` when
/// none is: `MSG_DONTWAIT`, so the socket stays blocking for the threads
/// that share it (`-rtp_echo`'s wait on it).
fn recv_now(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(sock);
    // SAFETY: `recvfrom` writes at most `buf.len()` bytes into `buf`,
    // which is valid and exclusively borrowed, and at most `*len` bytes of
    // address into the storage `try_init` gives (zeroed, its size in
    // `len`); `try_init` reads the address only after it succeeded.
    let r = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let n = libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                storage.cast(),
                len,
            );
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    };
    match r {
        Ok((n, addr)) => Ok(addr.as_socket().map(|a| (n, a))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
        // A port unreachable from an earlier send: nothing to read.
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `UDP_SEGMENT` (linux/udp.h).
const UDP_SEGMENT: libc::c_int = 103;

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
    /// Starts echoing on `ports` of the media address; a packet longer
    /// than `bufsize` (`-mb`) is cut to it, as SIPp's echo does.
    pub fn start(sockets: &MediaSockets, ports: &[u16], bufsize: usize) -> io::Result<Self> {
        let packets = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            let sock = sockets.socket(port)?;
            sock.set_read_timeout(Some(ECHO_POLL))?;
            let (packets, bytes, stop) =
                (Arc::clone(&packets), Arc::clone(&bytes), Arc::clone(&stop));
            let t = std::thread::Builder::new()
                .name(format!("sbc-load-echo-{port}"))
                .spawn(move || {
                    let mut buf = vec![0u8; bufsize.max(1)];
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

    /// Queues `packets` (from port, destination, bytes) as the engine does.
    fn batch(packets: &[(u16, SocketAddr, &[u8])]) -> (Vec<MediaOut>, Vec<u8>) {
        let mut buf = Vec::new();
        let out = packets
            .iter()
            .map(|&(from_port, dst, bytes)| {
                let start = buf.len();
                buf.extend_from_slice(bytes);
                MediaOut {
                    from_port,
                    dst,
                    start,
                    len: bytes.len(),
                }
            })
            .collect();
        (out, buf)
    }

    #[test]
    fn media_leaves_from_the_asked_ports_in_order_and_is_echoed_back() {
        let ip: IpAddr = "127.176.1.1".parse().unwrap();
        let sockets = Arc::new(MediaSockets::new(ip));
        let echo = Echo::start(&sockets, &[41_000], 2048).unwrap();
        let (a, b) = (
            UdpSocket::bind("127.176.1.2:0").unwrap(),
            UdpSocket::bind("127.176.1.3:0").unwrap(),
        );
        for p in [&a, &b] {
            p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let (da, db) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // Two streams to `a` (RTP from 41002, a same-size run that goes
        // as one GSO send, and RTCP from 41003) and one to `b` whose first
        // packet is longer than its second, interleaved as a playback
        // queues them.
        let (out, buf) = batch(&[
            (41_002, da, b"rtp-0"),
            (41_003, da, b"rtcp-0"),
            (41_002, db, b"other-longer-0"),
            (41_002, da, b"rtp-1"),
            (41_002, da, b"rtp-2"),
            (41_002, db, b"other-1"),
            (41_002, da, b"rtp-3"),
        ]);
        let mut sender = MediaSender::new(Arc::clone(&sockets));
        assert_eq!(sender.send_all(&out, &buf), 0);
        let got = |p: &UdpSocket, n: usize| -> Vec<(String, u16)> {
            let mut v = Vec::new();
            let mut data = [0u8; 64];
            for _ in 0..n {
                let (len, from) = p.recv_from(&mut data).unwrap();
                assert_eq!(from.ip(), ip);
                v.push((
                    String::from_utf8_lossy(&data[..len]).into_owned(),
                    from.port(),
                ));
            }
            v
        };
        let mut at_a = got(&a, 5);
        // RTCP comes from its own socket: only each stream's order counts.
        let rtcp = at_a.iter().position(|(d, _)| d == "rtcp-0").unwrap();
        assert_eq!(at_a.remove(rtcp), ("rtcp-0".into(), 41_003));
        let want: Vec<(String, u16)> = (0..4).map(|i| (format!("rtp-{i}"), 41_002)).collect();
        assert_eq!(at_a, want, "one datagram each, in order");
        assert_eq!(
            got(&b, 2),
            vec![
                ("other-longer-0".into(), 41_002),
                ("other-1".into(), 41_002)
            ],
            "a stream's order holds across sizes"
        );
        assert!(sender.gso, "loopback takes GSO sends");
        // What reaches the echoed port comes back to its sender.
        a.send_to(b"hello", (ip, 41_000)).unwrap();
        let mut data = [0u8; 64];
        let (n, from) = a.recv_from(&mut data).unwrap();
        assert_eq!(&data[..n], b"hello");
        assert_eq!(from, SocketAddr::new(ip, 41_000));
        assert_eq!(echo.stop(), (1, 5));
    }

    #[test]
    fn waiting_datagrams_are_read_without_blocking() {
        let ip: IpAddr = "127.176.1.6".parse().unwrap();
        let mut sender = MediaSender::new(Arc::new(MediaSockets::new(ip)));
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        // Nothing waits: it returns at once (the port is bound now).
        sender
            .receive(41_020, &mut buf, 8, |from, d| got.push((from, d.to_vec())))
            .unwrap();
        assert!(got.is_empty());
        let p = UdpSocket::bind("127.176.1.7:0").unwrap();
        for d in [&b"one"[..], b"two", b"three"] {
            p.send_to(d, (ip, 41_020)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        // At most `max` a call; the rest waits for the next.
        sender
            .receive(41_020, &mut buf, 2, |from, d| got.push((from, d.to_vec())))
            .unwrap();
        sender
            .receive(41_020, &mut buf, 8, |from, d| got.push((from, d.to_vec())))
            .unwrap();
        let from = p.local_addr().unwrap();
        assert_eq!(
            got,
            vec![
                (from, b"one".to_vec()),
                (from, b"two".to_vec()),
                (from, b"three".to_vec())
            ]
        );
    }

    #[test]
    fn the_echo_cuts_packets_to_its_buffer_and_sockets_take_the_asked_buffers() {
        let ip: IpAddr = "127.176.1.4".parse().unwrap();
        let sockets = MediaSockets::new(ip).with_buffers(Some(65_536));
        let s = sockets.socket(41_010).unwrap();
        // Linux doubles what it is asked for (bookkeeping included).
        let sock = socket2::SockRef::from(&*s);
        assert_eq!(sock.recv_buffer_size().unwrap(), 2 * 65_536);
        assert_eq!(sock.send_buffer_size().unwrap(), 2 * 65_536);
        // -mb 100: a 300-byte packet comes back as its first 100 bytes.
        let echo = Echo::start(&sockets, &[41_012], 100).unwrap();
        let p = UdpSocket::bind("127.176.1.5:0").unwrap();
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sent: Vec<u8> = (0..300u16).map(|i| (i % 251) as u8).collect();
        p.send_to(&sent, (ip, 41_012)).unwrap();
        let mut data = [0u8; 512];
        let n = p.recv(&mut data).unwrap();
        assert_eq!(&data[..n], &sent[..100]);
        assert_eq!(echo.stop(), (1, 100));
    }
}
