//! SIPp's TCP and TLS transports (`-t t1`, `-t tn`, `-t l1`, `-t ln`)
//! for one load thread: the connections (with rustls on each for TLS),
//! their framing (Content-Length, RFC 3261 §18.3, with `sbc_core`'s
//! stream decoder) and their output.
//!
//! A callee listens (each thread on the same port, `SO_REUSEPORT`) and
//! answers each message on the connection it came from; the engine knows
//! a connection by its peer's address. A caller opens one connection for
//! all its calls (`t1`) or one per call, closed when the call ends
//! (`tn`); its calls' messages all come from the remote address. The
//! runtime polls the sockets through its io_uring; this module reads and
//! writes them without blocking.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use sbc_core::sip::stream::{Frame, StreamDecoder, StreamLimits};

use crate::stats::FailReason;
use crate::tls::TlsSetup;

/// One connection per thread or one per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-t t1`.
    One,
    /// `-t tn`.
    PerCall,
}

/// A connection.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    decoder: StreamDecoder,
    /// Bytes the socket did not take yet.
    out: Vec<u8>,
    /// Its non-blocking connect is under way (output waits for it).
    connecting: bool,
    /// It is on the list of connections with output to write.
    queued: bool,
    /// Its read poll, and its write poll (while output waits), are in
    /// the ring.
    armed_in: bool,
    armed_out: bool,
    /// Bumped when the slot is reused, so a late poll is recognised (the
    /// ring's user data carries these 8 bits).
    generation: u8,
    /// `tn`: the call it carries.
    call: Option<u64>,
    /// TLS (`l1`, `ln`): the session the bytes go through.
    tls: Option<Box<rustls::Connection>>,
}

/// The thread's TCP side.
#[derive(Debug)]
pub struct Streams {
    mode: Mode,
    listener: TcpListener,
    /// A caller's destination, and the address its sockets bind.
    remote: Option<SocketAddr>,
    local_ip: IpAddr,
    conns: Vec<Option<Conn>>,
    generations: Vec<u8>,
    free: Vec<usize>,
    /// Callee: each connection by its peer; caller `t1`: the one.
    by_peer: HashMap<SocketAddr, usize>,
    /// Caller `tn`: each call's connection.
    by_call: HashMap<u64, usize>,
    /// The listener's poll is in the ring (or accepting waits for a
    /// descriptor to be freed).
    pub listener_armed: bool,
    /// Out of descriptors: no accepting until a connection closes.
    accept_blocked: bool,
    buf: Vec<u8>,
    /// Messages that had no connection to go on, or whose connection
    /// broke.
    pub errors: u64,
    /// Connections with output queued since the last
    /// [`Streams::flush_queued`].
    queued: Vec<usize>,
    /// Connections that could not open or were lost since the runtime
    /// last looked: (peer, the `tn` call, why); their calls fail.
    pub lost: Vec<(SocketAddr, Option<u64>, FailReason)>,
    /// TLS on every connection (`-t l1`, `-t ln`).
    tls: Option<Arc<TlsSetup>>,
}

impl Streams {
    /// A callee's side: `listener` (non-blocking after this).
    pub fn listening(listener: TcpListener, mode: Mode) -> io::Result<Self> {
        Self::new(mode, listener, None)
    }

