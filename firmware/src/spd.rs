//! Security Policy Database (RFC 4301 section 4.4.1) and its caches.
//!
//! In IIPtran the selectors are taken from the **tunnel** header: outer source, outer
//! destination and next protocol (4 or 41). Entries are ordered; the first match wins.
//! The decision behind a cache miss comes from a [`crate::policy::PolicyEngine`], so the
//! caches here only remember decisions, stamped with the policy generation they came from.

use alloc::vec::Vec;
use core::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cache::{CacheKey, GenerationCache};
use crate::control::ConfigError;
use crate::hash::tuple_hash;
use crate::prefix::IpPrefix;
use crate::sad::SaId;

/// Identifies an SPD entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpdEntryId(pub u32);

/// Which traffic an entry applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Tunnel packets this node sends.
    Outbound,
    /// Tunnel packets this node receives.
    Inbound,
}

/// What to do with matching traffic (RFC 4301 section 4.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "action")]
pub enum Action {
    /// Apply ESP. Outbound entries name the SA; inbound entries require ESP and may name
    /// the SA that must have carried the packet.
    Protect {
        /// The SA.
        sa: Option<SaId>,
    },
    /// Pass in clear.
    Bypass,
    /// Drop.
    Discard,
}

/// Selectors on the tunnel header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Outer source prefix.
    pub src: IpPrefix,
    /// Outer destination prefix.
    pub dst: IpPrefix,
    /// Next protocol (4 or 41); absent matches both.
    #[serde(default)]
    pub protocol: Option<u8>,
}

impl Selector {
    /// True when the tunnel header `key` falls inside these selectors.
    pub fn matches(&self, key: &TunnelKey) -> bool {
        self.src.contains(key.src)
            && self.dst.contains(key.dst)
            && self.protocol.is_none_or(|p| p == key.protocol)
    }
}

/// One ordered SPD entry. (`deny_unknown_fields` cannot be combined with `flatten`; the
/// host's config loader reports unknown keys instead.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpdEntry {
    /// Identity, reported in decisions and counters.
    pub id: SpdEntryId,
    /// Outbound or inbound.
    pub direction: Direction,
    /// What it matches.
    #[serde(flatten)]
    pub selector: Selector,
    /// What it does.
    #[serde(flatten)]
    pub action: Action,
}

impl SpdEntry {
    /// Checks an entry before it is installed; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.selector.src.addr().is_ipv4() != self.selector.dst.addr().is_ipv4() {
            return Err(ConfigError::new(
                "dst",
                "src and dst must be the same family",
            ));
        }
        if self.direction == Direction::Outbound
            && matches!(self.action, Action::Protect { sa: None })
        {
            return Err(ConfigError::new(
                "sa",
                "an outbound PROTECT entry must name its SA",
            ));
        }
        Ok(())
    }
}

/// The selector values of one tunnel packet: the key of every SPD cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelKey {
    /// Outer source.
    pub src: IpAddr,
    /// Outer destination.
    pub dst: IpAddr,
    /// Next protocol of the tunnel packet (4 or 41).
    pub protocol: u8,
}

/// A decision for one tunnel key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpdDecision {
    /// What to do.
    pub action: Action,
    /// The entry that decided, if any (none: default DISCARD).
    pub entry: Option<SpdEntryId>,
    /// Whether the decision may be cached until the next policy change.
    pub cacheable: bool,
}

impl SpdDecision {
    /// RFC 4301: traffic no entry matches is discarded.
    pub const DEFAULT_DISCARD: SpdDecision = SpdDecision {
        action: Action::Discard,
        entry: None,
        cacheable: true,
    };
}

/// The ordered entries plus a generation that changes with every edit.
#[derive(Debug, Default, Clone)]
pub struct Spd {
    entries: Vec<SpdEntry>,
    generation: u64,
}

impl Spd {
    /// Inserts `entry` at `position` (end of list when `None` or past the end), or replaces
    /// the entry with the same id in place.
    pub fn upsert(&mut self, entry: SpdEntry, position: Option<usize>) -> Result<(), ConfigError> {
        entry.validate()?;
        if let Some(existing) = self.entries.iter_mut().find(|e| e.id == entry.id) {
            *existing = entry;
        } else {
            let at = position
                .unwrap_or(self.entries.len())
                .min(self.entries.len());
            self.entries.insert(at, entry);
        }
        self.generation += 1;
        Ok(())
    }

