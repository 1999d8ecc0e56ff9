//! Media ports: the configured range is cut into RTP/RTCP pairs (even RTP
//! port, RTCP on the next), and the pairs into one disjoint slice per
//! shard, so a port alone names the shard that relays it.

use std::ops::Range;

/// How the configured port range maps to pairs and shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPlan {
    /// First RTP port (even).
    pub base: u16,
    /// Pairs per shard.
    pub per_shard: u16,
    pub shards: u16,
}

impl PortPlan {
    /// Splits `first..=last` for `shards` shards. `None` when the range
    /// holds fewer pairs than shards.
    pub fn new(first: u16, last: u16, shards: u16) -> Option<Self> {
        let base = first.checked_add(first % 2)?;
        if last <= base || shards == 0 {
            return None;
        }
        let pairs = (u32::from(last) - u32::from(base)).div_ceil(2);
        let per_shard = u16::try_from(pairs / u32::from(shards)).ok()?;
        (per_shard > 0).then_some(PortPlan {
            base,
            per_shard,
            shards,
        })
    }

    /// The pairs (global indices) of one shard.
    pub fn pairs_of(&self, shard: u16) -> Range<u32> {
        let start = u32::from(shard) * u32::from(self.per_shard);
        start..start + u32::from(self.per_shard)
    }

    /// The ports of one shard, RTP and RTCP.
    pub fn ports_of(&self, shard: u16) -> Range<u32> {
        let pairs = self.pairs_of(shard);
        let first = u32::from(self.base) + 2 * pairs.start;
        first..first + 2 * u32::from(self.per_shard)
    }

    /// The shard owning a port, if it is in the plan.
    pub fn owner(&self, port: u16) -> Option<u16> {
        let offset = port.checked_sub(self.base)?;
        let shard = (offset / 2) / self.per_shard;
        (shard < self.shards).then_some(shard)
    }

    pub fn rtp_port(&self, pair: u32) -> u16 {
        u16::try_from(u32::from(self.base) + 2 * pair).unwrap_or(0)
    }
}

/// One shard's free pairs, handed out in FIFO order: a pair just freed is
/// the last to be reused, so a stream still arriving for an ended call is
/// not latched by the next call (the whole slice turns over first).
#[derive(Debug)]
pub struct PortPool {
    plan: PortPlan,
    shard: u16,
    free: std::collections::VecDeque<u32>,
    /// Per local pair: whether it is in `free` (O(1) double-free check).
    is_free: Vec<bool>,
}

impl PortPool {
    pub fn new(plan: PortPlan, shard: u16) -> Self {
        // Low ports first.
        let free = plan.pairs_of(shard).collect();
        PortPool {
            plan,
            shard,
            free,
            is_free: vec![true; usize::from(plan.per_shard)],
        }
    }

    pub fn plan(&self) -> &PortPlan {
        &self.plan
    }

    /// A free pair (its global index), or `None` when the slice is used up.
    pub fn allocate(&mut self) -> Option<u32> {
        let pair = self.free.pop_front()?;
        if let Some(i) = self.local_index(pair)
            && let Some(f) = self.is_free.get_mut(i)
        {
            *f = false;
        }
        Some(pair)
    }

    pub fn release(&mut self, pair: u32) {
        let Some(i) = self.local_index(pair) else {
            return;
        };
        if let Some(f) = self.is_free.get_mut(i)
            && !*f
        {
            *f = true;
            self.free.push_back(pair);
        }
    }

    /// Pairs free now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn in_use(&self) -> usize {
        usize::from(self.plan.per_shard) - self.free.len()
    }

    /// Index of a pair within this shard's slice.
    pub fn local_index(&self, pair: u32) -> Option<usize> {
        let r = self.plan.pairs_of(self.shard);
        r.contains(&pair).then(|| (pair - r.start) as usize)
    }

    /// The pair (global index) and whether it is the RTCP port, for a port
    /// of this shard.
    pub fn pair_of_port(&self, port: u16) -> Option<(u32, bool)> {
        let offset = u32::from(port.checked_sub(self.plan.base)?);
        let pair = offset / 2;
        self.plan
            .pairs_of(self.shard)
            .contains(&pair)
            .then_some((pair, offset % 2 == 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_split_into_disjoint_even_aligned_slices() {
        let plan = PortPlan::new(30001, 39999, 2).unwrap();
        assert_eq!(plan.base, 30002);
        assert_eq!(plan.per_shard, 2499);
        assert_eq!(plan.ports_of(0), 30002..35000);
        assert_eq!(plan.ports_of(1), 35000..39998);
        assert_eq!(plan.owner(30002), Some(0));
        assert_eq!(plan.owner(34999), Some(0));
        assert_eq!(plan.owner(35000), Some(1));
        assert_eq!(plan.owner(39998), None, "left over after the even split");
        assert_eq!(plan.owner(100), None);
        assert!(PortPlan::new(30000, 30001, 2).is_none());
    }

    #[test]
    fn pool_allocates_releases_and_maps_ports() {
        let plan = PortPlan::new(40000, 40009, 1).unwrap();
        let mut pool = PortPool::new(plan, 0);
        let a = pool.allocate().unwrap();
        assert_eq!(plan.rtp_port(a), 40000);
        assert_eq!(pool.pair_of_port(40001), Some((a, true)));
        assert_eq!(pool.in_use(), 1);
        let all: Vec<_> = std::iter::from_fn(|| pool.allocate()).collect();
        assert_eq!(all.len(), 4);
        assert!(pool.allocate().is_none(), "exhausted");
        pool.release(a);
        pool.release(a);
        assert_eq!(pool.allocate(), Some(a));
        assert!(pool.allocate().is_none(), "double release is ignored");
        pool.release(12345);
        assert!(pool.allocate().is_none(), "foreign pairs are ignored");
    }

    #[test]
    fn a_freed_pair_is_reused_last() {
        let plan = PortPlan::new(40000, 40009, 1).unwrap();
        let mut pool = PortPool::new(plan, 0);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        pool.release(a);
        let next: Vec<_> = std::iter::from_fn(|| pool.allocate()).collect();
        assert_eq!(next.len(), 4);
        assert_eq!(*next.last().unwrap(), a, "the whole slice turns over first");
        assert!(!next.contains(&b));
    }
}
