//! Groups a batch of outgoing datagrams for UDP GSO (generic segmentation
//! offload, Linux 4.18+): datagrams of one size to one destination leave
//! in one `sendmsg` with a `UDP_SEGMENT` control message, and the kernel
//! walks its send path once for the whole group instead of once per
//! datagram. On the wire nothing changes: each segment is its own UDP
//! datagram.
//!
//! Groups are sent in the order they were opened and a message only joins
//! a group at or after the last group holding an earlier message of its
//! call, so the messages of one call leave in the order they were queued.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::engine::Outgoing;

/// No member after this one.
const END: u32 = u32::MAX;

/// Datagrams leaving together: `count` messages of `len` bytes to `dst`,
/// linked from `first` through `Grouper::next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub dst: SocketAddr,
    pub len: usize,
    pub first: u32,
    last: u32,
    pub count: u32,
}

/// Limits of one GSO send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most segments in one send (the kernel's UDP_MAX_SEGMENTS is 64 on
    /// older kernels).
    pub segments: u32,
    /// Most bytes in one send (a send slot).
    pub bytes: usize,
    /// Largest datagram that may be grouped (it must fit the path MTU on
    /// its own); 0 turns grouping off.
    pub datagram: usize,
}

/// Reusable grouping state (no allocation per batch once warm).
#[derive(Debug, Default)]
pub struct Grouper {
    groups: Vec<Group>,
    next: Vec<u32>,
    latest: HashMap<(SocketAddr, usize), usize>,
    last_of_call: HashMap<u64, usize>,
}

impl Grouper {
    /// Groups `out` (in queue order); read the result with
    /// [`Grouper::groups`] and [`Grouper::members`].
    pub fn plan(&mut self, out: &[Outgoing], limits: Limits) {
        self.groups.clear();
        self.next.clear();
        self.next.resize(out.len(), END);
        self.latest.clear();
        self.last_of_call.clear();
        for (i, o) in out.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else {
                break;
            };
            let floor = match o.call {
                0 => 0,
                c => self.last_of_call.get(&c).copied().unwrap_or(0),
            };
            let eligible = o.len > 0 && o.len <= limits.datagram;
            let join = eligible
                .then(|| self.latest.get(&(o.dst, o.len)).copied())
                .flatten()
                .filter(|&g| {
                    let group = &self.groups[g];
                    g >= floor
                        && group.count < limits.segments
                        && (group.count as usize + 1) * o.len <= limits.bytes
                });
            let g = match join {
                Some(g) => {
                    let last = self.groups[g].last;
                    if let Some(n) = self.next.get_mut(last as usize) {
                        *n = i;
                    }
                    let group = &mut self.groups[g];
                    group.last = i;
                    group.count += 1;
                    g
                }
                None => {
                    let g = self.groups.len();
                    self.groups.push(Group {
                        dst: o.dst,
                        len: o.len,
                        first: i,
                        last: i,
                        count: 1,
                    });
                    if eligible {
                        self.latest.insert((o.dst, o.len), g);
                    }
                    g
                }
            };
            if o.call != 0 {
                self.last_of_call.insert(o.call, g);
            }
        }
    }

    /// The groups, in sending order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The indices (into the planned batch) of a group's messages, in order.
    pub fn members(&self, g: &Group) -> Members<'_> {
        Members {
            next: &self.next,
            at: g.first,
        }
    }
}

/// Iterator over a group's message indices.
#[derive(Debug)]
pub struct Members<'a> {
    next: &'a [u32],
    at: u32,
}

