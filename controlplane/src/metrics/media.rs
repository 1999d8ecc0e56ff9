//! Media relay metrics: packets, bytes and losses by direction, drops by
//! reason (sums over shards), and the sessions and ports each shard holds.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use sbc_dataplane::media::MediaDrop;
use sbc_dataplane::stats::ShardStats;

use super::{SbcCollector, counter, gauge, load};

/// `direction` label values, by index of the per-direction arrays: 0 is
/// what the caller's side sent, 1 what the callee's side sent.
pub const MEDIA_DIRECTIONS: [&str; 2] = ["caller_to_callee", "callee_to_caller"];

impl SbcCollector {
    /// The sum over shards of entry `i` of one of the shards' arrays.
    fn total_at(&self, array: impl Fn(&ShardStats) -> &[AtomicU64], i: usize) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| array(s).get(i))
            .map(load)
            .fold(0, u64::wrapping_add)
    }

    pub(super) fn encode_media(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        type ByDirection = fn(&ShardStats) -> &[AtomicU64];
        let families: [(&str, &str, ByDirection); 3] = [
            (
                "media_packets",
                "Media packets relayed, by direction.",
                |s| &s.media_packets,
            ),
            ("media_bytes", "Media bytes relayed, by direction.", |s| {
                &s.media_bytes
            }),
            (
                "media_lost_packets",
                "RTP packets lost (sequence gaps), by direction; added when calls end.",
                |s| &s.media_lost,
            ),
        ];
        for (name, help, array) in families {
            let samples = MEDIA_DIRECTIONS
                .iter()
                .enumerate()
                .map(|(i, d)| ([("direction", *d)], self.total_at(array, i)));
            counter(enc, name, help, samples)?;
        }
        let dropped = MediaDrop::ALL.iter().enumerate().map(|(i, d)| {
            (
                [("reason", d.label())],
                self.total_at(|s| &s.media_dropped, i),
            )
        });
        counter(
            enc,
            "media_dropped",
            "Media packets dropped, by reason.",
            dropped,
        )?;
        let sessions = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| ([("shard", i)], s.media_sessions.load(Ordering::Relaxed)));
        gauge(
            enc,
            "media_sessions",
            "Calls with anchored media each shard holds now.",
            sessions,
        )?;
        let ports = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| ([("shard", i)], s.media_ports_in_use.load(Ordering::Relaxed)));
        gauge(
            enc,
            "media_ports_in_use",
            "Media ports the calls of each shard hold now.",
            ports,
        )?;
        let xdp_sockets = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| ([("shard", i)], s.xdp_socket.load(Ordering::Relaxed)));
        gauge(
            enc,
            "media_xdp_socket",
            "1 while the shard relays media through an AF_XDP socket.",
            xdp_sockets,
        )?;
        type Total = fn(&ShardStats) -> &AtomicU64;
        let xdp: [(&str, &str, Total); 3] = [
            (
                "media_xdp_received",
                "Frames the shards' AF_XDP sockets received.",
                |s| &s.xdp_received,
            ),
            (
                "media_xdp_sent",
                "Frames relayed on the AF_XDP path (rewritten in place and transmitted).",
                |s| &s.xdp_sent,
            ),
            (
                "media_xdp_fallback",
                "Frames received on the AF_XDP path whose payload was sent through a UDP socket (next hop not yet learned, or the transmit ring full).",
                |s| &s.xdp_fallback,
            ),
        ];
        for (name, help, field) in xdp {
            let desc = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(self.total(field)).encode(desc)?;
        }
        let kernel = sbc_dataplane::stats::XDP_KERNEL_DROPS
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    [("reason", *r)],
                    self.total_at(|s| &s.xdp_kernel_dropped, i),
                )
            });
        counter(
            enc,
            "media_xdp_kernel_dropped",
            "Frames the kernel dropped on the shards' AF_XDP sockets, by reason (read about once a second).",
            kernel,
        )?;
        let timeouts = self.total(|s| &s.media_timeouts);
        let desc = enc.encode_descriptor(
            "media_timeouts",
            "Calls ended because their media stopped.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(timeouts).encode(desc)
    }
}
