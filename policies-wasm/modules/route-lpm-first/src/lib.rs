//! Route selection: the first candidate of the longest-prefix match (candidates arrive best
//! metric first) whose vif is up — what the native engine does. The smallest useful policy.
// no_std on wasm32 (the SDK supplies the panic handler); std on the host for tests.
#![cfg_attr(target_arch = "wasm32", no_std)]

use iipnic_policy_sdk::{Policy, RouteDecision, RouteQuery, export_policy};

/// Stateless.
pub struct LpmFirst;

impl Policy for LpmFirst {
    fn init(_config: &[u8]) -> Result<Self, i32> {
        Ok(LpmFirst)
    }

    fn route_select(&mut self, query: &RouteQuery) -> RouteDecision {
        query
            .candidates()
            .iter()
            .position(|c| c.up)
            .and_then(|i| u8::try_from(i).ok())
            .map_or(RouteDecision::NO_ROUTE, RouteDecision::use_candidate)
    }
}

export_policy!(LpmFirst, route_select);

#[cfg(test)]
mod tests {
    use super::*;
    use iipnic_policy_sdk::{Addr, Candidate};

    fn query(up: &[bool]) -> RouteQuery {
        let c: Vec<Candidate> = up
            .iter()
            .enumerate()
            .map(|(i, &up)| Candidate {
                vif: i as u16 + 1,
                up,
                metric: i as u32,
                weight: 1,
            })
            .collect();
        RouteQuery::new(17, 0, Addr::v4([10, 0, 0, 1]), Addr::v4([10, 1, 0, 1]), &c)
    }

    #[test]
    fn skips_down_links() {
        let mut p = LpmFirst::init(&[]).unwrap();
        assert_eq!(p.route_select(&query(&[true, true])).choice, Some(0));
        assert_eq!(p.route_select(&query(&[false, true])).choice, Some(1));
        assert_eq!(p.route_select(&query(&[false])).choice, None);
        assert_eq!(p.route_select(&query(&[])).choice, None);
    }
}