    /// A thread's side: it accepts connections on `listener` (a caller
    /// too: a peer may open one to reach it) and, with `remote`, opens
    /// its own there from the listener's address.
    pub fn new(mode: Mode, listener: TcpListener, remote: Option<SocketAddr>) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let local_ip = listener.local_addr()?.ip();
        Ok(Streams {
            mode,
            listener,
            remote,
            local_ip,
            conns: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            by_call: HashMap::new(),
            listener_armed: false,
            accept_blocked: false,
            buf: vec![0; 65_536],
            errors: 0,
            queued: Vec::new(),
            lost: Vec::new(),
            tls: None,
        })
    }

    /// Runs TLS on every connection (`-t l1`, `-t ln`).
    pub fn with_tls(mut self, tls: Arc<TlsSetup>) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// The polls to put in the ring: (slot, generation, socket, for
    /// writing); each is marked armed.
    pub fn unarmed(&mut self) -> Vec<(usize, u8, &TcpStream, bool)> {
        let mut polls = Vec::new();
        for (i, c) in self.conns.iter_mut().enumerate() {
            let Some(c) = c.as_mut() else { continue };
            let read = !c.armed_in;
            let write = !c.armed_out
                && (!c.out.is_empty()
                    || c.connecting
                    || c.tls.as_ref().is_some_and(|t| t.wants_write()));
            c.armed_in = true;
            c.armed_out |= write;
            if read {
                polls.push((i, c.generation, &c.stream, false));
            }
            if write {
                polls.push((i, c.generation, &c.stream, true));
            }
        }
        polls
    }

    /// Takes the connections the listener has ready.
    pub fn accept(&mut self) {
        self.listener_armed = false;
        loop {
            match self.listener.accept() {
                Ok((s, peer)) => {
                    if s.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = s.set_nodelay(true);
                    let tls = match &self.tls {
                        // No certificate to answer with: closed at once.
                        Some(setup) => match setup.accept() {
                            Some(t) => Some(Box::new(t)),
                            None => continue,
                        },
                        None => None,
                    };
                    let i = self.add(s, peer, None, tls);
                    self.by_peer.insert(peer, i);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors: the connection stays queued; no
                    // new poll (it would fire at once, again and again)
                    // until one of ours closes.
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        self.accept_blocked = true;
                        self.listener_armed = true;
                    }
                    break;
                }
            }
        }
    }

    fn add(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        call: Option<u64>,
        tls: Option<Box<rustls::Connection>>,
    ) -> usize {
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.generations.push(0);
            self.conns.len() - 1
        });
        let generation = self.generations.get(i).copied().unwrap_or(0);
        if let Some(slot) = self.conns.get_mut(i) {
            *slot = Some(Conn {
                stream,
                peer,
                decoder: StreamDecoder::new(StreamLimits::default()),
                out: Vec::new(),
                connecting: false,
                queued: false,
                armed_in: false,
                armed_out: false,
                generation,
                call,
                tls,
            });
        }
        i
    }

    /// Closes connection `i` (the socket is shut down so that its poll
    /// in the ring completes); `lost`: not by our choice, its calls fail.
    fn close(&mut self, i: usize, lost: bool) {
        let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        if lost {
            let why = if c.connecting {
                FailReason::TcpConnect
            } else {
                FailReason::TcpClosed
            };
            self.lost.push((c.peer, c.call, why));
        }
        if let Some(t) = c.tls.as_mut() {
            // Best effort: the peer learns the session ended (RFC 8446
            // §6.1), if the socket takes it now.
            t.send_close_notify();
            let _ = t.write_tls(&mut c.stream);
        }
        let _ = c.stream.shutdown(Shutdown::Both);
        if self.by_peer.get(&c.peer) == Some(&i) {
            self.by_peer.remove(&c.peer);
        }
        if let Some(call) = c.call {
            self.by_call.remove(&call);
        }
        if let Some(g) = self.generations.get_mut(i) {
            *g = g.wrapping_add(1);
        }
        self.free.push(i);
        if self.accept_blocked {
            self.accept_blocked = false;
            self.listener_armed = false;
        }
    }

    /// Connection `i` can take output: it takes what waits.
    pub fn writable(&mut self, i: usize, generation: u8) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        c.armed_out = false;
        if !connected(c) || flush(c).is_err() {
            self.close(i, true);
        }
    }

    /// `tn`: the call `serial` ended; its connection closes.
    pub fn call_ended(&mut self, serial: u64) {
        if let Some(&i) = self.by_call.get(&serial) {
            self.close(i, false);
        }
    }

    /// `<closecon>`: the connection that carries call `serial` (`tn`), or
    /// with `t1` the one to `peer`, closes; a later message opens
    /// another, as SIPp's reconnection does.
    pub fn close_call(&mut self, serial: u64, peer: SocketAddr) {
        let shared = matches!(self.mode, Mode::One);
        let i = self
            .by_call
            .get(&serial)
            .or_else(|| self.by_peer.get(&peer).filter(|_| shared))
            .copied();
        if let Some(i) = i {
            self.close(i, false);
        }
    }

    /// Connection `i`'s poll completed: reads what arrived, writes what
    /// waited, and hands each whole message to `on`. A connection the
    /// peer closed, or that carries something not SIP, is closed.
    pub fn ready(&mut self, i: usize, generation: u8, mut on: impl FnMut(SocketAddr, &[u8])) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        c.armed_in = false;
        if !connected(c) {
            self.close(i, true);
            return;
        }
        let mut closed = flush(c).is_err();
        if !closed {
            closed = match c.tls.as_deref_mut() {
                Some(tls) => read_tls(&mut c.stream, tls, &mut c.decoder, &mut self.buf),
                None => read_plain(&mut c.stream, &mut c.decoder, &mut self.buf),
            };
        }
        // The handshake (or a key update) may have something to say.
        closed |= flush(c).is_err();
        loop {
            match c.decoder.next_frame() {
                None => break,
                Some(Ok(Frame::Message(m))) => on(c.peer, &m),
                // RFC 5626: a double-CRLF ping gets a CRLF pong.
                Some(Ok(Frame::Ping)) => {
                    c.out.extend_from_slice(b"\r\n");
                    closed |= flush(c).is_err();
                }
                Some(Err(_)) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            self.close(i, true);
        }
    }

    /// Sends `bytes` of call `call` to `dst`: on the connection from that
    /// peer (callee), the thread's one (`t1`) or the call's own (`tn`),
    /// opened when needed. False when it cannot go.
    pub fn send(&mut self, dst: SocketAddr, call: u64, bytes: &[u8]) -> bool {
        // A connection from that peer first (a callee's, or one a peer
        // opened to a caller), then the caller's own.
        let i = match (self.by_peer.get(&dst).copied(), self.remote, self.mode) {
            (Some(i), _, _) => Some(i),
            (None, None, _) => None,
            (None, Some(_), Mode::One) => self.connect(dst, None),
            // A message of no call (an ended one's) opens nothing.
            (None, Some(_), Mode::PerCall) if call == 0 => None,
            (None, Some(_), Mode::PerCall) => match self.by_call.get(&call).copied() {
                // A <setdest> elsewhere: the call's connection moves.
                Some(i)
                    if self
                        .conns
                        .get(i)
                        .and_then(Option::as_ref)
                        .is_some_and(|c| c.peer != dst) =>
                {
                    self.close(i, false);
                    self.connect(dst, Some(call))
                }
                Some(i) => Some(i),
                None => self.connect(dst, Some(call)),
            },
        };
        let Some(c) = i
            .and_then(|i| self.conns.get_mut(i))
            .and_then(Option::as_mut)
        else {
            self.errors += 1;
            return false;
        };
        // Written with the loop's other messages (one write a
        // connection, not one a message).
        c.out.extend_from_slice(bytes);
        if !c.queued {
            c.queued = true;
            self.queued.extend(i);
        }
        true
    }

    /// Writes what [`Streams::send`] queued on each connection.
    pub fn flush_queued(&mut self) {
        for i in std::mem::take(&mut self.queued) {
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            c.queued = false;
            if flush(c).is_err() {
                self.close(i, true);
                self.errors += 1;
            }
        }
    }

    /// Opens a connection to `dst` from the local address; the connect
    /// goes on without blocking the thread (output waits for it).
    fn connect(&mut self, dst: SocketAddr, call: Option<u64>) -> Option<usize> {
        let tls = match &self.tls {
            Some(setup) => match setup.connect(dst.ip()) {
                Some(t) => Some(Box::new(t)),
                None => {
                    self.lost.push((dst, call, FailReason::TcpConnect));
                    return None;
                }
            },
            None => None,
        };
        let Some((stream, connecting)) = dial(self.local_ip, dst) else {
            // Its calls fail (SIPp: "TCP connection failed").
            self.lost.push((dst, call, FailReason::TcpConnect));
            return None;
        };
        let _ = stream.set_nodelay(true);
        let i = self.add(stream, dst, call, tls);
        if let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) {
            c.connecting = connecting;
        }
        match call {
            Some(c) => {
                self.by_call.insert(c, i);
            }
            None => {
                self.by_peer.insert(dst, i);
            }
        }
        Some(i)
    }

    /// Writes out what waits on every connection (at the end of a run),
    /// waiting up to `limit` for slow ones.
    pub fn finish(&mut self, limit: Duration) {
        for c in self.conns.iter_mut().flatten() {
            let tls_pending = c.tls.as_ref().is_some_and(|t| t.wants_write());
            if c.out.is_empty() && !tls_pending {
                continue;
            }
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(limit));
            match c.tls.as_deref_mut() {
                Some(tls) => {
                    // The session takes it all (no buffer limit); what
                    // waits for a handshake still under way is lost, as
                    // a plain connection's unwritten output is.
                    let _ = tls.writer().write_all(&c.out);
                    while tls.wants_write() {
                        if !matches!(tls.write_tls(&mut c.stream), Ok(1..)) {
                            break;
                        }
                    }
                }
                None => {
                    let _ = c.stream.write_all(&c.out);
                }
            }
            c.out.clear();
        }
    }
}

