//! SIPp's 3PCC twin connections, over which `<sendCmd>` and `<recvCmd>`
//! pass commands (each ended by an ESC byte, as SIPp ends them).
//!
//! - Classic mode (`-3pcc IP:PORT`): one TCP connection to the twin,
//!   read and written. The side whose first twin step is `<sendCmd>`
//!   connects; the other listens and waits for it.
//! - Extended mode (`-master NAME` or `-slave NAME`, with `-slave_cfg
//!   FILE` naming every instance's address): each instance listens at
//!   its own address and takes commands on the connections it accepts;
//!   it sends a peer's commands over a connection it opens to that peer.
//!   The master opens its connections before its first call (slaves are
//!   started first, as with SIPp); a slave opens its own when the first
//!   peer connects to it. One peer ending ends the run, as in SIPp.
//!
//! Thread 0 of the run owns the connections; the runtime polls their
//! sockets through its io_uring and this module reads and writes them
//! without blocking.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// SIPp's delimiter after each command.
pub const END: u8 = 0x1b;

/// How long a side keeps trying to reach a peer that is not listening yet.
const CONNECT_FOR: Duration = Duration::from_secs(10);

/// Which 3PCC mode, and the addresses it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// `-3pcc ADDR`: `connects` when the scenario's first twin step sends.
    Classic { addr: SocketAddr, connects: bool },
    /// `-master NAME` / `-slave NAME` with `-slave_cfg`.
    Extended {
        /// This instance's name.
        me: String,
        /// Where it listens (its own line of the file).
        listen: SocketAddr,
        /// The peers its `<sendCmd dest>`s name, with their addresses.
        dests: Vec<(String, SocketAddr)>,
        /// The master connects at once; a slave when first reached.
        master: bool,
    },
}

/// Reads a `-slave_cfg` file's text: one `NAME;HOST:PORT` per line. As
/// SIPp: lines without a `;` are skipped (blank lines, comments) and what
/// follows a second `;` is ignored; the port is required.
pub fn parse_slave_cfg(text: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut peers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some((name, rest)) = line.split_once(';') else {
            continue;
        };
        let name = name.trim();
        let addr = rest.split(';').next().unwrap_or("").trim();
        let bad = |why: &str| format!("line {}: \"{}\": {why}", n + 1, line.trim());
        if name.is_empty() {
            return Err(bad("no instance name before the ';'"));
        }
        let resolved = match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (host, port.parse::<u16>().unwrap_or(0))
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| bad(&format!("cannot resolve {host}")))?
            }
            _ => return Err(bad("expected NAME;HOST:PORT (the port is required)")),
        };
        if peers.iter().any(|(p, _)| p == name) {
            return Err(bad(&format!("{name} is named twice")));
        }
        peers.push((name.to_owned(), resolved));
    }
    Ok(peers)
}

/// One connection.
#[derive(Debug)]
struct Link {
    stream: TcpStream,
    /// Bytes read, up to the next command's end.
    input: Vec<u8>,
    /// Commands the socket did not take yet.
    output: Vec<u8>,
    /// Commands arrive on it (classic: the one; extended: accepted ones).
    /// What arrives on the others is not read as commands.
    commands: bool,
    /// Its read poll is in the ring.
    armed: bool,
}

impl Link {
    fn new(stream: TcpStream, commands: bool) -> io::Result<Link> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Link {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            commands,
            armed: false,
        })
    }
}

/// What [`Twins::pump`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// Everything is up.
    Open,
    /// A twin ended (or could not be reached): the run ends, as SIPp's
    /// does ("One of the twin instances has ended").
    Ended(String),
}

/// The twin connections of a run.
#[derive(Debug)]
pub struct Twins {
    listener: Option<TcpListener>,
    listener_armed: bool,
    links: Vec<Link>,
    /// Extended: the link each named peer's commands go on.
    by_name: Vec<(String, usize)>,
    /// Extended, a slave: the peers it opens connections to once the
    /// first peer connects to it.
    connect_later: Vec<(String, SocketAddr)>,
    /// Classic: the one link.
    classic: bool,
}

