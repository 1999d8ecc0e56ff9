//! Thread-per-core shards.
//!
//! Each shard is one pinned thread with its own io_uring, its own UDP socket
//! on every SIP listen address (SO_REUSEPORT: the kernel spreads flows over
//! the shards), and its own [`Engine`] holding the calls it owns. A datagram
//! for a call owned elsewhere is handed to the owner's [`Mailbox`] (a
//! lock-free queue) and the owner's ring is woken with `IORING_OP_MSG_RING`;
//! nothing on the per-message path takes a lock.
//!
//! The control plane publishes configuration snapshots through an
//! `ArcSwap<Policy>`; every shard picks up the new snapshot at the top of its
//! next loop iteration.

mod boundary;
#[allow(unsafe_code)]
mod bufring;
mod coalesce;
mod events;
#[allow(unsafe_code)]
mod limits;
mod mailbox;
mod nexthop;
#[allow(unsafe_code)]
mod slots;
mod socket;
#[allow(unsafe_code)]
mod stream;
#[allow(unsafe_code)]
mod uring;
mod ws;
#[allow(unsafe_code)]
mod xdp;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;

pub use bufring::BufRing;
pub use coalesce::{Coalescing, Pacer};
pub use mailbox::{Handoff, Mailbox};
pub use slots::{SendPool, UDP_SEGMENT, empty_msghdr};
pub use socket::{decode_sockaddr, reuseport_tcp, reuseport_udp};
pub use uring::{RecvMode, RingSizes};

use sbc_core::b2bua::{Engine, Secrets, ShardId};
use sbc_core::policy::Policy;
use sbc_core::registrar::{Binding, Change, Lockout};
use sbc_core::stats::{LoopState, ShardStats};

/// What the shards share with the control plane besides the policy: the
/// TLS settings (republished on reload), and for the registrar the
/// channel each binding change goes to
/// ([`Event::Registration`](sbc_core::b2bua::Event::Registration), for its
/// store and views), the bindings kept across a restart (each shard takes
/// those it owns), and the table of sources failing authentication, which
/// every shard counts in. The default restores nothing and sends nowhere.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub changes: Option<mpsc::Sender<Change>>,
    pub lockout: Arc<Lockout>,
    pub restored: Arc<[Binding]>,
    pub tls: Arc<ArcSwap<crate::tls::TlsSetup>>,
}

/// Fresh process-wide keys (owner hash, Call-ID MAC, minted ids) from the
/// operating system's random source. The core never reads it itself.
pub fn os_secrets() -> io::Result<Secrets> {
    let mut k = [0u8; 48];
    getrandom::fill(&mut k).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Secrets::from_bytes(k))
}

/// How many shards and how they run.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    pub shards: usize,
    /// Pin shard `i` to CPU `i % cores`.
    pub pin_threads: bool,
    pub sizes: RingSizes,
    /// Receive buffer asked of the kernel for each SIP socket.
    pub socket_buffer: usize,
    /// Wake-up coalescing: after the first completion, wait this long for
    /// more before processing (needs Linux 6.12; zero disables).
    pub coalescing: Coalescing,
    pub recv_mode: RecvMode,
    /// Fault injection (tests of shard supervision): shard `.0`'s loop
    /// ends with an error at its first wake-up this long after start.
    pub stop_shard_after: Option<(usize, std::time::Duration)>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shards: 1,
            pin_threads: true,
            sizes: RingSizes::default(),
            socket_buffer: 4 << 20,
            coalescing: Coalescing::default(),
            recv_mode: RecvMode::Auto,
            stop_shard_after: None,
        }
    }
}

/// The running shards.
#[derive(Debug)]
pub struct Runtime {
    threads: Vec<JoinHandle<io::Result<()>>>,
    stats: Vec<Arc<ShardStats>>,
    stop: Arc<AtomicBool>,
    /// The AF_XDP program while it is attached (detached on drop, after
    /// the shards have closed their sockets).
    _xdp: Option<Arc<xdp::XdpProgram>>,
}

impl Runtime {
    /// Binds every shard's sockets, builds the rings and starts the threads.
    /// Returns once every shard is ready, or the first error.
    pub fn start(
        cfg: RuntimeConfig,
        policy: Arc<ArcSwap<Policy>>,
        secrets: Secrets,
    ) -> io::Result<Runtime> {
        Self::start_with(cfg, policy, Directory::default(), secrets)
    }

