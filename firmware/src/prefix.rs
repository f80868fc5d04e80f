//! IP prefixes ("10.0.0.0/8", "2001:db8::/32"), shared by the FIB and the SPD selectors.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address and a prefix length; host bits are cleared on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// The prefix text or length is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPrefix;

impl fmt::Display for InvalidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected ADDRESS/LENGTH, e.g. 10.0.0.0/8 or 2001:db8::/32")
    }
}

impl IpPrefix {
    /// A prefix of `len` bits; fails when `len` exceeds the address width.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, InvalidPrefix> {
        let masked = match addr {
            IpAddr::V4(a) if len <= 32 => IpAddr::V4((u32::from(a) & mask32(len)).into()),
            IpAddr::V6(a) if len <= 128 => IpAddr::V6((u128::from(a) & mask128(len)).into()),
            _ => return Err(InvalidPrefix),
        };
        Ok(IpPrefix { addr: masked, len })
    }

    /// The single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        IpPrefix { addr, len }
    }

    /// Network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for a zero-length prefix (matches everything of its family).
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// True when `addr` is of the same family and inside the prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => u32::from(a) & mask32(self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask128(self.len) == u128::from(net)
            }
            _ => false,
        }
    }
}

pub(crate) fn mask32(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

pub(crate) fn mask128(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = InvalidPrefix;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((addr, len)) => {
                let addr = addr.parse().map_err(|_| InvalidPrefix)?;
                let len = len.parse().map_err(|_| InvalidPrefix)?;
                IpPrefix::new(addr, len)
            }
            None => s.parse().map(IpPrefix::host).map_err(|_| InvalidPrefix),
        }
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IpPrefix;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP prefix such as 10.0.0.0/8 or 2001:db8::/32")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IpPrefix, E> {
                v.parse().map_err(|e: InvalidPrefix| E::custom(e))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let p: IpPrefix = "10.1.2.3/16".parse().unwrap();
        assert_eq!(std::format!("{p}"), "10.1.0.0/16");
        assert!(p.contains("10.1.200.1".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let d: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(d.contains("192.0.2.1".parse().unwrap()));
        let v6: IpPrefix = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert_eq!("10.0.0.1".parse::<IpPrefix>().unwrap().prefix_len(), 32);
        assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
        assert!("nonsense".parse::<IpPrefix>().is_err());
    }
}
