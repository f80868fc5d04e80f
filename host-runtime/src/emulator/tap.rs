//! TAP mode: a node's host side on a Linux TUN interface, so real programs (ping, iperf3)
//! send and receive VN traffic through the emulated network.
//!
//! The interface is layer 3 (`IFF_TUN`, no packet information): a node's host side carries
//! IP packets, so there is no Ethernet or ARP to emulate. Create it here, then move it into
//! a network namespace and address it there (`docs/emulator.md`).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// One TUN interface.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Creates (or attaches to) the TUN interface `name`; needs CAP_NET_ADMIN.
    pub fn open(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(format!("interface name `{name}` must be 1 to 15 bytes"));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| format!("/dev/net/tun: {e}"))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `IfReq` lays out
        // (16-byte name, flags, padding to 40 bytes); the fd is open for the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(format!(
                "TUNSETIFF {name}: {} (root or CAP_NET_ADMIN needed)",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Tun {
            file,
            name: name.to_string(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next packet the kernel sent into the interface, if any (never blocks).
    pub fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
        match self.file.read(buf) {
            Ok(n) if n > 0 => Some(n),
            Ok(_) => None,
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(_) => None,
        }
    }

    /// Hands a packet to the kernel; a full queue drops it (counted by the caller).
    pub fn write(&mut self, packet: &[u8]) -> bool {
        self.file.write(packet).is_ok()
    }
}
