//! SPD: RFC 4301 section 4.4.1 ordered entries on the tunnel header (outer source and
//! destination prefixes, next protocol, direction), first match wins, no match discards.
//! The configuration is the node's SPD encoded as [`SpdRule`]s, so this module decides
//! exactly as the firmware's native engine does. It is the default SPD policy.
#![cfg_attr(target_arch = "wasm32", no_std)]

use iipnic_policy_sdk::{Policy, SpdAction, SpdDecision, SpdQuery, SpdRule, export_policy};

/// Most rules a configuration may hold.
pub const MAX_RULES: usize = 256;

/// Error code: the blob is not a well-formed rule list.
pub const BAD_CONFIG: i32 = 100;
/// Error code: more than [`MAX_RULES`] rules.
pub const TOO_MANY_RULES: i32 = 101;

/// The ordered rules.
pub struct SpdRules {
    rules: [Option<SpdRule>; MAX_RULES],
    count: usize,
}

impl Policy for SpdRules {
    fn init(config: &[u8]) -> Result<Self, i32> {
        let mut rules = [None; MAX_RULES];
        let mut count = 0;
        // An empty blob is an empty SPD.
        if !config.is_empty() {
            for rule in SpdRule::decode_all(config).ok_or(BAD_CONFIG)? {
                *rules.get_mut(count).ok_or(TOO_MANY_RULES)? = Some(rule.ok_or(BAD_CONFIG)?);
                count += 1;
            }
        }
        Ok(SpdRules { rules, count })
    }

    fn spd_decide(&mut self, query: &SpdQuery) -> SpdDecision {
        self.rules
            .iter()
            .take(self.count)
            .flatten()
            .find(|r| r.matches(query))
            .map_or(
                SpdDecision {
                    action: SpdAction::Discard,
                    entry: None,
                    cacheable: true,
                },
                |r| SpdDecision {
                    action: r.action,
                    entry: Some(r.id),
                    cacheable: true,
                },
            )
    }
}

export_policy!(SpdRules, spd_decide);

#[cfg(test)]
mod tests {
    use super::*;
    use iipnic_policy_sdk::{Addr, Direction};

    fn blob(rules: &[SpdRule]) -> Vec<u8> {
        let mut b = (rules.len() as u32).to_le_bytes().to_vec();
        for r in rules {
            let mut enc = [0u8; SpdRule::LEN];
            r.encode(&mut enc).unwrap();
            b.extend_from_slice(&enc);
        }
        b
    }

    #[test]
    fn first_match_and_default_discard() {
        let rule = |id, dst_len, action| SpdRule {
            id,
            direction: Direction::Outbound,
            protocol: None,
            src: Addr::v4([0, 0, 0, 0]),
            src_len: 0,
            dst: Addr::v4([192, 0, 2, 2]),
            dst_len,
            action,
        };
        let mut p = SpdRules::init(&blob(&[
            rule(1, 32, SpdAction::Bypass),
            rule(2, 24, SpdAction::Protect { sa: Some(9) }),
        ]))
        .unwrap();
        let q = |dst| SpdQuery {
            direction: Direction::Outbound,
            protocol: 4,
            protected: false,
            src: Addr::v4([192, 0, 2, 1]),
            dst: Addr::v4(dst),
        };
        assert_eq!(p.spd_decide(&q([192, 0, 2, 2])).entry, Some(1));
        assert_eq!(
            p.spd_decide(&q([192, 0, 2, 3])).action,
            SpdAction::Protect { sa: Some(9) }
        );
        assert_eq!(
            p.spd_decide(&q([198, 51, 100, 1])).action,
            SpdAction::Discard
        );
        assert!(SpdRules::init(&[1, 0, 0, 0]).is_err());
        assert_eq!(SpdRules::init(&[]).unwrap().count, 0);
    }
}
