//! The AF_XDP media fast path (BRIEF §11): an XDP program on the media
//! interface hands each shard the UDP frames for its own media ports, on
//! the receive queue with the shard's number, through an AF_XDP socket;
//! the shard rewrites a frame's headers in place and transmits it from the
//! same memory. Everything else (SIP, other traffic, media for a port whose
//! shard has no socket on the queue it arrived on) goes on to the kernel's
//! stack and the shards' UDP sockets, which stay bound: they are the
//! fallback, and relay whatever the fast path does not.
//!
//! The program is written here in BPF instructions (no compiler, no object
//! file) and attached with a BPF link, so it is detached when the process
//! ends, however it ends.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::nexthop::{self, Link, Netlink};
use sbc_core::media::PortPlan;
use sbc_core::policy::{XdpMode, XdpSettings};

// bpf(2) commands, map and program types, attach types and helpers.
const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_CREATE: i32 = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const HELPER_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
const AF_XDP: i32 = 44;

/// UMEM frames per shard and their size (a page holds two).
const FRAMES: u32 = 4096;
const FRAME_SIZE: u32 = 2048;
/// The largest frame a UMEM frame holds in copy mode (the kernel keeps
/// XDP_PACKET_HEADROOM, 256 bytes, in front); larger ones pass to the
/// stack.
const MAX_FRAME: i32 = 2048 - 256;
/// RX and TX ring entries; the completion ring holds every frame.
const RING: u32 = 2048;
/// Fill ring entries: twice the frames, because the kernel publishes how
/// far it has read the fill ring only now and then, so entries it has
/// already taken can still look occupied.
const FILL_RING: u32 = 2 * FRAMES;
/// Most TX kicks per flush (each sends up to the kernel's batch, 32).
const MAX_KICKS: usize = 256;

/// One BPF instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// A bpf(2) attribute block (the largest part any command here uses).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn u32(mut self, at: usize, v: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: i32, attr: &mut Attr) -> io::Result<RawFd> {
    // SAFETY: `attr` is a 128-byte, 8-aligned block that lives across the
    // call; every pointer stored in it (instructions, license, log, key,
    // value) points to memory the caller keeps alive across the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), 128u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    RawFd::try_from(r).map_err(|_| io::Error::other("bpf(2) returned an out-of-range value"))
}

/// Takes ownership of a descriptor bpf(2) or socket(2) returned.
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel to this process and
    // nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The XDP program, its XSKMAP and the link attaching it.
#[derive(Debug)]
pub(crate) struct XdpProgram {
    map: OwnedFd,
    // Dropping the link detaches the program.
    _link: OwnedFd,
    _prog: OwnedFd,
    pub ifindex: u32,
    /// The interface's hardware type and MAC.
    pub link: Link,
    /// "native" or "generic".
    pub mode: &'static str,
}

