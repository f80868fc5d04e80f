//! The fast path does not allocate once caches are warm: counted with a global allocator
//! that tallies every allocation this test binary makes.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use iipnic_firmware::packet_buf::{HEADROOM, TAILROOM};
use iipnic_firmware::{Disposition, PacketBuf, Port};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_fast_path_does_not_allocate() {
    for outer_v6 in [false, true] {
        let (mut a, mut b) = pair(&Options {
            outer_v6,
            ..Options::default()
        });
        let packets = [
            udp(v4(1, 5), v4(2, 9), 1400, 0, true),
            udp(v6(1, 5), v6(2, 9), 64, 0, true),
        ];
        let mut out_buf = vec![0u8; HEADROOM + 2048 + TAILROOM];
        let mut in_buf = vec![0u8; HEADROOM + 2048 + TAILROOM];
        let mut wire = vec![0u8; 2048];
        let mut round = |a: &mut _, b: &mut _, packet: &[u8]| {
            let a: &mut iipnic_firmware::Node<_> = a;
            let b: &mut iipnic_firmware::Node<_> = b;
            let mut len = 0;
            let mut pkt = PacketBuf::copy_from(&mut out_buf, packet).unwrap();
            let d = a.from_host(&mut pkt, 0, &mut |_: Port, p: &[u8]| {
                wire[..p.len()].copy_from_slice(p);
                len = p.len();
            });
            assert_eq!(d, Disposition::Sent(Port::Underlay));
            let mut pkt = PacketBuf::copy_from(&mut in_buf, &wire[..len]).unwrap();
            let d = b.from_underlay(&mut pkt, 0, &mut |_: Port, _: &[u8]| {});
            assert_eq!(d, Disposition::Sent(Port::Host));
        };
        // Warm the SPD caches.
        for p in &packets {
            round(&mut a, &mut b, p);
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        assert!(
            before > 0,
            "the counting allocator sees the set-up allocations"
        );
        for _ in 0..500 {
            for p in &packets {
                round(&mut a, &mut b, p);
            }
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocations, 0,
            "outer v6 {outer_v6}: {allocations} allocations in 1000 round trips"
        );
    }
}
