//! The built-in policy engine: RFC 4301 first match, and the best-metric candidate whose
//! vif is up.

use super::{PolicyEngine, RouteDecision, RouteQuery, SpdQuery};
use crate::spd::{Spd, SpdDecision};

/// Standard semantics without a sandbox.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativePolicy;

impl PolicyEngine for NativePolicy {
    fn spd_decide(&mut self, spd: &Spd, query: &SpdQuery) -> SpdDecision {
        spd.first_match(query.direction, &query.key)
    }

    fn route_select(&mut self, query: &RouteQuery<'_>) -> RouteDecision {
        RouteDecision {
            choice: query.candidates.iter().position(|c| c.up),
            cacheable: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fib::NextHop;
    use crate::policy::Candidate;
    use crate::vif::VifId;

    #[test]
    fn first_candidate_that_is_up() {
        let nh = |vif| NextHop {
            vif: VifId(vif),
            metric: 0,
            weight: 1,
        };
        let candidates = [
            Candidate {
                next_hop: nh(1),
                up: false,
            },
            Candidate {
                next_hop: nh(2),
                up: true,
            },
        ];
        let query = RouteQuery {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.1.1".parse().unwrap(),
            protocol: 17,
            flow_hash: 0,
            candidates: &candidates,
            now_ms: 0,
        };
        assert_eq!(NativePolicy.route_select(&query).choice, Some(1));
        let down = [Candidate {
            next_hop: nh(1),
            up: false,
        }];
        let query = RouteQuery {
            candidates: &down,
            ..query
        };
        assert_eq!(NativePolicy.route_select(&query).choice, None);
    }
}