/// The program: UDP over IPv4 (no options, not fragmented) to `bind` (any
/// address when `None`) and a port of shard N, received on queue N, goes
/// to the socket at XSKMAP[N]; everything else, and anything for a shard
/// with no socket in the map, passes to the stack.
fn program(map_fd: RawFd, plan: PortPlan, bind: Option<Ipv4Addr>) -> Vec<Insn> {
    // Jumps to "pass" are patched once its position is known.
    let mut p: Vec<Insn> = Vec::with_capacity(32);
    let mut to_pass: Vec<usize> = Vec::new();
    let mut jump_pass = |p: &mut Vec<Insn>, code: u8, dst: u8, src: u8, imm: i32| {
        to_pass.push(p.len());
        p.push(insn(code, dst, src, 0, imm));
    };
    p.push(insn(0xbf, 6, 1, 0, 0)); // r6 = ctx
    p.push(insn(0x61, 2, 6, 0, 0)); // r2 = ctx->data
    p.push(insn(0x61, 3, 6, 4, 0)); // r3 = ctx->data_end
    p.push(insn(0xbf, 4, 2, 0, 0)); // r4 = r2
    p.push(insn(0x07, 4, 0, 0, 42)); // r4 += eth + ip + udp
    jump_pass(&mut p, 0x2d, 4, 3, 0); // if r4 > r3: too short
    p.push(insn(0x07, 4, 0, 0, MAX_FRAME - 42)); // r4 = data + MAX_FRAME
    jump_pass(&mut p, 0xad, 4, 3, 0); // if r4 < r3: too long for a frame
    p.push(insn(0x69, 5, 2, 12, 0)); // r5 = ethertype (as loaded, little-endian)
    jump_pass(&mut p, 0x55, 5, 0, 0x0008); // != IPv4
    p.push(insn(0x71, 5, 2, 14, 0)); // r5 = version/IHL
    jump_pass(&mut p, 0x55, 5, 0, 0x45); // options or not v4
    p.push(insn(0x71, 5, 2, 23, 0)); // r5 = protocol
    jump_pass(&mut p, 0x55, 5, 0, 17); // not UDP
    p.push(insn(0x69, 5, 2, 20, 0)); // r5 = flags/fragment offset
    p.push(insn(0x57, 5, 0, 0, 0xff3f)); // MF | offset (little-endian load)
    jump_pass(&mut p, 0x55, 5, 0, 0); // a fragment
    if let Some(ip) = bind {
        p.push(insn(0x61, 5, 2, 30, 0)); // r5 = destination address
        // 32-bit compare (JMP32 JNE): the address as loaded.
        jump_pass(&mut p, 0x56, 5, 0, i32::from_ne_bytes(ip.octets()));
    }
    p.push(insn(0x69, 5, 2, 36, 0)); // r5 = destination port
    p.push(insn(0xdc, 5, 0, 0, 16)); // to host order
    jump_pass(&mut p, 0xa5, 5, 0, i32::from(plan.base)); // below the range
    p.push(insn(0x17, 5, 0, 0, i32::from(plan.base))); // r5 -= base
    p.push(insn(0x37, 5, 0, 0, 2 * i32::from(plan.per_shard))); // r5 /= ports per shard
    jump_pass(&mut p, 0x35, 5, 0, i32::from(plan.shards)); // above the range
    p.push(insn(0x61, 4, 6, 16, 0)); // r4 = ctx->rx_queue_index
    jump_pass(&mut p, 0x5d, 5, 4, 0); // another queue than the port's shard
    p.push(insn(0xbf, 2, 5, 0, 0)); // r2 = key (the shard)
    p.push(insn(0x18, 1, 1, 0, map_fd)); // r1 = the map (pseudo map fd)
    p.push(insn(0, 0, 0, 0, 0));
    p.push(insn(0xb7, 3, 0, 0, XDP_PASS)); // no socket at the key: pass
    p.push(insn(0x85, 0, 0, 0, HELPER_REDIRECT_MAP));
    p.push(insn(0x95, 0, 0, 0, 0)); // exit
    let pass = p.len();
    p.push(insn(0xb7, 0, 0, 0, XDP_PASS));
    p.push(insn(0x95, 0, 0, 0, 0));
    for at in to_pass {
        if let Some(i) = p.get_mut(at) {
            i.off = i16::try_from(pass - at - 1).unwrap_or(0);
        }
    }
    p
}

