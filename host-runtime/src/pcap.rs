//! Classic libpcap files: enough to read captures from tcpdump/Wireshark and to write
//! files they open. Link types: Ethernet (1), raw IP (101), IPv4 (228), IPv6 (229).

use std::io::{self, Read, Write};

/// Raw IP packets, no link header: what this crate writes.
pub const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;

/// Refuse records larger than this: a corrupt length must not make us allocate gigabytes.
const MAX_RECORD: u32 = 256 * 1024;

/// One captured packet, with the link header removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Capture time in microseconds since the epoch.
    pub timestamp_us: u64,
    /// The IP packet.
    pub packet: Vec<u8>,
}

/// Reads every record of a pcap file and strips the link header, leaving IP packets.
/// Ethernet frames that carry neither IPv4 nor IPv6 (ARP, say) are skipped; VLAN tags are
/// removed.
pub fn read(mut input: impl Read) -> io::Result<Vec<Record>> {
    let mut header = [0u8; 24];
    input.read_exact(&mut header)?;
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let (little, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => {
            return Err(invalid(
                "not a pcap file (pcapng is not supported; convert with editcap -F pcap)",
            ));
        }
    };
    let u32_at = |b: &[u8], at: usize| {
        let bytes = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    let linktype = u32_at(&header, 20) & 0x0fff_ffff;
    if ![
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    ]
    .contains(&linktype)
    {
        return Err(invalid(&format!("unsupported link type {linktype}")));
    }
    let mut records = Vec::new();
    let mut rec = [0u8; 16];
    loop {
        match input.read_exact(&mut rec) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let (secs, frac, caplen) = (u32_at(&rec, 0), u32_at(&rec, 4), u32_at(&rec, 8));
        if caplen > MAX_RECORD {
            return Err(invalid(&format!("record of {caplen} bytes is too large")));
        }
        let mut frame = vec![0u8; caplen as usize];
        input.read_exact(&mut frame)?;
        let micros = if nanos {
            u64::from(frac) / 1000
        } else {
            u64::from(frac)
        };
        let packet = match linktype {
            LINKTYPE_ETHERNET => match strip_ethernet(&frame) {
                Some(ip) => ip.to_vec(),
                None => continue,
            },
            _ => frame,
        };
        records.push(Record {
            timestamp_us: u64::from(secs) * 1_000_000 + micros,
            packet,
        });
    }
    Ok(records)
}

fn strip_ethernet(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    loop {
        let ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match ethertype {
            0x8100 | 0x88a8 => at += 4,
            0x0800 | 0x86dd => return frame.get(at + 2..),
            _ => return None,
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// Writes raw IP packets as a pcap file (link type 101).
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&65535u32.to_le_bytes());
        header.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        out.write_all(&header)?;
        Ok(Writer { out })
    }

    /// Appends one packet.
    pub fn write(&mut self, timestamp_us: u64, packet: &[u8]) -> io::Result<()> {
        let len = u32::try_from(packet.len()).map_err(|_| invalid("packet too large"))?;
        let secs = u32::try_from(timestamp_us / 1_000_000).unwrap_or(u32::MAX);
        let micros = (timestamp_us % 1_000_000) as u32;
        for field in [secs, micros, len, len] {
            self.out.write_all(&field.to_le_bytes())?;
        }
        self.out.write_all(packet)
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_raw() {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.write(1_500_000, &[0x45, 0, 0, 20]).unwrap();
        let bytes = w.finish().unwrap();
        let records = read(&bytes[..]).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].timestamp_us, 1_500_000);
        assert_eq!(records[0].packet, vec![0x45, 0, 0, 20]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(read(&b"not a pcap file at all, really"[..]).is_err());
    }
}
