//! The Internet checksum (RFC 1071) and the IPv6 pseudo-header sum (RFC 8200 section 8.1).

use core::net::Ipv6Addr;

/// Adds `data` to a running one's-complement sum (not yet folded).
pub fn accumulate(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        if let &[a, b] = pair {
            sum = sum.wrapping_add(u32::from(u16::from_be_bytes([a, b])));
        }
    }
    if let &[last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(last) << 8);
    }
    // Fold early so long buffers cannot overflow the accumulator.
    (sum & 0xffff) + (sum >> 16)
}

/// Folds a running sum to 16 bits and complements it: the value to store in a header.
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `data` on its own (IPv4 header, ICMPv4 message).
pub fn checksum(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// The running sum of the IPv6 pseudo-header for an upper-layer packet of `len` bytes.
pub fn ipv6_pseudo_header(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let mut sum = accumulate(0, &src.octets());
    sum = accumulate(sum, &dst.octets());
    sum = accumulate(sum, &len.to_be_bytes());
    accumulate(sum, &[0, 0, 0, next_header])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x12]), checksum(&[0x12, 0x00]));
    }
}
