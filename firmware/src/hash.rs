//! One cheap hash for flows and tunnel keys: a few multiplies over 32-bit words, so the
//! per-packet cost stays in single nanoseconds (ECMP, flow-label, SPD and route caches).

/// Hashes addresses (4 or 16 bytes each), a protocol and optional port bytes.
pub(crate) fn tuple_hash(src: &[u8], dst: &[u8], protocol: u8, ports: Option<&[u8]>) -> u32 {
    const K: u32 = 0x9e37_79b1;
    let mut h = u32::from(protocol).wrapping_mul(K);
    for word in src.chunks_exact(4).chain(dst.chunks_exact(4)) {
        if let &[a, b, c, d] = word {
            h = (h ^ u32::from_be_bytes([a, b, c, d]))
                .wrapping_mul(K)
                .rotate_left(13);
        }
    }
    if let Some(&[a, b, c, d]) = ports {
        h = (h ^ u32::from_be_bytes([a, b, c, d])).wrapping_mul(K);
    }
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_neighbouring_addresses_and_ports() {
        let a = tuple_hash(&[10, 0, 0, 1], &[10, 0, 0, 2], 17, None);
        let b = tuple_hash(&[10, 0, 0, 1], &[10, 0, 0, 3], 17, None);
        let c = tuple_hash(&[10, 0, 0, 1], &[10, 0, 0, 2], 17, Some(&[0, 1, 0, 2]));
        assert!(a != b && a != c && b != c);
        assert_eq!(a, tuple_hash(&[10, 0, 0, 1], &[10, 0, 0, 2], 17, None));
    }
}
