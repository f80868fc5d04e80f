//! Route selection: primary/backup. The best-metric candidate that is up carries the
//! traffic; when it fails the next one takes over at once, and when it comes back the
//! traffic returns only after a hold-down (default 2000 ms; configuration: `u32` ms), so a
//! flapping link does not drag flows back and forth. Uses the `now_ms` import.
#![cfg_attr(target_arch = "wasm32", no_std)]

use iipnic_policy_sdk::{Policy, RouteDecision, RouteQuery, export_policy, now_ms};

/// Hold-down when the configuration is empty.
pub const DEFAULT_HOLD_DOWN_MS: u64 = 2000;
/// Error code: malformed configuration.
pub const BAD_CONFIG: i32 = 100;

/// Remembers the vif in use and when a better one came back.
pub struct Failover {
    hold_down_ms: u64,
    current: Option<u16>,
    better_since: Option<(u16, u64)>,
}

impl Failover {
    /// The decision logic with an explicit clock, so tests can drive time.
    pub fn select_at(&mut self, q: &RouteQuery, now: u64) -> RouteDecision {
        let up = || q.candidates().iter().enumerate().filter(|(_, c)| c.up);
        let Some((best_index, best)) = up().min_by_key(|(_, c)| (c.metric, c.vif)) else {
            self.current = None;
            return RouteDecision::NO_ROUTE;
        };
        let current = self
            .current
            .and_then(|vif| up().find(|(_, c)| c.vif == vif));
        let chosen = match current {
            Some((i, c)) if c.vif != best.vif => {
                // A better path is back: wait out the hold-down before moving to it.
                let since = match self.better_since {
                    Some((vif, t)) if vif == best.vif => t,
                    _ => {
                        self.better_since = Some((best.vif, now));
                        now
                    }
                };
                if now.saturating_sub(since) >= self.hold_down_ms {
                    best_index
                } else {
                    i
                }
            }
            _ => best_index,
        };
        let vif = q.candidates().get(chosen).map(|c| c.vif);
        if vif == Some(best.vif) {
            self.better_since = None;
        }
        self.current = vif;
        // While waiting to revert the answer changes with time: not cacheable.
        RouteDecision {
            choice: u8::try_from(chosen).ok(),
            cacheable: self.better_since.is_none(),
        }
    }
}

impl Policy for Failover {
    fn init(config: &[u8]) -> Result<Self, i32> {
        let hold_down_ms = match config.len() {
            0 => DEFAULT_HOLD_DOWN_MS,
            4 => u64::from(u32::from_le_bytes(
                config.try_into().map_err(|_| BAD_CONFIG)?,
            )),
            _ => return Err(BAD_CONFIG),
        };
        Ok(Failover {
            hold_down_ms,
            current: None,
            better_since: None,
        })
    }

    fn route_select(&mut self, q: &RouteQuery) -> RouteDecision {
        self.select_at(q, now_ms())
    }
}

export_policy!(Failover, route_select);

#[cfg(test)]
mod tests {
    use super::*;
    use iipnic_policy_sdk::{Addr, Candidate};

    fn query(primary_up: bool) -> RouteQuery {
        let c = [
            Candidate {
                vif: 1,
                up: primary_up,
                metric: 10,
                weight: 1,
            },
            Candidate {
                vif: 2,
                up: true,
                metric: 20,
                weight: 1,
            },
        ];
        RouteQuery::new(17, 0, Addr::v4([10, 0, 0, 1]), Addr::v4([10, 1, 0, 1]), &c)
    }

    #[test]
    fn fails_over_at_once_and_reverts_after_hold_down() {
        let mut p = Failover::init(&1000u32.to_le_bytes()).unwrap();
        assert_eq!(p.select_at(&query(true), 0).choice, Some(0));
        assert_eq!(p.select_at(&query(false), 10).choice, Some(1));
        // Primary back at t=20: stay on the backup until t=1020.
        let d = p.select_at(&query(true), 20);
        assert_eq!((d.choice, d.cacheable), (Some(1), false));
        assert_eq!(p.select_at(&query(true), 1019).choice, Some(1));
        let d = p.select_at(&query(true), 1020);
        assert_eq!((d.choice, d.cacheable), (Some(0), true));
        assert!(Failover::init(&[1, 2]).is_err());
    }
}