impl Twins {
    /// Opens what the mode needs before calls start: classic, the
    /// connection (connected, or the first accepted); extended, the
    /// listener and (master) the connections to every peer.
    pub fn open(setup: &Setup, stop: &AtomicBool) -> Result<Twins, String> {
        match setup {
            Setup::Classic { addr, connects } => {
                let stream = if *connects {
                    connect(*addr, stop).map_err(|e| format!("-3pcc {addr}: {e}"))?
                } else {
                    accept_one(*addr, stop).map_err(|e| format!("-3pcc {addr}: {e}"))?
                };
                let link = Link::new(stream, true).map_err(|e| format!("-3pcc {addr}: {e}"))?;
                Ok(Twins {
                    listener: None,
                    listener_armed: false,
                    links: vec![link],
                    by_name: Vec::new(),
                    connect_later: Vec::new(),
                    classic: true,
                })
            }
            Setup::Extended {
                me,
                listen,
                dests,
                master,
            } => {
                let listener = TcpListener::bind(listen)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| format!("-slave_cfg: {me} listens at {listen}: {e}"))?;
                let mut twins = Twins {
                    listener: Some(listener),
                    listener_armed: false,
                    links: Vec::new(),
                    by_name: Vec::new(),
                    connect_later: Vec::new(),
                    classic: false,
                };
                if *master {
                    twins.connect_all(dests, stop)?;
                } else {
                    twins.connect_later = dests.clone();
                }
                Ok(twins)
            }
        }
    }

    fn connect_all(
        &mut self,
        dests: &[(String, SocketAddr)],
        stop: &AtomicBool,
    ) -> Result<(), String> {
        for (name, addr) in dests {
            let stream =
                connect(*addr, stop).map_err(|e| format!("3PCC peer {name} at {addr}: {e}"))?;
            let link =
                Link::new(stream, false).map_err(|e| format!("3PCC peer {name} at {addr}: {e}"))?;
            self.by_name.push((name.clone(), self.links.len()));
            self.links.push(link);
        }
        Ok(())
    }

    /// The sockets whose read poll is not in the ring, each with its
    /// token for [`Twins::polled`]; they count as armed from here.
    pub fn unarmed(&mut self) -> Vec<(RawFd, u64)> {
        let mut out = Vec::new();
        if let Some(l) = &self.listener
            && !self.listener_armed
        {
            self.listener_armed = true;
            out.push((l.as_raw_fd(), 0));
        }
        for (i, link) in self.links.iter_mut().enumerate() {
            if !link.armed {
                link.armed = true;
                out.push((link.stream.as_raw_fd(), i as u64 + 1));
            }
        }
        out
    }

    /// A read poll completed.
    pub fn polled(&mut self, token: u64) {
        match token {
            0 => self.listener_armed = false,
            t => {
                if let Some(link) = usize::try_from(t - 1)
                    .ok()
                    .and_then(|i| self.links.get_mut(i))
                {
                    link.armed = false;
                }
            }
        }
    }

    /// Takes the peers that connected, reads every connection and gives
    /// each whole command (its ESC taken off) to `on_command`.
    pub fn pump(&mut self, stop: &AtomicBool, mut on_command: impl FnMut(&[u8])) -> Pumped {
        if let Some(l) = &self.listener {
            loop {
                match l.accept() {
                    Ok((s, _)) => match Link::new(s, true) {
                        Ok(link) => self.links.push(link),
                        Err(e) => return Pumped::Ended(format!("3PCC peer connection: {e}")),
                    },
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            // A slave reaches its own peers once one reached it.
            let accepted = self.links.iter().any(|l| l.commands);
            if accepted && !self.connect_later.is_empty() {
                let dests = std::mem::take(&mut self.connect_later);
                if let Err(e) = self.connect_all(&dests, stop) {
                    return Pumped::Ended(e);
                }
            }
        }
        let mut buf = [0u8; 16384];
        for link in &mut self.links {
            loop {
                match link.stream.read(&mut buf) {
                    Ok(0) => return Pumped::Ended("one of the twin instances has ended".into()),
                    Ok(n) if link.commands => {
                        link.input.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Pumped::Ended(format!("a twin connection failed: {e}")),
                }
            }
            while let Some(p) = link.input.iter().position(|&b| b == END) {
                on_command(link.input.get(..p).unwrap_or(&[]));
                link.input.drain(..=p);
            }
        }
        Pumped::Open
    }

    /// Queues a command for `dest` (extended mode) or the twin (classic);
    /// false when there is no such peer.
    pub fn send(&mut self, dest: Option<&str>, msg: &[u8]) -> bool {
        let at = match (self.classic, dest) {
            (true, _) => Some(0),
            (false, Some(d)) => self
                .by_name
                .iter()
                .find_map(|(n, i)| (n == d).then_some(*i)),
            (false, None) => None,
        };
        let Some(link) = at.and_then(|i| self.links.get_mut(i)) else {
            return false;
        };
        link.output.extend_from_slice(msg);
        link.output.push(END);
        true
    }

    /// Writes what the sockets take of the queued commands.
    pub fn flush(&mut self) {
        for link in &mut self.links {
            while !link.output.is_empty() {
                match link.stream.write(&link.output) {
                    Ok(n) if n > 0 => {
                        link.output.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => break,
                }
            }
        }
    }

    /// The run ends: what is still queued is written, blocking for
    /// `limit` at most on each connection.
    pub fn finish(&mut self, limit: Duration) {
        for link in &mut self.links {
            if link.output.is_empty() {
                continue;
            }
            let _ = link.stream.set_nonblocking(false);
            let _ = link.stream.set_write_timeout(Some(limit));
            let _ = link.stream.write_all(&link.output);
            link.output.clear();
        }
    }
}

/// The connections close in SIPp's order, a moment apart: those commands
/// came in on first, then those this side opened. (Stock sipp 3.6.1 as a
/// slave aborts on an assertion when both ends reach it in one poll: the
/// first one it handles closes the other's socket.)
impl Drop for Twins {
    fn drop(&mut self) {
        let (accepted, opened): (Vec<&Link>, Vec<&Link>) =
            self.links.iter().partition(|l| l.commands);
        for link in &accepted {
            let _ = link.stream.shutdown(std::net::Shutdown::Both);
        }
        if !accepted.is_empty() && !opened.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        for link in &opened {
            let _ = link.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Connects to `addr`, trying for [`CONNECT_FOR`] (the peer may still be
/// starting) unless the run is stopped.
fn connect(addr: SocketAddr, stop: &AtomicBool) -> io::Result<TcpStream> {
    let deadline = Instant::now() + CONNECT_FOR;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline || stop.load(Ordering::Relaxed) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot connect to the twin: {e}"),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Listens at `addr` and takes the first connection (until the run is
/// stopped).
fn accept_one(addr: SocketAddr, stop: &AtomicBool) -> io::Result<TcpStream> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    loop {
        match l.accept() {
            Ok((s, _)) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    return Err(io::Error::new(e.kind(), "no twin connected"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn slave_cfg_lines_are_read_as_sipp_reads_them() {
        let text =
            "# instances\nm;127.0.0.1:6000\n\ns1;127.0.0.2:6001;ignored\r\n  s2 ; [::1]:6002\n";
        let peers = parse_slave_cfg(text).unwrap();
        assert_eq!(
            peers,
            vec![
                ("m".to_owned(), "127.0.0.1:6000".parse().unwrap()),
                ("s1".to_owned(), "127.0.0.2:6001".parse().unwrap()),
                ("s2".to_owned(), "[::1]:6002".parse().unwrap()),
            ]
        );
        let e = parse_slave_cfg("m;127.0.0.1:6000\ns1;127.0.0.2\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("port is required"),
            "{e}"
        );
        let e = parse_slave_cfg(";127.0.0.1:6000\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("name"), "{e}");
        let e = parse_slave_cfg("m;127.0.0.1:6000\nm;127.0.0.1:6001\n").unwrap_err();
        assert!(e.contains("named twice"), "{e}");
    }

    /// A master and a slave on loopback: the master connects at once, the
    /// slave connects back once reached; commands go by name, arrive
    /// whole, split at their ESC, and a peer's end is seen.
    #[test]
    fn extended_peers_exchange_commands_and_see_each_other_end() {
        let stop = AtomicBool::new(false);
        let m_at: SocketAddr = "127.176.2.1:26001".parse().unwrap();
        let s_at: SocketAddr = "127.176.2.2:26002".parse().unwrap();
        let mut slave = Twins::open(
            &Setup::Extended {
                me: "s1".into(),
                listen: s_at,
                dests: vec![("m".into(), m_at)],
                master: false,
            },
            &stop,
        )
        .unwrap();
        let mut master = Twins::open(
            &Setup::Extended {
                me: "m".into(),
                listen: m_at,
                dests: vec![("s1".into(), s_at)],
                master: true,
            },
            &stop,
        )
        .unwrap();
        assert!(!master.send(Some("s2"), b"x"), "no such peer");
        assert!(
            !master.send(None, b"x"),
            "extended commands name their peer"
        );
        assert!(master.send(Some("s1"), b"Call-ID: 1\r\n"));
        assert!(master.send(Some("s1"), b"Call-ID: 2\r\n"));
        master.flush();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 2 && Instant::now() < deadline {
            assert_eq!(slave.pump(&stop, |c| got.push(c.to_vec())), Pumped::Open);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            got,
            vec![b"Call-ID: 1\r\n".to_vec(), b"Call-ID: 2\r\n".to_vec()]
        );
        // The slave connected back when reached: its answer arrives.
        assert!(slave.send(Some("m"), b"From: s1\r\n"));
        slave.flush();
        let mut back = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while back.is_empty() && Instant::now() < deadline {
            assert_eq!(master.pump(&stop, |c| back.push(c.to_vec())), Pumped::Open);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(back, vec![b"From: s1\r\n".to_vec()]);
        // Each side polls its listener and its connections.
        assert_eq!(master.unarmed().len(), 3);
        assert!(master.unarmed().is_empty());
        master.polled(1);
        assert_eq!(master.unarmed().len(), 1);
        // The master ends: the slave sees it.
        drop(master);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut end = Pumped::Open;
        while end == Pumped::Open && Instant::now() < deadline {
            end = slave.pump(&stop, |_| {});
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(end, Pumped::Ended(_)), "{end:?}");
    }
}