    /// Removes an entry; returns whether it existed.
    pub fn remove(&mut self, id: SpdEntryId) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        let removed = self.entries.len() != before;
        if removed {
            self.generation += 1;
        }
        removed
    }

    /// The entries in order.
    pub fn entries(&self) -> &[SpdEntry] {
        &self.entries
    }

    /// Changes whenever an entry does; cache entries of an older generation are stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Marks every cached decision stale (a policy module was swapped, say).
    pub fn invalidate(&mut self) {
        self.generation += 1;
    }

    /// First-match evaluation (RFC 4301 section 4.4.1): the standard semantics that the
    /// native policy engine serves.
    pub fn first_match(&self, direction: Direction, key: &TunnelKey) -> SpdDecision {
        self.entries
            .iter()
            .find(|e| e.direction == direction && e.selector.matches(key))
            .map_or(SpdDecision::DEFAULT_DISCARD, |e| SpdDecision {
                action: e.action,
                entry: Some(e.id),
                cacheable: true,
            })
    }
}

impl CacheKey for TunnelKey {
    fn cache_hash(&self) -> u32 {
        let as_v6 = |a: IpAddr| match a {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                tuple_hash(&s.octets(), &d.octets(), self.protocol, None)
            }
            // IPv6 (a key never mixes families; mapping keeps this total anyway).
            (s, d) => tuple_hash(&as_v6(s), &as_v6(d), self.protocol, None),
        }
    }
}

/// A decision cache (one of SPD-O, SPD-I, SPD-S). Only cacheable decisions go in.
pub type SpdCache = GenerationCache<TunnelKey, SpdDecision>;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32, dst: &str, action: Action) -> SpdEntry {
        SpdEntry {
            id: SpdEntryId(id),
            direction: Direction::Outbound,
            selector: Selector {
                src: "0.0.0.0/0".parse().unwrap(),
                dst: dst.parse().unwrap(),
                protocol: None,
            },
            action,
        }
    }

    fn key(dst: &str) -> TunnelKey {
        TunnelKey {
            src: "192.0.2.1".parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 4,
        }
    }

    #[test]
    fn first_match_wins_and_default_is_discard() {
        let mut spd = Spd::default();
        spd.upsert(entry(1, "192.0.2.2/32", Action::Bypass), None)
            .unwrap();
        let protect = Action::Protect { sa: Some(SaId(9)) };
        spd.upsert(entry(2, "192.0.2.0/24", protect), None).unwrap();
        let d = spd.first_match(Direction::Outbound, &key("192.0.2.2"));
        assert_eq!((d.action, d.entry), (Action::Bypass, Some(SpdEntryId(1))));
        let d = spd.first_match(Direction::Outbound, &key("192.0.2.3"));
        assert_eq!(d.action, protect);
        assert_eq!(
            spd.first_match(Direction::Inbound, &key("192.0.2.3")),
            SpdDecision::DEFAULT_DISCARD
        );
        assert_eq!(
            spd.first_match(Direction::Outbound, &key("198.51.100.1"))
                .action,
            Action::Discard
        );
    }

    #[test]
    fn cache_entries_go_stale_with_the_generation() {
        let mut spd = Spd::default();
        spd.upsert(entry(1, "192.0.2.0/24", Action::Bypass), None)
            .unwrap();
        let mut cache = SpdCache::new(64);
        let k = key("192.0.2.2");
        cache.insert(
            k,
            spd.first_match(Direction::Outbound, &k),
            spd.generation(),
        );
        assert!(cache.get(&k, spd.generation()).is_some());
        assert!(cache.get(&key("192.0.2.3"), spd.generation()).is_none());
        spd.upsert(entry(1, "192.0.2.0/24", Action::Discard), None)
            .unwrap();
        assert!(cache.get(&k, spd.generation()).is_none());
    }

    #[test]
    fn outbound_protect_must_name_an_sa() {
        let e = entry(1, "192.0.2.0/24", Action::Protect { sa: None });
        assert_eq!(e.validate().unwrap_err().field, "sa");
    }
}