/// A non-blocking connection to `dst` from `local_ip`, and whether its
/// connect is still under way; `None` when it failed at once.
fn dial(local_ip: IpAddr, dst: SocketAddr) -> Option<(TcpStream, bool)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .ok()?;
    socket.bind(&SocketAddr::new(local_ip, 0).into()).ok()?;
    socket.set_nonblocking(true).ok()?;
    let connecting = match socket.connect(&dst.into()) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(_) => return None,
    };
    Some((socket.into(), connecting))
}

/// Whether connection `c` is usable: a connect under way that has now
/// finished becomes so; false when it failed.
fn connected(c: &mut Conn) -> bool {
    if !c.connecting {
        return true;
    }
    match socket2::SockRef::from(&c.stream).take_error() {
        Ok(None) => {
            // Still under way until the peer answers (no error yet, not
            // writable): a peer address tells it is done.
            if c.stream.peer_addr().is_err() {
                return true;
            }
            c.connecting = false;
            true
        }
        _ => false,
    }
}

/// Writes what the socket takes now; the rest waits in `out` (all of it
/// while the connect is under way). Over TLS the output goes into the
/// session, which writes its records (and its handshake) to the socket.
fn flush(c: &mut Conn) -> io::Result<()> {
    if c.connecting {
        return Ok(());
    }
    let Some(tls) = c.tls.as_deref_mut() else {
        return write_out(&mut c.stream, &mut c.out);
    };
    while !c.out.is_empty() {
        // The session takes it all (its buffer has no limit, see
        // `crate::tls`), before the handshake ends too.
        match tls.writer().write(&c.out) {
            Ok(0) => break,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) => return Err(e),
        }
    }
    while tls.wants_write() {
        match tls.write_tls(&mut c.stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `out` to the socket as far as it takes it.
fn write_out(stream: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    while !out.is_empty() {
        match stream.write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what arrived on a plain connection into its decoder; true when
/// the peer closed it (or it broke).
fn read_plain(stream: &mut TcpStream, decoder: &mut StreamDecoder, buf: &mut [u8]) -> bool {
    loop {
        match stream.read(buf) {
            Ok(0) => return true,
            Ok(n) => decoder.push(buf.get(..n).unwrap_or(&[])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Reads what arrived on a TLS connection: records into the session,
/// plaintext into the decoder; true when the peer closed it, the
/// handshake failed or a record was bad.
fn read_tls(
    stream: &mut TcpStream,
    tls: &mut rustls::Connection,
    decoder: &mut StreamDecoder,
    buf: &mut [u8],
) -> bool {
    loop {
        match tls.read_tls(stream) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
        if tls.process_new_packets().is_err() {
            // rustls queued an alert for the peer; the connection goes.
            let _ = tls.write_tls(stream);
            return true;
        }
        loop {
            match tls.reader().read(buf) {
                // The peer's close_notify.
                Ok(0) => return true,
                Ok(n) => decoder.push(buf.get(..n).unwrap_or(&[])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return true,
            }
        }
    }
}

/// SIPp's `-max_reconnect`, `-reconnect_close` and `-reconnect_sleep`:
/// what a thread does when one of its connections is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// A caller's reconnections left; `None` (no `-max_reconnect`): as
    /// many as needed, at once (sbc-load's default; SIPp's ends the run).
    pub left: Option<u64>,
    /// The calls of a lost connection fail (else they go on over the next
    /// one).
    pub close_calls: bool,
    /// The thread waits this long before it reconnects.
    pub sleep: Duration,
}

/// What to do about one lost connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub fail_calls: bool,
    pub sleep: Duration,
    /// SIPp's warning, or the error that ends the run.
    pub warning: Option<String>,
    pub fatal: Option<String>,
}

impl Reconnect {
    /// A connection to `peer` is lost (`reason`: it could not open, or
    /// closed); `caller`: it was one the thread opened.
    pub fn lost(&mut self, peer: SocketAddr, reason: FailReason, caller: bool) -> Lost {
        let quiet = Lost {
            fail_calls: self.close_calls,
            sleep: Duration::ZERO,
            warning: None,
            fatal: None,
        };
        // A peer's connection to a callee: its calls, no reconnection.
        let Some(left) = self.left.filter(|_| caller) else {
            return Lost {
                fail_calls: self.close_calls || reason == FailReason::TcpConnect,
                ..quiet
            };
        };
        if left == 0 {
            return Lost {
                fail_calls: true,
                fatal: Some(match reason {
                    FailReason::TcpConnect => {
                        format!(
                            "unable to connect a TCP socket to {peer}, and no reconnection left"
                        )
                    }
                    _ => format!(
                        "error on TCP connection to {peer}, remote peer probably closed the socket: max number of reconnections reached"
                    ),
                }),
                ..quiet
            };
        }
        self.left = Some(left - 1);
        // A connection that never opened fails its calls (SIPp's
        // FailedTcpConnect) and counts; one that closed waits and reopens.
        if reason == FailReason::TcpConnect {
            return Lost {
                fail_calls: true,
                warning: Some(format!("unable to connect a TCP socket to {peer}")),
                ..quiet
            };
        }
        Lost {
            sleep: self.sleep,
            warning: Some(format!(
                "error on TCP connection to {peer}, remote peer probably closed the socket: reconnecting ({} left){}",
                left - 1,
                if self.close_calls {
                    ", its calls closed"
                } else {
                    ""
                }
            )),
            ..quiet
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reconnections_are_counted_and_the_last_loss_ends_the_run() {
        use super::{FailReason, Reconnect};
        use std::time::Duration;
        let peer = "127.0.0.1:5060".parse().unwrap();
        let mut r = Reconnect {
            left: Some(2),
            close_calls: true,
            sleep: Duration::from_millis(100),
        };
        let first = r.lost(peer, FailReason::TcpClosed, true);
        assert!(first.fail_calls && first.fatal.is_none());
        assert_eq!(first.sleep, Duration::from_millis(100));
        assert!(first.warning.unwrap().contains("reconnecting (1 left)"));
        // A connect that fails counts too, without the wait.
        let second = r.lost(peer, FailReason::TcpConnect, true);
        assert_eq!((second.sleep, second.fatal), (Duration::ZERO, None));
        let third = r.lost(peer, FailReason::TcpClosed, true);
        assert!(
            third
                .fatal
                .unwrap()
                .contains("max number of reconnections reached")
        );
        // -reconnect_close false: the calls go on.
        let mut keep = Reconnect {
            left: Some(5),
            close_calls: false,
            sleep: Duration::ZERO,
        };
        assert!(!keep.lost(peer, FailReason::TcpClosed, true).fail_calls);
        // Without -max_reconnect: as sbc-load always did.
        let mut free = Reconnect {
            left: None,
            close_calls: true,
            sleep: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let l = free.lost(peer, FailReason::TcpClosed, true);
            assert!(l.fail_calls && l.fatal.is_none() && l.sleep.is_zero());
        }
        // A callee's lost connection neither counts nor waits.
        let mut callee = Reconnect {
            left: Some(0),
            close_calls: true,
            sleep: Duration::from_secs(1),
        };
        let l = callee.lost(peer, FailReason::TcpClosed, false);
        assert!(l.fail_calls && l.fatal.is_none() && l.sleep.is_zero());
    }

    /// The messages a side received, with the peer each came from.
    type Received = Vec<(SocketAddr, Vec<u8>)>;

    fn drive(s: &mut Streams, rounds: usize) -> Received {
        let mut got = Vec::new();
        s.flush_queued();
        for _ in 0..rounds {
            s.accept();
            let ids: Vec<(usize, u8)> = s
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|c| (i, c.generation)))
                .collect();
            for (i, g) in ids {
                s.writable(i, g);
                s.ready(i, g, |p, m| got.push((p, m.to_vec())));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }

    #[test]
    fn messages_are_framed_and_answered_on_their_connection() {
        let l = TcpListener::bind("127.176.1.2:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut callee = Streams::listening(l, Mode::One).unwrap();
        let own = TcpListener::bind("127.176.1.1:0").unwrap();
        let mut caller = Streams::new(Mode::PerCall, own, Some(addr)).unwrap();
        let m1 = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 4\r\n\r\nbody";
        let m2 = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 2\r\nContent-Length: 0\r\n\r\n";
        assert!(caller.send(addr, 1, m1));
        assert!(caller.send(addr, 2, m2));
        assert_eq!(caller.open(), 2, "one connection per call");
        // The connects finish without blocking; the messages then leave.
        drive(&mut caller, 5);
        let got = drive(&mut callee, 20);
        assert_eq!(got.len(), 2);
        assert!(got.iter().any(|(_, m)| m == m1) && got.iter().any(|(_, m)| m == m2));
        // The answer goes back on the connection the message came on.
        let (peer, _) = got.iter().find(|(_, m)| m == m1).unwrap();
        assert!(callee.send(*peer, 0, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        callee.flush_queued();
        let back = drive(&mut caller, 20);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, addr);
        // The call's end closes its connection; the callee sees it go.
        caller.call_ended(1);
        caller.call_ended(2);
        assert_eq!(caller.open(), 0);
        drive(&mut callee, 20);
        assert_eq!(callee.open(), 0);
        // Closed by the peer: the callee's calls from there are lost.
        assert_eq!(callee.lost.len(), 2);
        assert!(
            callee
                .lost
                .iter()
                .all(|l| l.2 == FailReason::TcpClosed && l.1.is_none())
        );
        assert!(caller.lost.is_empty(), "the caller closed them");
        // Nowhere to send: counted.
        assert!(!callee.send(*peer, 0, b"x"));
        assert_eq!(callee.errors, 1);
        // Nothing listens: the call's connection cannot open.
        let closed = TcpListener::bind("127.176.1.3:0").unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        // (refused at once, or when the connect that went on fails)
        let _ = caller.send(gone, 7, b"x");
        drive(&mut caller, 5);
        assert_eq!(caller.lost, [(gone, Some(7), FailReason::TcpConnect)]);
        assert_eq!(caller.open(), 0);
    }

    /// `<closecon>`: the call's own connection (`tn`), else the one to its
    /// peer (`t1`), closes, and is not counted as lost; the next message
    /// opens another.
    #[test]
    fn closecon_closes_the_calls_connection_and_the_next_message_reopens() {
        let l = TcpListener::bind("127.176.1.8:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut callee = Streams::listening(l, Mode::One).unwrap();
        for (mode, ip) in [
            (Mode::PerCall, "127.176.1.9:0"),
            (Mode::One, "127.176.1.10:0"),
        ] {
            let own = TcpListener::bind(ip).unwrap();
            let mut caller = Streams::new(mode, own, Some(addr)).unwrap();
            let m = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n";
            assert!(caller.send(addr, 1, m));
            drive(&mut caller, 5);
            assert_eq!(drive(&mut callee, 20).len(), 1);
            caller.close_call(1, addr);
            assert_eq!(caller.open(), 0, "{mode:?}");
            assert!(caller.lost.is_empty(), "closed on purpose");
            // Closing again (or a call with none) changes nothing.
            caller.close_call(1, addr);
            assert!(caller.send(addr, 1, m));
            assert_eq!(caller.open(), 1, "{mode:?}: reopened");
            drive(&mut caller, 5);
            assert_eq!(drive(&mut callee, 20).len(), 1);
        }
    }

    fn certs(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/examples/certs")
            .join(name)
    }

    /// A test certificate signed by config/examples/certs/ca.crt (`name`:
    /// localhost, or revoked: the same, named by the CA's revocation
    /// list); `ca`: verify servers against the CA and its list.
    fn tls(name: &str, listens: bool, ca: bool) -> Arc<TlsSetup> {
        let (cert, key, ca_file, crl) = (
            certs(&format!("{name}.crt")),
            certs(&format!("{name}.key")),
            certs("ca.crt"),
            certs("ca.crl"),
        );
        let files = crate::tls::Files {
            cert: &cert,
            key: &key,
            ca: ca.then_some(ca_file.as_path()),
            crl: ca.then_some(crl.as_path()),
        };
        Arc::new(TlsSetup::load(files, listens, rustls::DEFAULT_VERSIONS).unwrap())
    }

    /// A TLS callee (with the localhost certificate, or `revoked` one)
    /// listening on `callee_ip` and a caller (`mode`) on `caller_ip` that
    /// reaches it, verifying it against the test CA and its revocation
    /// list when `ca`; the callee's address.
    fn tls_pair(
        callee_ip: &str,
        caller_ip: &str,
        mode: Mode,
        (ca, revoked): (bool, bool),
    ) -> (Streams, Streams, SocketAddr) {
        let l = TcpListener::bind((callee_ip, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let name = if revoked { "revoked" } else { "localhost" };
        let callee = Streams::listening(l, Mode::One)
            .unwrap()
            .with_tls(tls(name, true, false));
        let own = TcpListener::bind((caller_ip, 0)).unwrap();
        let caller =
            Streams::new(mode, own, Some(addr))
                .unwrap()
                .with_tls(tls("localhost", false, ca));
        (callee, caller, addr)
    }

    /// Drives two sides in turn (a handshake goes back and forth):
    /// what each received.
    fn drive_pair(a: &mut Streams, b: &mut Streams, rounds: usize) -> (Received, Received) {
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            got_a.extend(drive(a, 1));
            got_b.extend(drive(b, 1));
        }
        (got_a, got_b)
    }

    #[test]
    fn over_tls_messages_are_framed_and_answered_on_their_connection() {
        let (mut callee, mut caller, addr) = tls_pair(
            "127.176.1.12",
            "127.176.1.11",
            Mode::PerCall,
            (false, false),
        );
        let m1 = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 4\r\n\r\nbody";
        let m2 = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 2\r\nContent-Length: 0\r\n\r\n";
        assert!(caller.send(addr, 1, m1));
        assert!(caller.send(addr, 2, m2));
        let (_, got) = drive_pair(&mut caller, &mut callee, 40);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().any(|(_, m)| m == m1) && got.iter().any(|(_, m)| m == m2));
        let (peer, _) = got.iter().find(|(_, m)| m == m1).unwrap();
        assert!(callee.send(*peer, 0, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        callee.flush_queued();
        let (back, _) = drive_pair(&mut caller, &mut callee, 20);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, addr);
        // The calls end: their connections close (close_notify first);
        // the callee sees both go.
        caller.call_ended(1);
        caller.call_ended(2);
        drive_pair(&mut caller, &mut callee, 20);
        assert_eq!(callee.open(), 0);
        assert_eq!(callee.lost.len(), 2);
        assert!(caller.lost.is_empty(), "the caller closed them");
    }

    #[test]
    fn over_tls_output_past_64_kib_all_arrives() {
        let (mut callee, mut caller, addr) =
            tls_pair("127.176.1.15", "127.176.1.16", Mode::One, (false, false));
        let body = vec![b'x'; 1000];
        let message = |n: usize| {
            let mut m = format!(
                "MESSAGE sip:x SIP/2.0\r\nCall-ID: {n}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            m.extend_from_slice(&body);
            m
        };
        // Queued before the handshake (past rustls's default 64 KiB for
        // it), and again once it is done, written by `finish`.
        for n in 0..100 {
            assert!(caller.send(addr, 1, &message(n)));
        }
        let (_, mut got) = drive_pair(&mut caller, &mut callee, 60);
        assert_eq!(got.len(), 100);
        for n in 100..200 {
            assert!(caller.send(addr, 1, &message(n)));
        }
        caller.finish(Duration::from_secs(5));
        got.extend(drive(&mut callee, 40));
        assert_eq!(got.len(), 200, "every message, in order");
        assert!(got.iter().enumerate().all(|(n, (_, m))| *m == message(n)));
    }

    #[test]
    fn with_a_ca_only_a_server_it_vouches_for_is_spoken_to() {
        // The CA signed the certificate (which names 127.0.0.1, not the
        // address connected to: as SIPp, the chain is verified, not the
        // name)...
        let (mut callee, mut caller, good) =
            tls_pair("127.176.1.17", "127.176.1.18", Mode::One, (true, false));
        let m = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n";
        assert!(caller.send(good, 1, m));
        let (_, got) = drive_pair(&mut caller, &mut callee, 40);
        assert_eq!(got.len(), 1, "verified against the CA");
        assert!(caller.lost.is_empty());
        // ...and a certificate the CA revoked is refused: the handshake
        // fails, nothing is delivered, the call's connection is lost.
        let (mut impostor, mut caller, other) =
            tls_pair("127.176.1.13", "127.176.1.14", Mode::PerCall, (true, true));
        assert!(caller.send(other, 5, m));
        let (_, got) = drive_pair(&mut caller, &mut impostor, 40);
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(caller.open(), 0);
        assert_eq!(caller.lost, [(other, Some(5), FailReason::TcpClosed)]);
    }

    #[test]
    fn a_callee_needs_its_certificate_and_says_which_file_is_missing() {
        let missing = certs("no-such.crt");
        let key = certs("localhost.key");
        let files = crate::tls::Files {
            cert: &missing,
            key: &key,
            ca: None,
            crl: None,
        };
        let e = TlsSetup::load(files, true, rustls::DEFAULT_VERSIONS).unwrap_err();
        assert!(e.contains("-tls_cert") && e.contains("no-such.crt"), "{e}");
        // A caller goes on without one (no client certificate).
        assert!(
            TlsSetup::load(files, false, rustls::DEFAULT_VERSIONS)
                .is_ok_and(|t| t.server.is_none())
        );
    }

    #[test]
    fn a_slot_reused_past_its_generations_is_still_read() {
        let l = TcpListener::bind("127.176.1.6:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let own = TcpListener::bind("127.176.1.5:0").unwrap();
        let mut caller = Streams::new(Mode::PerCall, own, Some(addr)).unwrap();
        // 300 calls one after the other: one slot, its 8-bit generation
        // wraps.
        for call in 1..=300 {
            assert!(caller.send(addr, call, b"x"));
            caller.call_ended(call);
            while l.accept().is_ok() {}
        }
        assert!(caller.send(
            addr,
            301,
            b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"
        ));
        let mut peer = loop {
            if let Ok((p, _)) = l.accept() {
                break p;
            }
        };
        peer.write_all(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let polls: Vec<(usize, u8, bool)> = caller
            .unarmed()
            .into_iter()
            .map(|(i, g, _, w)| (i, g, w))
            .filter(|p| !p.2)
            .collect();
        assert_eq!(polls.len(), 1);
        let (slot, generation, _) = polls[0];
        assert_eq!(slot, 0);
        let mut got = Vec::new();
        for _ in 0..100 {
            caller.ready(slot, generation, |_, m| got.push(m.to_vec()));
            if !got.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got.len(), 1, "read through the wrapped generation");
    }

    #[test]
    fn output_the_socket_cannot_take_waits_for_a_write_poll() {
        let l = TcpListener::bind("127.176.1.8:0").unwrap();
        let addr = l.local_addr().unwrap();
        let own = TcpListener::bind("127.176.1.7:0").unwrap();
        let mut caller = Streams::new(Mode::One, own, Some(addr)).unwrap();
        // More than the socket buffers hold while the peer does not read.
        let big = vec![b'a'; 16 << 20];
        assert!(caller.send(addr, 1, &big));
        let (mut peer, _) = l.accept().unwrap();
        let polls: Vec<(usize, u8, bool)> = caller
            .unarmed()
            .into_iter()
            .map(|(i, g, _, w)| (i, g, w))
            .collect();
        assert!(polls.iter().any(|p| p.2), "a write poll: {polls:?}");
        let (slot, generation, _) = polls[0];
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            let mut buf = vec![0u8; 1 << 16];
            while n < 16 << 20 {
                match peer.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            n
        });
        for _ in 0..2000 {
            caller.writable(slot, generation);
            if caller.unarmed().iter().all(|p| !p.3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(reader.join().unwrap(), 16 << 20);
    }

    #[test]
    fn a_calls_connection_follows_its_setdest() {
        let (l1, l2) = (
            TcpListener::bind("127.176.1.10:0").unwrap(),
            TcpListener::bind("127.176.1.11:0").unwrap(),
        );
        let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
        let own = TcpListener::bind("127.176.1.9:0").unwrap();
        let mut caller = Streams::new(Mode::PerCall, own, Some(a1)).unwrap();
        assert!(caller.send(a1, 4, b"one"));
        assert!(caller.send(a2, 4, b"two"));
        assert_eq!(caller.open(), 1, "the first connection closed");
        drive(&mut caller, 5);
        let (mut p2, _) = l2.accept().unwrap();
        let mut got = [0u8; 3];
        p2.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"two");
        assert!(caller.lost.is_empty());
    }

    #[test]
    fn garbage_closes_only_its_connection() {
        let l = TcpListener::bind("127.176.1.4:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut callee = Streams::listening(l, Mode::One).unwrap();
        let mut good = TcpStream::connect(addr).unwrap();
        let mut bad = TcpStream::connect(addr).unwrap();
        bad.write_all(b"INVITE sip:x SIP/2.0\r\nContent-Length: zz\r\n\r\n")
            .unwrap();
        good.write_all(b"\r\n\r\nBYE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let got = drive(&mut callee, 20);
        assert_eq!(got.len(), 1);
        assert!(got[0].1.starts_with(b"BYE"));
        assert_eq!(callee.open(), 1);
        // The ping got its pong.
        good.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut pong = [0u8; 2];
        good.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n");
    }
}
