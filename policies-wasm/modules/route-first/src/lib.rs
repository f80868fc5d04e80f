//! Route selection: the first (best-metric) candidate whose vif is up, as the native
//! engine does. The smallest useful policy, and the reference for the ABI.
// no_std on wasm32 (the SDK supplies the panic handler); std on the host for tests.
#![cfg_attr(target_arch = "wasm32", no_std)]

use iipnic_policy_sdk::{RouteDecision, RouteQuery, route_policy};

/// Picks the first candidate that is up.
pub fn first_up(query: &RouteQuery) -> RouteDecision {
    query
        .candidates()
        .iter()
        .position(|c| c.up)
        .and_then(|i| u8::try_from(i).ok())
        .map_or(RouteDecision::NoRoute, RouteDecision::Use)
}

route_policy!(first_up);

#[cfg(test)]
mod tests {
    use super::*;
    use iipnic_policy_sdk::{QUERY_BUFFER_LEN, route_layout as l};

    fn query(up: &[bool]) -> RouteQuery {
        let mut buf = [0u8; QUERY_BUFFER_LEN];
        buf[l::FAMILY] = 4;
        buf[l::CANDIDATE_COUNT] = up.len() as u8;
        for (i, &u) in up.iter().enumerate() {
            buf[l::CANDIDATES + i * l::CANDIDATE_LEN + 2] = u8::from(u);
        }
        RouteQuery::decode(&buf).unwrap()
    }

    #[test]
    fn skips_down_links() {
        assert_eq!(first_up(&query(&[true, true])), RouteDecision::Use(0));
        assert_eq!(first_up(&query(&[false, true])), RouteDecision::Use(1));
        assert_eq!(first_up(&query(&[false])), RouteDecision::NoRoute);
        assert_eq!(first_up(&query(&[])), RouteDecision::NoRoute);
    }
}
