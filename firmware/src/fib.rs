//! VN forwarding table: longest-prefix match for IPv4 and IPv6 with several candidate next
//! hops per prefix. Route *selection* among the candidates belongs to the policy engine.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cache::{CacheKey, GenerationCache};
use crate::control::ConfigError;
use crate::prefix::{IpPrefix, mask32, mask128};
use crate::vif::VifId;

/// Candidates per route, at most; keeps route selection allocation-free.
pub const MAX_NEXT_HOPS: usize = 8;

/// One candidate next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextHop {
    /// The vif to send on.
    pub vif: VifId,
    /// Lower is preferred.
    #[serde(default)]
    pub metric: u32,
    /// Share for weighted ECMP.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum RouteTarget {
    /// Into a tunnel, over one of these candidates (sorted by metric).
    Vif {
        /// Candidate next hops.
        next_hops: Vec<NextHop>,
    },
    /// To the host side of this NIC: the VN prefixes this node serves.
    Host,
    /// To the node's own control plane (its VN addresses).
    Local,
    /// Drop (counted as `blackhole`).
    Blackhole,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix.
    pub prefix: IpPrefix,
    /// Where it goes.
    #[serde(flatten)]
    pub target: RouteTarget,
}

impl Route {
    /// Checks the route; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let RouteTarget::Vif { next_hops } = &self.target {
            if next_hops.is_empty() {
                return Err(ConfigError::new(
                    "next_hops",
                    "a vif route needs a next hop",
                ));
            }
            if next_hops.len() > MAX_NEXT_HOPS {
                return Err(ConfigError::new(
                    "next_hops",
                    "at most 8 next hops per route",
                ));
            }
        }
        Ok(())
    }
}

/// Routes of one family, bucketed by prefix length (longest first).
#[derive(Debug, Default)]
struct Table {
    by_len: BTreeMap<core::cmp::Reverse<u8>, BTreeMap<u128, Route>>,
}

impl Table {
    fn lookup(&self, key: u128, width: u8) -> Option<&Route> {
        self.by_len.iter().find_map(|(len, routes)| {
            let masked = mask(key, len.0, width);
            routes.get(&masked)
        })
    }
}

fn mask(key: u128, len: u8, width: u8) -> u128 {
    if width == 32 {
        key & u128::from(mask32(len))
    } else {
        key & mask128(len)
    }
}

fn key_of(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// The forwarding table.
#[derive(Debug, Default)]
pub struct Fib {
    v4: Table,
    v6: Table,
    len: usize,
}

impl Fib {
    fn table(&mut self, addr: IpAddr) -> &mut Table {
        if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Adds a route or replaces the one for the same prefix. Next hops are kept sorted by
    /// metric so that "first candidate" means "best metric".
    pub fn upsert(&mut self, mut route: Route) -> Result<(), ConfigError> {
        route.validate()?;
        if let RouteTarget::Vif { next_hops } = &mut route.target {
            next_hops.sort_by_key(|nh| nh.metric);
        }
        let (key, _) = key_of(route.prefix.addr());
        let len = route.prefix.prefix_len();
        let bucket = self
            .table(route.prefix.addr())
            .by_len
            .entry(core::cmp::Reverse(len))
            .or_default();
        if bucket.insert(key, route).is_none() {
            self.len += 1;
        }
        Ok(())
    }

    /// Removes the route for exactly this prefix.
    pub fn remove(&mut self, prefix: IpPrefix) -> bool {
        let (key, _) = key_of(prefix.addr());
        let table = self.table(prefix.addr());
        let len = core::cmp::Reverse(prefix.prefix_len());
        let removed = table
            .by_len
            .get_mut(&len)
            .is_some_and(|b| b.remove(&key).is_some());
        if table.by_len.get(&len).is_some_and(|b| b.is_empty()) {
            table.by_len.remove(&len);
        }
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Longest-prefix match.
    pub fn lookup(&self, addr: IpAddr) -> Option<&Route> {
        let (key, width) = key_of(addr);
        if width == 32 {
            self.v4.lookup(key, width)
        } else {
            self.v6.lookup(key, width)
        }
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All routes, IPv4 first, longest prefixes first.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.v4
            .by_len
            .values()
            .chain(self.v6.by_len.values())
            .flat_map(|b| b.values())
    }
}

/// The flow a route-selection answer applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// Inner source.
    pub src: IpAddr,
    /// Inner destination.
    pub dst: IpAddr,
    /// Inner protocol.
    pub protocol: u8,
    /// Hash of the 5-tuple (also the cache index).
    pub flow_hash: u32,
}

impl CacheKey for FlowKey {
    fn cache_hash(&self) -> u32 {
        self.flow_hash
    }
}

/// Route-selection answers per flow (`None`: "no route"), so a policy module is asked once
/// per flow and policy generation rather than per packet.
pub type RouteCache = GenerationCache<FlowKey, Option<VifId>>;

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn vif_route(prefix: &str, vif: u16) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            target: RouteTarget::Vif {
                next_hops: vec![NextHop {
                    vif: VifId(vif),
                    metric: 0,
                    weight: 1,
                }],
            },
        }
    }

    fn vif_of(fib: &Fib, addr: &str) -> Option<u16> {
        match &fib.lookup(addr.parse().unwrap())?.target {
            RouteTarget::Vif { next_hops } => Some(next_hops[0].vif.0),
            _ => Some(0),
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let mut fib = Fib::default();
        fib.upsert(vif_route("10.0.0.0/8", 1)).unwrap();
        fib.upsert(vif_route("10.1.0.0/16", 2)).unwrap();
        fib.upsert(vif_route("10.1.2.3/32", 3)).unwrap();
        fib.upsert(vif_route("2001:db8::/32", 4)).unwrap();
        fib.upsert(vif_route("::/0", 5)).unwrap();
        assert_eq!(vif_of(&fib, "10.2.0.1"), Some(1));
        assert_eq!(vif_of(&fib, "10.1.9.9"), Some(2));
        assert_eq!(vif_of(&fib, "10.1.2.3"), Some(3));
        assert_eq!(vif_of(&fib, "11.0.0.1"), None);
        assert_eq!(vif_of(&fib, "2001:db8::1"), Some(4));
        assert_eq!(vif_of(&fib, "2001:db9::1"), Some(5));
        assert!(fib.remove("10.1.0.0/16".parse().unwrap()));
        assert_eq!(vif_of(&fib, "10.1.9.9"), Some(1));
        assert_eq!(fib.len(), 4);
    }

    #[test]
    fn next_hops_sorted_by_metric() {
        let mut fib = Fib::default();
        let route = Route {
            prefix: "10.0.0.0/8".parse().unwrap(),
            target: RouteTarget::Vif {
                next_hops: vec![
                    NextHop {
                        vif: VifId(1),
                        metric: 20,
                        weight: 1,
                    },
                    NextHop {
                        vif: VifId(2),
                        metric: 10,
                        weight: 1,
                    },
                ],
            },
        };
        fib.upsert(route).unwrap();
        assert_eq!(vif_of(&fib, "10.0.0.1"), Some(2));
    }
}
