//! SPD: a tenant's allow-list. Tunnel traffic to or from an allow-listed peer prefix is
//! protected (outbound with that peer's SA); everything else is discarded. Configuration:
//! `u32 count`, then per peer 24 bytes: `u8 family, u8 prefix_len, u16 reserved,
//! [u8; 16] prefix, u32 sa_id` (little-endian).
#![cfg_attr(target_arch = "wasm32", no_std)]

use iipnic_policy_sdk::{Addr, Direction, Policy, SpdAction, SpdDecision, SpdQuery, export_policy};

/// Most peers in an allow-list.
pub const MAX_PEERS: usize = 128;
/// Bytes per peer in the configuration.
pub const PEER_LEN: usize = 24;
/// Error code: malformed configuration.
pub const BAD_CONFIG: i32 = 100;

#[derive(Clone, Copy)]
struct Peer {
    prefix: Addr,
    len: u8,
    sa: u32,
}

/// The allow-list.
pub struct TenantAllowlist {
    peers: [Option<Peer>; MAX_PEERS],
}

impl Policy for TenantAllowlist {
    fn init(config: &[u8]) -> Result<Self, i32> {
        let count = config
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(BAD_CONFIG)? as usize;
        let body = config.get(4..).ok_or(BAD_CONFIG)?;
        if count > MAX_PEERS || body.len() != count * PEER_LEN {
            return Err(BAD_CONFIG);
        }
        let mut peers = [None; MAX_PEERS];
        for (slot, raw) in peers.iter_mut().zip(body.chunks_exact(PEER_LEN)) {
            let family = raw[0];
            if family != 4 && family != 6 {
                return Err(BAD_CONFIG);
            }
            let bytes: [u8; 16] = raw[4..20].try_into().map_err(|_| BAD_CONFIG)?;
            let sa = u32::from_le_bytes(raw[20..24].try_into().map_err(|_| BAD_CONFIG)?);
            *slot = Some(Peer {
                prefix: Addr { family, bytes },
                len: raw[1],
                sa,
            });
        }
        Ok(TenantAllowlist { peers })
    }

    fn spd_decide(&mut self, q: &SpdQuery) -> SpdDecision {
        let remote = match q.direction {
            Direction::Outbound => q.dst,
            Direction::Inbound => q.src,
        };
        let peer = self
            .peers
            .iter()
            .flatten()
            .find(|p| remote.in_prefix(&p.prefix, p.len));
        let action = match (peer, q.direction) {
            (Some(p), Direction::Outbound) => SpdAction::Protect { sa: Some(p.sa) },
            (Some(_), Direction::Inbound) => SpdAction::Protect { sa: None },
            (None, _) => SpdAction::Discard,
        };
        SpdDecision {
            action,
            entry: None,
            cacheable: true,
        }
    }

    fn self_test(&mut self) -> bool {
        // An allow-list that allows nobody is almost certainly a configuration mistake.
        self.peers.iter().any(Option::is_some)
    }
}

export_policy!(TenantAllowlist, spd_decide);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protects_listed_peers_only() {
        let mut cfg = 1u32.to_le_bytes().to_vec();
        let mut peer = [0u8; PEER_LEN];
        peer[0] = 4;
        peer[1] = 24;
        peer[4..8].copy_from_slice(&[192, 0, 2, 0]);
        peer[20..24].copy_from_slice(&7u32.to_le_bytes());
        cfg.extend_from_slice(&peer);
        let mut p = TenantAllowlist::init(&cfg).unwrap();
        assert!(p.self_test());
        let q = |direction, other: [u8; 4]| SpdQuery {
            direction,
            protocol: 4,
            protected: true,
            src: Addr::v4(if direction == Direction::Outbound {
                [203, 0, 113, 1]
            } else {
                other
            }),
            dst: Addr::v4(if direction == Direction::Outbound {
                other
            } else {
                [203, 0, 113, 1]
            }),
        };
        assert_eq!(
            p.spd_decide(&q(Direction::Outbound, [192, 0, 2, 9])).action,
            SpdAction::Protect { sa: Some(7) }
        );
        assert_eq!(
            p.spd_decide(&q(Direction::Inbound, [192, 0, 2, 9])).action,
            SpdAction::Protect { sa: None }
        );
        assert_eq!(
            p.spd_decide(&q(Direction::Outbound, [198, 51, 100, 1]))
                .action,
            SpdAction::Discard
        );
        assert!(
            !TenantAllowlist::init(&0u32.to_le_bytes())
                .unwrap()
                .self_test()
        );
        assert_eq!(TenantAllowlist::init(&[9]).err(), Some(BAD_CONFIG));
    }
}