    /// [`Runtime::start`], with what the shards share with the
    /// registrar.
    pub fn start_with(
        cfg: RuntimeConfig,
        policy: Arc<ArcSwap<Policy>>,
        directory: Directory,
        secrets: Secrets,
    ) -> io::Result<Runtime> {
        let shards = cfg.shards.clamp(1, 256);
        let shard_count = u16::try_from(shards).unwrap_or(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stats: Vec<Arc<ShardStats>> = (0..shards).map(|_| Arc::default()).collect();
        let mailboxes: Arc<[Arc<Mailbox>]> =
            (0..shards).map(|_| Arc::new(Mailbox::new(65536))).collect();
        let listeners: Vec<_> = policy
            .load()
            .listeners
            .iter()
            .map(|l| (l.transport, l.bind))
            .collect();
        let media = policy.load().media.clone();
        if let Some(m) = &media {
            // One socket per media port, all bound at start.
            // One socket per media port and family, all bound at start.
            let families = if m.bind_other.is_some() { 2 } else { 1 };
            let sockets = (u64::from(m.last_port.saturating_sub(m.first_port)) + 1) * families;
            let limit = limits::raise_fd_limit()?;
            if sockets + 256 > limit {
                return Err(io::Error::other(format!(
                    "media ports {}-{} need {} file descriptors; the limit is {limit} (raise it, or narrow the range)",
                    m.first_port,
                    m.last_port,
                    sockets + 256
                )));
            }
        }
        if listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no SIP listen address",
            ));
        }
        let program = media.as_ref().and_then(|m| attach_xdp(m, shard_count));
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let mut threads = Vec::with_capacity(shards);
        for me in 0..shards {
            let stats = Arc::clone(&stats[me]);
            let mailboxes = Arc::clone(&mailboxes);
            let policy = Arc::clone(&policy);
            let directory = directory.clone();
            let stop = Arc::clone(&stop);
            let listeners = listeners.clone();
            let media = media.clone();
            let program = program.clone();
            let ready = ready_tx.clone();
            let core = if cfg.pin_threads && !cores.is_empty() {
                Some(cores[me % cores.len()])
            } else {
                None
            };
            let handle = std::thread::Builder::new()
                .name(format!("sbc-shard-{me}"))
                .spawn(move || -> io::Result<()> {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let setup = (|| -> io::Result<uring::ShardLoop> {
                        let mut sockets = Vec::new();
                        let mut tcp = Vec::new();
                        for (i, (transport, addr)) in listeners.iter().enumerate() {
                            let local = sbc_core::net::LocalId(u16::try_from(i).unwrap_or(0));
                            match transport {
                                sbc_core::net::Transport::Udp => {
                                    sockets.push((reuseport_udp(*addr, cfg.socket_buffer)?, local));
                                }
                                t => tcp.push((socket::reuseport_tcp(*addr)?, local, *t, *addr)),
                            }
                        }
                        let id = ShardId(u16::try_from(me).unwrap_or(0));
                        let mut engine = Engine::new(
                            id,
                            shard_count,
                            secrets,
                            policy.load_full(),
                            Arc::clone(&stats),
                        );
                        engine.set_lockout(Arc::clone(&directory.lockout));
                        engine.restore_bindings(directory.restored.iter().cloned());
                        // This shard's slice of the media ports.
                        let (media_sockets, media_base) = match (&media, engine.media_ports()) {
                            (Some(m), Some(range)) => {
                                let base = u16::try_from(range.start).unwrap_or(0);
                                // A previous instance's ports may still be
                                // held while the kernel tears its ring down.
                                let deadline = std::time::Instant::now() + socket::BIND_RETRY;
                                let bind_all = |ip: std::net::IpAddr| {
                                    range
                                        .clone()
                                        .map(|p| {
                                            let port = u16::try_from(p).unwrap_or(0);
                                            socket::media_udp_until(
                                                std::net::SocketAddr::new(ip, port),
                                                deadline,
                                            )
                                        })
                                        .collect::<io::Result<Vec<_>>>()
                                };
                                let first = bind_all(m.bind)?;
                                let other = match m.bind_other {
                                    Some(ip) => bind_all(ip)?,
                                    None => Vec::new(),
                                };
                                ((first, other), base)
                            }
                            _ => ((Vec::new(), Vec::new()), 0),
                        };
                        let xsk = program
                            .as_ref()
                            .and_then(|(p, source)| open_xsk(p, *source, me, &stats));
                        drop(program);
                        let io = uring::ShardIo::new(
                            sockets,
                            (me, tcp, Arc::clone(&directory.tls)),
                            media_sockets,
                            media_base,
                            cfg.sizes,
                            cfg.recv_mode,
                            xsk,
                        )?;
                        mailboxes[me].set_ring_fd(io.ring_fd());
                        Ok(uring::ShardLoop {
                            io,
                            engine,
                            stats,
                            mailboxes,
                            me,
                            policy,
                            directory,
                            stop,
                            pacer: Pacer::new(cfg.coalescing, std::time::Instant::now()),
                            media_seen: None,
                            governor: Default::default(),
                            fault_at: cfg
                                .stop_shard_after
                                .filter(|(shard, _)| *shard == me)
                                .map(|(_, after)| std::time::Instant::now() + after),
                            wall: std::time::SystemTime::now(),
                            unsent_forwarded: None,
                        })
                    })();
                    match setup {
                        Ok(shard) => {
                            // Marks the shard stopped however its loop
                            // ends: returned, error or panic.
                            let _running = RunningGuard::new(Arc::clone(&shard.stats));
                            let _ = ready.send(Ok(()));
                            let result = shard.run();
                            if let Err(e) = &result {
                                tracing::error!(shard = me, error = %e, "shard stopped");
                            }
                            result
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            let _ = ready.send(Err(e));
                            Err(io::Error::other(msg))
                        }
                    }
                })?;
            threads.push(handle);
        }
        drop(ready_tx);
        let mut first_error = None;
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error
                        .get_or_insert(io::Error::other("a shard thread died during start-up"));
                }
            }
        }
        let runtime = Runtime {
            threads,
            stats,
            stop,
            _xdp: program.map(|(p, _)| p),
        };
        if let Some(e) = first_error {
            runtime.stop();
            return Err(e);
        }
        Ok(runtime)
    }

    pub fn shard_stats(&self) -> Vec<Arc<ShardStats>> {
        self.stats.clone()
    }

    /// True while every shard thread is running.
    pub fn is_healthy(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }

    /// Stops the shards and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Holds a shard's [`LoopState::Running`] while it lives; dropped when the