impl XdpProgram {
    /// Loads the program for `plan` and attaches it to the interface.
    pub(crate) fn attach(
        settings: &XdpSettings,
        plan: PortPlan,
        bind: Option<Ipv4Addr>,
    ) -> io::Result<XdpProgram> {
        let name = std::ffi::CString::new(settings.interface.as_str())
            .map_err(|_| io::Error::other("interface name holds a NUL byte"))?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::other(format!(
                "no network interface {:?}: {}",
                settings.interface,
                io::Error::last_os_error()
            )));
        }
        let link = Netlink::open()?.link(ifindex)?;
        if !matches!(
            link.hw_type,
            nexthop::ARPHRD_ETHER | nexthop::ARPHRD_LOOPBACK
        ) {
            return Err(io::Error::other(format!(
                "{:?} is not an Ethernet interface (hardware type {}): the fast path reads Ethernet frames",
                settings.interface, link.hw_type
            )));
        }
        let map = own(bpf(
            BPF_MAP_CREATE,
            &mut Attr::new()
                .u32(0, BPF_MAP_TYPE_XSKMAP)
                .u32(4, 4)
                .u32(8, 4)
                .u32(12, u32::from(plan.shards)),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create the XSKMAP: {e}")))?);
        let insns = program(map.as_raw_fd(), plan, bind);
        let license = b"Apache-2.0\0";
        let mut log = vec![0u8; 65536];
        let load = |log_level: u32, log: &mut [u8]| {
            bpf(
                BPF_PROG_LOAD,
                &mut Attr::new()
                    .u32(0, BPF_PROG_TYPE_XDP)
                    .u32(4, u32::try_from(insns.len()).unwrap_or(0))
                    .u64(8, insns.as_ptr() as u64)
                    .u64(16, license.as_ptr() as u64)
                    .u32(24, log_level)
                    .u32(28, u32::try_from(log.len()).unwrap_or(0))
                    .u64(32, log.as_mut_ptr() as u64)
                    .u32(68, BPF_XDP),
            )
        };
        // Without a verifier log first; with one only to explain a refusal.
        let prog = load(0, &mut log)
            .or_else(|_| load(1, &mut log))
            .map(own)
            .map_err(|e| {
                let end = log.iter().position(|&b| b == 0).unwrap_or(0);
                io::Error::new(
                    e.kind(),
                    format!(
                        "the kernel refused the XDP program: {e}: {}",
                        String::from_utf8_lossy(&log[..end]).trim()
                    ),
                )
            })?;
        let modes: &[(u32, &'static str)] = match settings.mode {
            XdpMode::Auto => &[
                (XDP_FLAGS_DRV_MODE, "native"),
                (XDP_FLAGS_SKB_MODE, "generic"),
            ],
            XdpMode::Native => &[(XDP_FLAGS_DRV_MODE, "native")],
            XdpMode::Generic => &[(XDP_FLAGS_SKB_MODE, "generic")],
        };
        let mut last = io::Error::other("no attach mode");
        for &(flags, mode) in modes {
            let attr = Attr::new()
                .u32(0, u32::try_from(prog.as_raw_fd()).unwrap_or(0))
                .u32(4, ifindex)
                .u32(8, BPF_XDP)
                .u32(12, flags);
            match bpf(BPF_LINK_CREATE, &mut { attr }) {
                Ok(link_fd) => {
                    return Ok(XdpProgram {
                        map,
                        _link: own(link_fd),
                        _prog: prog,
                        ifindex,
                        link,
                        mode,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(io::Error::new(
            last.kind(),
            format!("cannot attach XDP to {:?}: {last}", settings.interface),
        ))
    }

    pub(crate) fn map_fd(&self) -> RawFd {
        self.map.as_raw_fd()
    }
}

/// One mmap'ed AF_XDP ring.
struct Ring {
    base: *mut u8,
    len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    desc: *mut u8,
    /// Entries - 1 (a power of two).
    mask: u32,
    /// Our side's index (the producer's for fill and TX, the consumer's
    /// for RX and completion), published by `publish`.
    local: u32,
}

impl Ring {
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        entries: u32,
        entry: usize,
        pgoff: u64,
        producer_side: bool,
    ) -> io::Result<Ring> {
        let len = usize::try_from(off.desc)
            .unwrap_or(usize::MAX)
            .saturating_add(entries as usize * entry);
        // SAFETY: maps the ring the kernel set up for this socket at
        // `pgoff`; the kernel checks the length against the ring's size.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                libc::off_t::try_from(pgoff).unwrap_or(0),
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = base.cast::<u8>();
        let at = |o: u64| usize::try_from(o).unwrap_or(0);
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS for this very
        // mapping and lie inside it; the producer and consumer words are
        // 4-aligned u32s the kernel updates atomically.
        let (producer, consumer, desc) = unsafe {
            (
                base.add(at(off.producer)).cast::<AtomicU32>().cast_const(),
                base.add(at(off.consumer)).cast::<AtomicU32>().cast_const(),
                base.add(at(off.desc)),
            )
        };
        let mut ring = Ring {
            base,
            len,
            producer,
            consumer,
            desc,
            mask: entries - 1,
            local: 0,
        };
        ring.local = if producer_side {
            ring.producer().load(Ordering::Relaxed)
        } else {
            ring.consumer().load(Ordering::Relaxed)
        };
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (see `map`).
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (see `map`).
        unsafe { &*self.consumer }
    }

    /// Producer side: free entries.
    fn free(&self) -> u32 {
        (self.mask + 1).wrapping_sub(
            self.local
                .wrapping_sub(self.consumer().load(Ordering::Acquire)),
        )
    }

    /// Consumer side: entries ready.
    fn ready(&self) -> u32 {
        self.producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.local)
    }

    fn slot(&self, index: u32, size: usize) -> *mut u8 {
        // SAFETY: `index & mask` < entries, so the slot lies inside the
        // descriptor array of the mapping.
        unsafe { self.desc.add((index & self.mask) as usize * size) }
    }

    fn put_addr(&mut self, addr: u64) {
        // SAFETY: an 8-byte slot of a fill ring, free (checked by the
        // caller with `free`), which the kernel reads only after `publish`.
        unsafe { self.slot(self.local, 8).cast::<u64>().write_unaligned(addr) };
        self.local = self.local.wrapping_add(1);
    }

    fn take_addr(&mut self) -> u64 {
        // SAFETY: an 8-byte slot of a completion ring the kernel filled
        // (checked by the caller with `ready`).
        let a = unsafe { self.slot(self.local, 8).cast::<u64>().read_unaligned() };
        self.local = self.local.wrapping_add(1);
        a
    }

    fn put_desc(&mut self, d: libc::xdp_desc) {
        // SAFETY: a free descriptor slot of the TX ring (see `put_addr`).
        unsafe {
            self.slot(self.local, std::mem::size_of::<libc::xdp_desc>())
                .cast::<libc::xdp_desc>()
                .write_unaligned(d);
        }
        self.local = self.local.wrapping_add(1);
    }

    fn take_desc(&mut self) -> libc::xdp_desc {
        // SAFETY: a filled descriptor slot of the RX ring (see `take_addr`).
        let d = unsafe {
            self.slot(self.local, std::mem::size_of::<libc::xdp_desc>())
                .cast::<libc::xdp_desc>()
                .read_unaligned()
        };
        self.local = self.local.wrapping_add(1);
        d
    }

    /// Makes our index visible to the kernel.
    fn publish(&self, producer_side: bool) {
        if producer_side {
            self.producer().store(self.local, Ordering::Release);
        } else {
            self.consumer().store(self.local, Ordering::Release);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; nothing refers to it
        // any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The UMEM: the frames RX fills and TX sends from.
pub(crate) struct Umem {
    base: *mut u8,
    len: usize,
}

impl Umem {
    /// The `len` bytes at `addr`, when they lie inside one frame.
    pub(crate) fn frame(&mut self, addr: u64, len: u32) -> Option<&mut [u8]> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len as usize)?;
        let frame = start / FRAME_SIZE as usize;
        if end > self.len || (end.saturating_sub(1)) / FRAME_SIZE as usize != frame {
            return None;
        }
        // SAFETY: `start..end` lies inside the mapping and inside one
        // frame, which the kernel handed to us in an RX descriptor and
        // does not touch until we put it on the fill or TX ring; the
        // `&mut self` borrow keeps a second slice from existing meanwhile.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.add(start), end - start) })
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: unmaps the anonymous mapping made in `Xsk::open`, after
        // the socket (declared before it in `Xsk`) has been closed.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// One shard's AF_XDP socket, its UMEM and rings.
pub(crate) struct Xsk {
    // Drop order: the socket first (the kernel lets go of the UMEM and
    // the rings), then the mappings.
    fd: OwnedFd,
    rings: Rings,
    umem: Umem,
}

/// The four rings of an AF_XDP socket.
pub(crate) struct Rings {
    fd: RawFd,
    fill: Ring,
    comp: Ring,
    rx: Ring,
    tx: Ring,
    /// TX descriptors the kernel has not taken yet.
    unsent: bool,
    /// Frames to give back that did not fit the fill ring yet (it always
    /// has room by its size; this keeps a frame from ever being lost).
    returning: Vec<u64>,
    zero_copy: bool,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk").field("fd", &self.fd).finish()
    }
}

// SAFETY: the raw pointers are into mappings the Xsk owns; it is moved to
// its shard's thread once and used only there.
unsafe impl Send for Xsk {}

fn sockopt<T>(fd: RawFd, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: passes a pointer to a live `T` and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Xsk {
    /// Opens a socket on the interface's receive queue `queue` and puts it
    /// in the program's map at `key`.
    pub(crate) fn open(program: &XdpProgram, queue: u32, key: u32) -> io::Result<Xsk> {
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = own(raw);
        let len = (FRAMES * FRAME_SIZE) as usize;
        // SAFETY: a fresh anonymous private mapping, owned by `Umem`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let umem = Umem {
            base: base.cast(),
            len,
        };
        let reg = libc::xdp_umem_reg {
            addr: umem.base as u64,
            len: len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sockopt(fd.as_raw_fd(), libc::XDP_UMEM_REG, &reg)?;
        for (opt, size) in [
            (libc::XDP_UMEM_FILL_RING, FILL_RING),
            (libc::XDP_UMEM_COMPLETION_RING, FRAMES),
            (libc::XDP_RX_RING, RING),
            (libc::XDP_TX_RING, RING),
        ] {
            sockopt(fd.as_raw_fd(), opt, &size)?;
        }
        // SAFETY: all-zero is a valid xdp_mmap_offsets (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen =
            libc::socklen_t::try_from(std::mem::size_of::<libc::xdp_mmap_offsets>()).unwrap_or(0);
        // SAFETY: `off` is writable for `optlen` bytes.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut optlen,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let raw = fd.as_raw_fd();
        let mut fill = Ring::map(
            raw,
            &off.fr,
            FILL_RING,
            8,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            true,
        )?;
        let comp = Ring::map(
            raw,
            &off.cr,
            FRAMES,
            8,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            false,
        )?;
        let rx = Ring::map(
            raw,
            &off.rx,
            RING,
            desc,
            libc::XDP_PGOFF_RX_RING as u64,
            false,
        )?;
        let tx = Ring::map(
            raw,
            &off.tx,
            RING,
            desc,
            libc::XDP_PGOFF_TX_RING as u64,
            true,
        )?;
        // Every frame starts on the fill ring: a frame is then always on
        // exactly one ring, in our hands, or in `returning`.
        for f in 0..FRAMES {
            fill.put_addr(u64::from(f * FRAME_SIZE));
        }
        fill.publish(true);
        let bind = |flags: u16| {
            let sa = libc::sockaddr_xdp {
                sxdp_family: AF_XDP as u16,
                sxdp_flags: flags,
                sxdp_ifindex: program.ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            };
            // SAFETY: passes a live sockaddr_xdp and its exact size.
            let r = unsafe {
                libc::bind(
                    raw,
                    (&sa as *const libc::sockaddr_xdp).cast(),
                    libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_xdp>())
                        .unwrap_or(0),
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        // Zero-copy where the driver has it, else copy.
        let zero_copy = match bind(libc::XDP_ZEROCOPY) {
            Ok(()) => true,
            Err(_) => {
                bind(libc::XDP_COPY)?;
                false
            }
        };
        let value = u32::try_from(raw).unwrap_or(0);
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &mut Attr::new()
                .u32(0, u32::try_from(program.map_fd()).unwrap_or(0))
                .u64(8, &key as *const u32 as u64)
                .u64(16, &value as *const u32 as u64),
        )?;
        Ok(Xsk {
            rings: Rings {
                fd: fd.as_raw_fd(),
                fill,
                comp,
                rx,
                tx,
                unsent: false,
                returning: Vec::with_capacity(FRAMES as usize),
                zero_copy,
            },
            fd,
            umem,
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether the socket got zero-copy (driver) mode.
    pub(crate) fn zero_copy(&self) -> bool {
        self.rings.zero_copy
    }

    /// The kernel's drop counters for this socket (XDP_STATISTICS, since
    /// it was opened): frames dropped on receive (no room or invalid),
    /// dropped because the RX ring was full, found the fill ring empty,
    /// and invalid TX descriptors. `None` if the kernel does not answer.
    pub(crate) fn kernel_drops(&self) -> Option<[u64; 4]> {
        // SAFETY: all-zero is a valid xdp_statistics (plain integers).
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len =
            libc::socklen_t::try_from(std::mem::size_of::<libc::xdp_statistics>()).unwrap_or(0);
        // SAFETY: `st` is writable for `len` bytes; the kernel writes at
        // most that many and says how many in `len`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut st as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        (r == 0).then_some([
            st.rx_dropped + st.rx_invalid_descs,
            st.rx_ring_full,
            st.rx_fill_ring_empty_descs,
            st.tx_invalid_descs,
        ])
    }

    /// Whether frames wait for a kick that could not be done yet.
    pub(crate) fn unsent(&self) -> bool {
        self.rings.unsent()
    }

    /// The frames and the rings, borrowed apart (a frame's bytes stay in
    /// use while rings move descriptors).
    pub(crate) fn parts(&mut self) -> (&mut Umem, &mut Rings) {
        (&mut self.umem, &mut self.rings)
    }
}

impl Rings {
    /// Moves transmitted frames back to the fill ring.
    pub(crate) fn reap(&mut self) {
        let n = self.comp.ready();
        for _ in 0..n {
            let a = self.comp.take_addr();
            self.recycle(a);
        }
        if n > 0 {
            self.comp.publish(false);
            self.fill.publish(true);
        }
    }

    /// The next received frame: its address and length.
    pub(crate) fn next(&mut self) -> Option<(u64, u32)> {
        (self.rx.ready() > 0).then(|| {
            let d = self.rx.take_desc();
            (d.addr, d.len)
        })
    }

    /// Gives a frame back to the kernel for receiving.
    pub(crate) fn recycle(&mut self, addr: u64) {
        while !self.returning.is_empty() && self.fill.free() > 0 {
            if let Some(a) = self.returning.pop() {
                self.fill.put_addr(a);
            }
        }
        if self.fill.free() > 0 {
            self.fill.put_addr(addr);
        } else {
            self.returning.push(addr);
        }
    }

    /// Whether queued frames still wait for the kernel to send them (copy
    /// mode sends only when kicked).
    pub(crate) fn unsent(&self) -> bool {
        self.unsent
    }

    /// Whether a received frame can be transmitted now.
    pub(crate) fn can_send(&self) -> bool {
        self.tx.free() > 0
    }

    /// Queues a received (and rewritten) frame for sending.
    pub(crate) fn send(&mut self, addr: u64, len: u32) {
        self.tx.put_desc(libc::xdp_desc {
            addr,
            len,
            options: 0,
        });
        self.unsent = true;
    }

    /// Publishes what this round took and gave, and has the kernel send
    /// what was queued. In copy mode each kick sends up to the kernel's
    /// batch: kick until the ring is drained, the kernel is busy, or the
    /// bound is reached; what is left stays `unsent` for the next round.
    /// In zero-copy mode one kick wakes the driver, which sends on its own.
    pub(crate) fn flush(&mut self) {
        self.rx.publish(false);
        self.fill.publish(true);
        if !self.unsent {
            return;
        }
        self.tx.publish(true);
        for _ in 0..MAX_KICKS {
            // SAFETY: a zero-length sendto on our own socket, with no
            // buffer or address.
            let r = unsafe {
                libc::sendto(
                    self.fd,
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            let drained = self.tx.consumer().load(Ordering::Acquire) == self.tx.local;
            if drained || self.zero_copy {
                self.unsent = false;
                break;
            }
            if r < 0 {
                let e = io::Error::last_os_error().raw_os_error();
                if !matches!(e, Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)) {
                    tracing::debug!(error = ?e, "AF_XDP transmit failed");
                    break;
                }
            }
        }
    }
}

/// One shard's fast path: its socket, the address it sends from, and the
/// next hops it has resolved.
pub(crate) struct XdpPath {
    pub xsk: Xsk,
    /// When the kernel's drop counters were last read.
    pub stats_read: std::time::Instant,
    /// The media address (source of relayed frames).
    pub source: Ipv4Addr,
    pub ifindex: u32,
    pub link: Link,
    pub netlink: Netlink,
    pub hops: nexthop::Cache,
}

impl std::fmt::Debug for XdpPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPath").field("xsk", &self.xsk).finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn plan() -> PortPlan {
        PortPlan::new(30000, 30099, 2).unwrap()
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        for bind in [None, Some(Ipv4Addr::new(192, 0, 2, 1))] {
            let p = program(-1, plan(), bind);
            for (i, x) in p.iter().enumerate() {
                let class = x.code & 0x07;
                let is_jump = (class == 0x05 || class == 0x06) && !matches!(x.code, 0x85 | 0x95);
                if is_jump {
                    let target = i as i64 + 1 + i64::from(x.off);
                    assert!(x.off > 0, "insn {i}: forward jumps only");
                    assert!(target < p.len() as i64, "insn {i} jumps past the end");
                }
            }
            // It ends with "return XDP_PASS".
            let end = &p[p.len() - 2..];
            assert_eq!(
                (end[0].code, end[0].imm, end[1].code),
                (0xb7, XDP_PASS, 0x95)
            );
        }
    }

    #[test]
    fn the_program_holds_the_plan() {
        let p = program(7, plan(), Some(Ipv4Addr::new(10, 0, 0, 200)));
        let imm = |code: u8| {
            p.iter()
                .filter(|x| x.code == code)
                .map(|x| x.imm)
                .collect::<Vec<_>>()
        };
        assert_eq!(imm(0xa5), vec![30000], "lowest port");
        // 30000-30099 holds 50 pairs: 25 per shard, 50 ports.
        assert_eq!(imm(0x37), vec![50], "ports per shard");
        assert_eq!(imm(0x35), vec![2], "shards");
        assert_eq!(
            imm(0x56),
            vec![i32::from_ne_bytes([10, 0, 0, 200])],
            "address"
        );
        assert_eq!(imm(0x18), vec![7], "map");
    }

    #[test]
    fn a_umem_frame_never_spans_two_frames_or_leaves_the_mapping() {
        let mut buf = vec![0u8; 2 * FRAME_SIZE as usize];
        let mut u = Umem {
            base: buf.as_mut_ptr(),
            len: buf.len(),
        };
        assert_eq!(u.frame(0, 100).map(|f| f.len()), Some(100));
        assert_eq!(
            u.frame(u64::from(FRAME_SIZE) + 256, 1792).map(|f| f.len()),
            Some(1792)
        );
        assert!(
            u.frame(u64::from(FRAME_SIZE) - 10, 20).is_none(),
            "spans two frames"
        );
        assert!(
            u.frame(u64::from(2 * FRAME_SIZE) - 10, 20).is_none(),
            "past the end"
        );
        assert!(u.frame(u64::MAX - 5, 10).is_none(), "overflows");
        std::mem::forget(u); // the Vec owns the memory, not a mapping
    }
}
