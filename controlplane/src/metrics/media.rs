//! Media relay metrics: packets, bytes and losses by direction, drops by
//! reason (sums over shards), and the sessions and ports each shard holds.

use std::fmt;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::DescriptorEncoder;
use sbc_core::media::MediaDrop;
use sbc_core::stats::ShardStats;

use super::{SbcCollector, counter, gauge, total_counter};

/// `direction` label values, by index of the per-direction arrays: 0 is
/// what the caller's side sent, 1 what the callee's side sent.
pub const MEDIA_DIRECTIONS: [&str; 2] = ["caller_to_callee", "callee_to_caller"];

impl SbcCollector {
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
        gauge(
            enc,
            "media_sessions",
            "Calls with anchored media each shard holds now.",
            self.per_shard_gauge(|s| &s.media_sessions),
        )?;
        gauge(
            enc,
            "media_ports_in_use",
            "Media ports the calls of each shard hold now.",
            self.per_shard_gauge(|s| &s.media_ports_in_use),
        )?;
        gauge(
            enc,
            "media_xdp_socket",
            "1 while the shard relays media through an AF_XDP socket.",
            self.per_shard_gauge(|s| &s.xdp_socket),
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
            total_counter(enc, name, help, self.total(field))?;
        }
        let kernel = sbc_core::stats::XDP_KERNEL_DROPS
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
        total_counter(
            enc,
            "media_timeouts",
            "Calls ended because their media stopped.",
            self.total(|s| &s.media_timeouts),
        )
    }
}
