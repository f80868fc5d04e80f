//! Security Association Database (RFC 4301 section 4.4.2): keys, sequence numbers, the
//! anti-replay window, lifetimes and per-SA counters.

use alloc::collections::{BTreeMap, VecDeque};
use core::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::control::{ConfigError, HexKey};
use crate::counters::TrafficCounters;
use crate::esp::replay::{DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW, ReplayWindow};
use crate::esp::{Algorithm, EspCipher, IcvLen};

/// Identifies an SA in control messages and policy decisions; keys never leave the SAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SaId(pub u32);

/// Which way an SA carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaDirection {
    /// Packets this node receives (looked up by SPI and destination).
    Inbound,
    /// Packets this node sends (chosen by an SPD PROTECT decision).
    Outbound,
}

/// Soft and hard lifetimes (RFC 4301 section 4.4.2.1). Soft raises an event so the control
/// plane rekeys; hard stops the SA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetime {
    /// Bytes (ESP payload) before the soft event.
    pub soft_bytes: Option<u64>,
    /// Bytes before the SA stops.
    pub hard_bytes: Option<u64>,
    /// Packets before the soft event.
    pub soft_packets: Option<u64>,
    /// Packets before the SA stops.
    pub hard_packets: Option<u64>,
    /// Seconds after installation before the soft event.
    pub soft_seconds: Option<u64>,
    /// Seconds after installation before the SA stops.
    pub hard_seconds: Option<u64>,
}

fn default_window() -> u32 {
    DEFAULT_WINDOW
}

fn default_icv() -> IcvLen {
    IcvLen::Sixteen
}

fn default_algorithm() -> Algorithm {
    Algorithm::AesGcm
}

/// Everything needed to install an SA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaConfig {
    /// Control-plane identity.
    pub id: SaId,
    /// Inbound or outbound.
    pub direction: SaDirection,
    /// Security Parameters Index on the wire.
    pub spi: u32,
    /// Transform; AES-GCM unless told otherwise.
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// AES key followed by the 4-byte salt, as hex (20 or 36 bytes).
    pub key: HexKey,
    /// ICV length in bytes: 8, 12 or 16.
    #[serde(default = "default_icv")]
    pub icv_len: IcvLen,
    /// Extended (64-bit) sequence numbers, RFC 4304.
    #[serde(default)]
    pub esn: bool,
    /// Anti-replay window in packets (inbound only), 32..=4096.
    #[serde(default = "default_window")]
    pub replay_window: u32,
    /// Outer source address of the tunnel packets this SA carries.
    pub src: IpAddr,
    /// Outer destination address of the tunnel packets this SA carries.
    pub dst: IpAddr,
    /// Next protocol selector: 4, 41, or absent for both (the SA's SPD-I check).
    #[serde(default)]
    pub protocol: Option<u8>,
    /// Soft and hard lifetimes.
    #[serde(default)]
    pub lifetime: Lifetime,
}

impl SaConfig {
    /// Checks the fields and builds the cipher; errors name the field at fault.
    pub fn validate(&self) -> Result<EspCipher, ConfigError> {
        if self.spi < 256 {
            return Err(ConfigError::new(
                "spi",
                "SPI values 0-255 are reserved (RFC 4303 section 2.1)",
            ));
        }
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&self.replay_window) {
            return Err(ConfigError::new(
                "replay_window",
                "must be between 32 and 4096 packets",
            ));
        }
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(ConfigError::new(
                "dst",
                "src and dst must be the same family",
            ));
        }
        if let Some(p) = self.protocol
            && p != crate::wire::proto::IPIP
            && p != crate::wire::proto::IPV6
        {
            return Err(ConfigError::new(
                "protocol",
                "an IIPtran SA carries protocol 4 or 41",
            ));
        }
        let l = &self.lifetime;
        for (field, soft, hard) in [
            ("lifetime.soft_bytes", l.soft_bytes, l.hard_bytes),
            ("lifetime.soft_packets", l.soft_packets, l.hard_packets),
            ("lifetime.soft_seconds", l.soft_seconds, l.hard_seconds),
        ] {
            if let (Some(s), Some(h)) = (soft, hard)
                && s > h
            {
                return Err(ConfigError::new(
                    field,
                    "soft lifetime exceeds the hard one",
                ));
            }
        }
        EspCipher::new(self.algorithm, self.key.as_bytes(), self.icv_len).map_err(|_| {
            ConfigError::new(
                "key",
                "must be a 16- or 32-byte AES key followed by a 4-byte salt (40 or 72 hex digits)",
            )
        })
    }

    /// The selectors the SA serves.
    pub fn selector(&self) -> SaSelector {
        SaSelector {
            src: self.src,
            dst: self.dst,
            protocol: self.protocol,
        }
    }
}