impl Iterator for Members<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.at == END {
            return None;
        }
        let i = self.at as usize;
        self.at = self.next.get(i).copied().unwrap_or(END);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn out(dst: &str, len: usize, call: u64) -> Outgoing {
        Outgoing {
            dst: dst.parse().unwrap(),
            start: 0,
            len,
            call,
        }
    }

    const LIMITS: Limits = Limits {
        segments: 64,
        bytes: 16384,
        datagram: 1400,
    };

    fn plan(batch: &[Outgoing], limits: Limits) -> Vec<Vec<usize>> {
        let mut g = Grouper::default();
        g.plan(batch, limits);
        g.groups().iter().map(|x| g.members(x).collect()).collect()
    }

    /// Every call's messages leave in queue order.
    fn assert_call_order(batch: &[Outgoing], groups: &[Vec<usize>]) {
        let sent: Vec<usize> = groups.iter().flatten().copied().collect();
        let mut all = sent.clone();
        all.sort_unstable();
        assert_eq!(all, (0..batch.len()).collect::<Vec<_>>(), "each once");
        for call in batch.iter().map(|o| o.call).filter(|&c| c != 0) {
            let order: Vec<usize> = sent
                .iter()
                .copied()
                .filter(|&i| batch[i].call == call)
                .collect();
            assert!(order.is_sorted(), "call {call}: {order:?}");
        }
    }

    #[test]
    fn same_size_same_destination_go_together() {
        let a = "127.0.0.1:5060";
        let batch = [out(a, 500, 1), out(a, 500, 2), out(a, 500, 3)];
        assert_eq!(plan(&batch, LIMITS), [vec![0, 1, 2]]);
    }

    #[test]
    fn a_call_never_overtakes_itself() {
        let a = "127.0.0.1:5060";
        // BYE of call 1 (400), then ACK (380) and BYE (400) of call 2: the
        // second BYE may not join the first BYE's group, which leaves
        // before call 2's ACK.
        let batch = [out(a, 400, 1), out(a, 380, 2), out(a, 400, 2)];
        let groups = plan(&batch, LIMITS);
        assert_call_order(&batch, &groups);
        assert_eq!(groups, [vec![0], vec![1], vec![2]]);
        // 180 and 200 per call: all 180s together, then all 200s.
        let batch = [
            out(a, 300, 1),
            out(a, 600, 1),
            out(a, 300, 2),
            out(a, 600, 2),
            out(a, 300, 3),
            out(a, 600, 3),
        ];
        let groups = plan(&batch, LIMITS);
        assert_call_order(&batch, &groups);
        assert_eq!(groups, [vec![0, 2, 4], vec![1, 3, 5]]);
    }

    #[test]
    fn limits_split_groups_and_big_or_unrelated_datagrams_go_alone() {
        let a = "127.0.0.1:5060";
        let b = "127.0.0.2:5060";
        let batch = [
            out(a, 500, 1),
            out(b, 500, 2),
            out(a, 2000, 3),
            out(a, 500, 4),
            out(a, 500, 0),
        ];
        let groups = plan(
            &batch,
            Limits {
                segments: 2,
                ..LIMITS
            },
        );
        assert_eq!(groups, [vec![0, 3], vec![1], vec![2], vec![4]]);
        let off = plan(
            &batch,
            Limits {
                datagram: 0,
                ..LIMITS
            },
        );
        assert_eq!(off.len(), batch.len(), "grouping off");
        let bytes = plan(
            &batch,
            Limits {
                bytes: 1000,
                ..LIMITS
            },
        );
        assert_eq!(bytes[0], [0, 3]);
    }

    #[test]
    fn random_batches_keep_every_calls_order() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut step = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let dsts = ["127.0.0.1:5060", "127.0.0.2:5060"];
        for _ in 0..500 {
            let n = (step() % 60) as usize + 1;
            let batch: Vec<Outgoing> = (0..n)
                .map(|_| {
                    let r = step();
                    out(
                        dsts[(r % 2) as usize],
                        [300, 400, 500][(r >> 8) as usize % 3],
                        (r >> 16) % 6,
                    )
                })
                .collect();
            let groups = plan(
                &batch,
                Limits {
                    segments: 4,
                    ..LIMITS
                },
            );
            assert_call_order(&batch, &groups);
            for g in &groups {
                assert!(g.len() <= 4);
                let first = &batch[g[0]];
                assert!(
                    g.iter()
                        .all(|&i| batch[i].dst == first.dst && batch[i].len == first.len)
                );
            }
        }
    }
}