/// loop returns or unwinds from a panic, it marks the shard stopped, so
/// `/health` and the supervisor see a shard that died.
#[derive(Debug)]
pub struct RunningGuard(Arc<ShardStats>);

impl RunningGuard {
    pub fn new(stats: Arc<ShardStats>) -> Self {
        stats.set_loop_state(LoopState::Running);
        RunningGuard(stats)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.set_loop_state(LoopState::Stopped);
    }
}

/// Attaches the AF_XDP program when the media settings ask for it. A
/// failure is logged and the relay runs on its sockets alone (the
/// automatic fallback of BRIEF §11).
fn attach_xdp(
    media: &sbc_core::policy::MediaPolicy,
    shards: u16,
) -> Option<(Arc<xdp::XdpProgram>, std::net::Ipv4Addr)> {
    let settings = media.xdp.as_ref()?;
    let source = match media.bind {
        std::net::IpAddr::V4(a) if !a.is_unspecified() => a,
        other => {
            tracing::warn!(bind = %other, "AF_XDP media path needs a specific IPv4 media address: relaying through sockets");
            return None;
        }
    };
    let plan = sbc_core::media::PortPlan::new(media.first_port, media.last_port, shards)?;
    match xdp::XdpProgram::attach(settings, plan, Some(source)) {
        Ok(p) => {
            tracing::info!(interface = %settings.interface, mode = p.mode, "AF_XDP media path attached");
            Some((Arc::new(p), source))
        }
        Err(e) => {
            tracing::warn!(interface = %settings.interface, error = %e, "AF_XDP media path unavailable: relaying through sockets");
            None
        }
    }
}

/// Opens shard `me`'s AF_XDP socket on the receive queue of the same
/// number, with its netlink socket for next hops. `None` (logged) when the
/// interface has no such queue or the kernel refuses: that shard relays
/// through its sockets.
fn open_xsk(
    program: &xdp::XdpProgram,
    source: std::net::Ipv4Addr,
    me: usize,
    stats: &ShardStats,
) -> Option<xdp::XdpPath> {
    let queue = u32::try_from(me).ok()?;
    let opened =
        xdp::Xsk::open(program, queue, queue).and_then(|xsk| Ok((xsk, nexthop::Netlink::open()?)));
    match opened {
        Ok((xsk, netlink)) => {
            tracing::info!(
                shard = me,
                queue,
                zero_copy = xsk.zero_copy(),
                "AF_XDP socket open"
            );
            stats.xdp_socket.store(1, Ordering::Relaxed);
            Some(xdp::XdpPath {
                xsk,
                stats_read: std::time::Instant::now(),
                source,
                ifindex: program.ifindex,
                link: program.link,
                netlink,
                hops: nexthop::Cache::default(),
            })
        }
        // Queues past the interface's last are refused with EINVAL: only
        // a refusal of queue 0, or another error, is worth a warning.
        Err(e) if me > 0 && e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::info!(
                shard = me,
                queue,
                "the interface has no such queue: this shard relays through its sockets"
            );
            None
        }
        Err(e) => {
            tracing::warn!(shard = me, queue, error = %e, "no AF_XDP socket: this shard relays through its sockets");
            None
        }
    }
}