/// The tunnel-header selectors of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaSelector {
    /// Outer source.
    pub src: IpAddr,
    /// Outer destination.
    pub dst: IpAddr,
    /// Next protocol; `None` for both 4 and 41.
    pub protocol: Option<u8>,
}

impl SaSelector {
    /// True when a decrypted tunnel header matches (RFC 4301 section 5.2 step 4).
    pub fn matches(&self, src: IpAddr, dst: IpAddr, protocol: u8) -> bool {
        self.src == src && self.dst == dst && self.protocol.is_none_or(|p| p == protocol)
    }
}

/// Something the control plane must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SaEvent {
    /// The SA concerned.
    pub sa: SaId,
    /// What happened.
    pub kind: SaEventKind,
    /// When (node milliseconds).
    pub at_ms: u64,
}

/// Kinds of [`SaEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaEventKind {
    /// A soft lifetime passed: rekey now.
    SoftLifetime,
    /// A hard lifetime passed: the SA no longer carries traffic.
    HardLifetime,
    /// The outbound sequence number reached its maximum: the SA no longer sends.
    SequenceExhausted,
}

/// Per-SA counters.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct SaCounters {
    /// Packets and bytes carried.
    #[serde(flatten)]
    pub traffic: TrafficCounters,
    /// ICV failures.
    pub auth_failures: u64,
    /// Replays and too-old sequence numbers.
    pub replays: u64,
}

/// One installed SA.
#[derive(Debug, Clone)]
pub struct SecurityAssociation {
    config: SaConfig,
    cipher: EspCipher,
    /// Outbound: the next sequence number to send (starts at 1).
    next_seq: u64,
    replay: ReplayWindow,
    installed_ms: u64,
    soft_fired: bool,
    hard_expired: bool,
    /// Counters of this SA.
    pub counters: SaCounters,
}

/// Lifetime or sequence-space exhaustion stops an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaStopped {
    /// A hard lifetime passed.
    Expired,
    /// No sequence numbers left.
    SequenceExhausted,
}

impl SecurityAssociation {
    /// The configuration it was installed with.
    pub fn config(&self) -> &SaConfig {
        &self.config
    }

    /// Keys and transform.
    pub fn cipher(&self) -> &EspCipher {
        &self.cipher
    }

