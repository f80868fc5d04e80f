//! Route selection: weighted ECMP. Among the candidates that are up and share the best
//! metric, the flow hash picks one in proportion to the weights, so one flow stays on one
//! path and the flows spread over all of them.
#![cfg_attr(target_arch = "wasm32", no_std)]

use iipnic_policy_sdk::{Policy, RouteDecision, RouteQuery, export_policy};

/// Stateless.
pub struct Ecmp;

impl Policy for Ecmp {
    fn init(_config: &[u8]) -> Result<Self, i32> {
        Ok(Ecmp)
    }

    fn route_select(&mut self, q: &RouteQuery) -> RouteDecision {
        let healthy = || q.candidates().iter().enumerate().filter(|(_, c)| c.up);
        let Some(best) = healthy().map(|(_, c)| c.metric).min() else {
            return RouteDecision::NO_ROUTE;
        };
        let group = || healthy().filter(move |(_, c)| c.metric == best);
        let total: u64 = group().map(|(_, c)| u64::from(c.weight.max(1))).sum();
        let mut point = u64::from(q.flow_hash) % total;
        for (i, c) in group() {
            let w = u64::from(c.weight.max(1));
            if point < w {
                return RouteDecision::use_candidate(i as u8);
            }
            point -= w;
        }
        RouteDecision::NO_ROUTE
    }
}

export_policy!(Ecmp, route_select);

#[cfg(test)]
mod tests {
    use super::*;
    use iipnic_policy_sdk::{Addr, Candidate};

    fn query(hash: u32, c: &[Candidate]) -> RouteQuery {
        RouteQuery::new(6, hash, Addr::v4([10, 0, 0, 1]), Addr::v4([10, 1, 0, 1]), c)
    }

    #[test]
    fn spreads_by_weight_over_the_best_healthy_group() {
        let c = [
            Candidate {
                vif: 1,
                up: true,
                metric: 10,
                weight: 1,
            },
            Candidate {
                vif: 2,
                up: true,
                metric: 10,
                weight: 3,
            },
            Candidate {
                vif: 3,
                up: true,
                metric: 20,
                weight: 100,
            },
        ];
        let mut p = Ecmp;
        let mut hits = [0u32; 3];
        for h in 0..4000u32 {
            let choice = p
                .route_select(&query(h.wrapping_mul(2_654_435_761), &c))
                .choice
                .unwrap();
            hits[usize::from(choice)] += 1;
        }
        assert_eq!(
            hits[2], 0,
            "worse metric is never used while the best group is up"
        );
        assert!(
            (900..1100).contains(&hits[0]) && (2900..3100).contains(&hits[1]),
            "{hits:?}"
        );
        // The same flow always takes the same path.
        assert_eq!(
            p.route_select(&query(42, &c)),
            p.route_select(&query(42, &c))
        );
        // Best group down: the next metric takes over.
        let down = [
            Candidate { up: false, ..c[0] },
            Candidate { up: false, ..c[1] },
            c[2],
        ];
        assert_eq!(p.route_select(&query(1, &down)).choice, Some(2));
    }
}
