//! Load balancers: which of a cluster's hosts gets the next request.
//! Round robin, random, least request (Envoy's power of two choices),
//! ring hash and Maglev (consistent hashing on the route's hash policy).
//! Every one skips hosts the caller says are unusable (ejected).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use serde::Serialize;

#[derive(Debug, Serialize)]
pub enum Balancer {
    RoundRobin(#[serde(skip)] AtomicUsize),
    Random,
    /// Active requests per host.
    LeastRequest(#[serde(skip)] Vec<AtomicU32>),
    /// (point on the ring, host), sorted by point.
    RingHash(#[serde(skip)] Vec<(u64, u32)>),
    /// Maglev's lookup table: slot → host.
    Maglev(#[serde(skip)] Vec<u32>),
}

/// A stable 64-bit hash (SipHash with fixed keys): the same on every
/// worker and every proxy built from the same source.
pub fn hash_of(value: impl Hash) -> u64 {
    #[allow(deprecated)] // SipHasher's fixed keys are the point here.
    let mut h = std::hash::SipHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl Balancer {
    /// A ring with `min_size` points at least, spread evenly over hosts.
    pub fn ring(hosts: &[SocketAddr], min_size: u64) -> Balancer {
        let mut ring = Vec::new();
        if !hosts.is_empty() {
            let per_host = min_size.div_ceil(hosts.len() as u64).max(1);
            for (i, h) in hosts.iter().enumerate() {
                for k in 0..per_host {
                    ring.push((hash_of((h, k)), i as u32));
                }
            }
        }
        ring.sort_unstable();
        Balancer::RingHash(ring)
    }

    /// Maglev's table (Eisenbud et al.): each host fills slots in the order
    /// of its own permutation, in turns, until the table is full.
    pub fn maglev(hosts: &[SocketAddr], table_size: u64) -> Balancer {
        let m = table_size as usize;
        if hosts.is_empty() || m == 0 {
            return Balancer::Maglev(Vec::new());
        }
        let perms: Vec<(usize, usize)> = hosts
            .iter()
            .map(|h| {
                let offset = hash_of((h, "offset")) as usize % m;
                let skip = hash_of((h, "skip")) as usize % (m - 1).max(1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; hosts.len()];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for (i, (offset, skip)) in perms.iter().enumerate() {
                let mut slot = (offset + next[i] * skip) % m;
                while table[slot] != u32::MAX {
                    next[i] += 1;
                    slot = (offset + next[i] * skip) % m;
                }
                table[slot] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Balancer::Maglev(table)
    }

    pub fn least_request(hosts: usize) -> Balancer {
        Balancer::LeastRequest((0..hosts).map(|_| AtomicU32::new(0)).collect())
    }

    /// The host (an index in `hosts`, the level or locality the pick is
    /// confined to) for one request. `hash` drives the consistent balancers
    /// (none: a random point, as in Envoy), whose tables span every host:
    /// they walk on to the next one in range.
    pub fn choose(
        &self,
        hosts: std::ops::Range<usize>,
        hash: Option<u64>,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = hosts.len();
        if n == 0 {
            return None;
        }
        let first_usable_from = |start: usize| {
            (0..n)
                .map(|k| hosts.start + (start + k) % n)
                .find(|i| usable(*i))
        };
        let usable = |i: usize| hosts.contains(&i) && usable(i);
        match self {
            Balancer::RoundRobin(next) => first_usable_from(next.fetch_add(1, Ordering::Relaxed)),
            Balancer::Random => first_usable_from(fastrand::usize(..n)),
            Balancer::LeastRequest(active) => {
                let a = first_usable_from(fastrand::usize(..n))?;
                let b = first_usable_from(fastrand::usize(..n))?;
                let load = |i: usize| active.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
                Some(if load(b) < load(a) { b } else { a })
            }
            Balancer::RingHash(ring) => {
                let h = hash.unwrap_or_else(|| fastrand::u64(..));
                let start = ring.partition_point(|(point, _)| *point < h);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1 as usize)
                    .find(|i| usable(*i))
            }
            Balancer::Maglev(table) => {
                let h = hash.unwrap_or_else(|| fastrand::u64(..));
                let start = (h % table.len().max(1) as u64) as usize;
                (0..table.len())
                    .map(|k| table[(start + k) % table.len()] as usize)
                    .find(|i| usable(*i))
            }
        }
    }

    /// Counts a request as active on `host` until the guard is dropped
    /// (least request only; the others keep no count).
    pub(crate) fn track(&self, host: usize) -> Option<Active<'_>> {
        let Balancer::LeastRequest(active) = self else {
            return None;
        };
        let counter = active.get(host)?;
        counter.fetch_add(1, Ordering::Relaxed);
        Some(Active(counter))
    }
}

pub(crate) struct Active<'a>(&'a AtomicU32);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([198, 18, 0, i as u8 + 1], 80)))
            .collect()
    }

    #[test]
    fn consistent_balancers_keep_a_key_on_one_host() {
        for b in [
            Balancer::ring(&hosts(3), 1024),
            Balancer::maglev(&hosts(3), 65537),
        ] {
            for key in 0..50u64 {
                let h = hash_of(key);
                let first = b.choose(0..3, Some(h), |_| true);
                assert!((0..10).all(|_| b.choose(0..3, Some(h), |_| true) == first));
            }
            // Keys spread over every host.
            let mut seen = [0; 3];
            for key in 0..300u64 {
                seen[b.choose(0..3, Some(hash_of(key)), |_| true).unwrap()] += 1;
            }
            assert!(seen.iter().all(|c| *c > 40), "{seen:?}");
        }
    }

    #[test]
    fn unusable_hosts_are_skipped() {
        let b = Balancer::ring(&hosts(3), 64);
        for key in 0..50u64 {
            assert_ne!(b.choose(0..3, Some(hash_of(key)), |i| i != 1), Some(1));
        }
        assert_eq!(b.choose(0..3, Some(1), |_| false), None);
        let rr = Balancer::RoundRobin(AtomicUsize::new(0));
        assert_eq!(rr.choose(0..3, None, |i| i == 2), Some(2));
    }

    #[test]
    fn round_robin_spreads_evenly_inside_its_range() {
        let rr = Balancer::RoundRobin(AtomicUsize::new(0));
        let mut seen = [0; 9];
        for _ in 0..90 {
            seen[rr.choose(3..6, None, |_| true).unwrap()] += 1;
        }
        assert_eq!(seen, [0, 0, 0, 30, 30, 30, 0, 0, 0]);
    }

    #[test]
    fn least_request_prefers_the_idle_host() {
        let b = Balancer::least_request(2);
        let _busy = b.track(0);
        let picks: Vec<_> = (0..50)
            .map(|_| b.choose(0..2, None, |_| true).unwrap())
            .collect();
        assert!(picks.iter().filter(|i| **i == 1).count() > 25, "{picks:?}");
    }
}