    /// Anti-replay state (inbound).
    pub fn replay(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Mutable anti-replay state: the inbound pipeline checks, then accepts after the ICV.
    pub fn replay_mut(&mut self) -> &mut ReplayWindow {
        &mut self.replay
    }

    /// The next outbound sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sets the next outbound sequence number (tests and re-encryption of captures).
    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    /// True once a hard lifetime passed.
    pub fn is_expired(&self) -> bool {
        self.hard_expired
    }

    /// Takes the next outbound sequence number, refusing to wrap (RFC 4303 section 3.3.3).
    pub fn take_seq(&mut self, now_ms: u64, events: &mut EventQueue) -> Result<u64, SaStopped> {
        let max = if self.config.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let seq = self.next_seq;
        if seq == 0 || seq > max {
            if seq != 0 {
                // Fire once, then stay stopped.
                self.next_seq = 0;
                events.push(self.config.id, SaEventKind::SequenceExhausted, now_ms);
            }
            return Err(SaStopped::SequenceExhausted);
        }
        self.next_seq = seq.checked_add(1).unwrap_or(0);
        if self.next_seq == 0 {
            events.push(self.config.id, SaEventKind::SequenceExhausted, now_ms);
        }
        Ok(seq)
    }

    /// Checks the time lifetimes; returns `Err` once the SA is past its hard lifetime.
    pub fn check_time(&mut self, now_ms: u64, events: &mut EventQueue) -> Result<(), SaStopped> {
        let age_ms = now_ms.saturating_sub(self.installed_ms);
        let l = self.config.lifetime;
        let soft = l.soft_seconds.map(|s| s.saturating_mul(1000));
        // `check_limits` stops past the hard value; a time lifetime stops at it.
        let hard = l
            .hard_seconds
            .map(|s| s.saturating_mul(1000).saturating_sub(1));
        self.check_limits(age_ms, soft, hard, now_ms, events)?;
        if self.hard_expired {
            return Err(SaStopped::Expired);
        }
        Ok(())
    }

    /// Counts one packet of `bytes` and fires byte/packet lifetime events.
    pub fn account(
        &mut self,
        bytes: usize,
        outbound: bool,
        now_ms: u64,
        events: &mut EventQueue,
    ) -> Result<(), SaStopped> {
        let t = &mut self.counters.traffic;
        let (packets, total) = if outbound {
            t.tx_packets += 1;
            t.tx_bytes += bytes as u64;
            (t.tx_packets, t.tx_bytes)
        } else {
            t.rx_packets += 1;
            t.rx_bytes += bytes as u64;
            (t.rx_packets, t.rx_bytes)
        };
        let l = self.config.lifetime;
        self.check_limits(total, l.soft_bytes, l.hard_bytes, now_ms, events)?;
        self.check_limits(packets, l.soft_packets, l.hard_packets, now_ms, events)
    }

    fn check_limits(
        &mut self,
        value: u64,
        soft: Option<u64>,
        hard: Option<u64>,
        now_ms: u64,
        events: &mut EventQueue,
    ) -> Result<(), SaStopped> {
        if !self.soft_fired && soft.is_some_and(|s| value >= s) {
            self.soft_fired = true;
            events.push(self.config.id, SaEventKind::SoftLifetime, now_ms);
        }
        // A hard limit of N lets N units through; the unit past it stops the SA.
        if !self.hard_expired && hard.is_some_and(|h| value > h) {
            self.hard_expired = true;
            events.push(self.config.id, SaEventKind::HardLifetime, now_ms);
        }
        if self.hard_expired {
            Err(SaStopped::Expired)
        } else {
            Ok(())
        }
    }
}

/// A bounded queue of SA events; allocated once, never grows.
#[derive(Debug)]
pub struct EventQueue {
    events: VecDeque<SaEvent>,
    capacity: usize,
    /// Events dropped because the control plane did not drain the queue.
    pub lost: u64,
}

impl EventQueue {
    /// A queue for at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            events: VecDeque::with_capacity(capacity),
            capacity,
            lost: 0,
        }
    }

    fn push(&mut self, sa: SaId, kind: SaEventKind, at_ms: u64) {
        if self.events.len() >= self.capacity {
            self.lost += 1;
            return;
        }
        self.events.push_back(SaEvent { sa, kind, at_ms });
    }

    /// Takes the oldest event.
    pub fn pop(&mut self) -> Option<SaEvent> {
        self.events.pop_front()
    }
}

/// The database: SAs by id, and inbound SAs by (SPI, destination).
#[derive(Debug)]
pub struct Sad {
    sas: BTreeMap<SaId, SecurityAssociation>,
    inbound: BTreeMap<(u32, IpAddr), SaId>,
    /// Lifetime and sequence events for the control plane.
    pub events: EventQueue,
}

impl Default for Sad {
    fn default() -> Self {
        Sad {
            sas: BTreeMap::new(),
            inbound: BTreeMap::new(),
            events: EventQueue::new(256),
        }
    }
}

impl Sad {
    /// Installs an SA, or replaces the one with the same id (rekey: the new keys, SPI and
    /// sequence space take effect for the very next packet).
    pub fn install(&mut self, config: SaConfig, now_ms: u64) -> Result<(), ConfigError> {
        let cipher = config.validate()?;
        if config.direction == SaDirection::Inbound
            && let Some(other) = self.inbound.get(&(config.spi, config.dst))
            && *other != config.id
        {
            return Err(ConfigError::new(
                "spi",
                "another inbound SA already uses this SPI and destination",
            ));
        }
        self.remove(config.id);
        if config.direction == SaDirection::Inbound {
            self.inbound.insert((config.spi, config.dst), config.id);
        }
        let sa = SecurityAssociation {
            replay: ReplayWindow::new(config.replay_window, config.esn),
            cipher,
            next_seq: 1,
            installed_ms: now_ms,
            soft_fired: false,
            hard_expired: false,
            counters: SaCounters::default(),
            config,
        };
        self.sas.insert(sa.config.id, sa);
        Ok(())
    }

    /// Removes an SA; returns whether it existed.
    pub fn remove(&mut self, id: SaId) -> bool {
        match self.sas.remove(&id) {
            Some(sa) => {
                if sa.config.direction == SaDirection::Inbound {
                    self.inbound.remove(&(sa.config.spi, sa.config.dst));
                }
                true
            }
            None => false,
        }
    }

    /// The SA with this id.
    pub fn get(&self, id: SaId) -> Option<&SecurityAssociation> {
        self.sas.get(&id)
    }

    /// The SA with this id, mutably.
    pub fn get_mut(&mut self, id: SaId) -> Option<&mut SecurityAssociation> {
        self.sas.get_mut(&id)
    }

    /// The inbound SA for an SPI arriving at `dst` (RFC 4301 section 4.1: SPI plus destination).
    pub fn lookup_inbound(&self, spi: u32, dst: IpAddr) -> Option<SaId> {
        self.inbound.get(&(spi, dst)).copied()
    }

    /// Splits the SAD so the pipeline can hold an SA and the event queue at once.
    pub fn sa_and_events(
        &mut self,
        id: SaId,
    ) -> Option<(&mut SecurityAssociation, &mut EventQueue)> {
        let events = &mut self.events;
        self.sas.get_mut(&id).map(|sa| (sa, events))
    }

    /// All SAs, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &SecurityAssociation> {
        self.sas.values()
    }

    /// Checks time lifetimes of every SA (call periodically, e.g. once a second).
    pub fn poll(&mut self, now_ms: u64) {
        for sa in self.sas.values_mut() {
            let _ = sa.check_time(now_ms, &mut self.events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(direction: SaDirection) -> SaConfig {
        SaConfig {
            id: SaId(1),
            direction,
            spi: 0x1001,
            algorithm: Algorithm::AesGcm,
            key: HexKey::from_hex("000102030405060708090a0b0c0d0e0fa0a1a2a3").unwrap(),
            icv_len: IcvLen::Sixteen,
            esn: false,
            replay_window: 64,
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            protocol: None,
            lifetime: Lifetime::default(),
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = config(SaDirection::Inbound);
        c.spi = 7;
        assert_eq!(c.validate().unwrap_err().field, "spi");
        let mut c = config(SaDirection::Inbound);
        c.key = HexKey::from_hex("0001").unwrap();
        assert_eq!(c.validate().unwrap_err().field, "key");
        let mut c = config(SaDirection::Inbound);
        c.replay_window = 8192;
        assert_eq!(c.validate().unwrap_err().field, "replay_window");
        let mut c = config(SaDirection::Inbound);
        c.lifetime.soft_packets = Some(10);
        c.lifetime.hard_packets = Some(5);
        assert_eq!(c.validate().unwrap_err().field, "lifetime.soft_packets");
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        let mut sad = Sad::default();
        sad.install(config(SaDirection::Outbound), 0).unwrap();
        let (sa, events) = sad.sa_and_events(SaId(1)).unwrap();
        sa.set_next_seq(u64::from(u32::MAX));
        assert_eq!(sa.take_seq(0, events), Ok(u64::from(u32::MAX)));
        assert_eq!(sa.take_seq(0, events), Err(SaStopped::SequenceExhausted));
        assert_eq!(sa.take_seq(0, events), Err(SaStopped::SequenceExhausted));
        assert_eq!(
            events.pop().map(|e| e.kind),
            Some(SaEventKind::SequenceExhausted)
        );
        assert_eq!(events.pop(), None);
    }

    #[test]
    fn lifetimes_fire_soft_then_hard() {
        let mut sad = Sad::default();
        let mut c = config(SaDirection::Outbound);
        c.lifetime.soft_packets = Some(2);
        c.lifetime.hard_packets = Some(3);
        sad.install(c, 0).unwrap();
        let (sa, events) = sad.sa_and_events(SaId(1)).unwrap();
        for _ in 0..3 {
            assert!(sa.account(100, true, 0, events).is_ok());
        }
        assert_eq!(sa.account(100, true, 0, events), Err(SaStopped::Expired));
        assert_eq!(
            events.pop().map(|e| e.kind),
            Some(SaEventKind::SoftLifetime)
        );
        assert_eq!(
            events.pop().map(|e| e.kind),
            Some(SaEventKind::HardLifetime)
        );
    }

    #[test]
    fn inbound_lookup_by_spi_and_destination() {
        let mut sad = Sad::default();
        sad.install(config(SaDirection::Inbound), 0).unwrap();
        let dst = "192.0.2.2".parse().unwrap();
        assert_eq!(sad.lookup_inbound(0x1001, dst), Some(SaId(1)));
        assert_eq!(sad.lookup_inbound(0x1002, dst), None);
        let mut other = config(SaDirection::Inbound);
        other.id = SaId(2);
        assert_eq!(sad.install(other, 0).unwrap_err().field, "spi");
        assert!(sad.remove(SaId(1)));
        assert_eq!(sad.lookup_inbound(0x1001, dst), None);
    }
}
