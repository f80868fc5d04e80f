//! The fast path against the crypto it is built on, measured in the same run.
//!
//! For each inner size (64, 512, 1400 bytes, and an IMIX of 7x64 + 4x576 + 1x1400) this
//! measures outbound (`from_host`: FIB, SPD-O cache hit, IPIP + ESP seal) and inbound
//! (`from_underlay`: SAD, replay window, ESP open, SPD-S cache hit, decap, uRPF, FIB), and
//! the `aes-gcm` crate sealing and opening the same number of bytes. At the end it prints
//! fast-path throughput as a ratio of raw AES-GCM throughput. Run: `cargo bench -p iipnic-firmware`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInOut, KeyInit};
use criterion::{BenchmarkId, Criterion, Throughput};
use iipnic_firmware::control::{HexKey, NodeConfig, NodeSettings};
use iipnic_firmware::esp::{Algorithm, IcvLen};
use iipnic_firmware::fib::{NextHop, Route, RouteTarget};
use iipnic_firmware::packet_buf::{HEADROOM, TAILROOM};
use iipnic_firmware::sad::{Lifetime, SaConfig, SaDirection, SaId};
use iipnic_firmware::spd::{Action, Direction, Selector, SpdEntry, SpdEntryId};
use iipnic_firmware::vif::{VifConfig, VifId};
use iipnic_firmware::wire::{ipv4, proto};
use iipnic_firmware::{Disposition, NativePolicy, Node, NodeLimits, PacketBuf, Port};

const KEY: &str = "000102030405060708090a0b0c0d0e0fa0a1a2a3";
const SIZES: &[(&str, &[usize])] = &[
    ("64", &[64]),
    ("512", &[512]),
    ("1400", &[1400]),
    (
        "imix",
        &[64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1400],
    ),
];

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn node(me: u8, peer: u8) -> Node<NativePolicy> {
    let (local, remote) = (addr(me), addr(peer));
    let key = HexKey::from_hex(KEY).unwrap();
    let sa = |id, direction, src, dst| SaConfig {
        id: SaId(id),
        direction,
        spi: 0x1001,
        algorithm: Algorithm::AesGcm,
        key: key.clone(),
        icv_len: IcvLen::Sixteen,
        esn: false,
        replay_window: 1024,
        src,
        dst,
        protocol: None,
        lifetime: Lifetime::default(),
    };
    let spd = |id, direction, src, dst, sa| SpdEntry {
        id: SpdEntryId(id),
        direction,
        selector: Selector {
            src: iipnic_firmware::prefix::IpPrefix::host(src),
            dst: iipnic_firmware::prefix::IpPrefix::host(dst),
            protocol: None,
        },
        action: Action::Protect { sa },
    };
    let config = NodeConfig {
        settings: NodeSettings {
            underlay: vec![local],
            underlay_mtu: 1500,
            icmp_source_v4: None,
            icmp_source_v6: None,
        },
        vifs: vec![VifConfig {
            id: VifId(1),
            name: "peer".into(),
            local,
            remote,
            mtu: 1400,
            ttl: 64,
            dscp: Default::default(),
            df: Default::default(),
            urpf: Default::default(),
            up: true,
        }],
        routes: vec![
            Route {
                prefix: format!("10.{me}.0.0/16").parse().unwrap(),
                target: RouteTarget::Host,
            },
            Route {
                prefix: format!("10.{peer}.0.0/16").parse().unwrap(),
                target: RouteTarget::Vif {
                    next_hops: vec![NextHop {
                        vif: VifId(1),
                        metric: 0,
                        weight: 1,
                    }],
                },
            },
        ],
        spd: vec![
            spd(1, Direction::Outbound, local, remote, Some(SaId(1))),
            spd(2, Direction::Inbound, remote, local, None),
        ],
        sas: vec![
            sa(1, SaDirection::Outbound, local, remote),
            sa(2, SaDirection::Inbound, remote, local),
        ],
    };
    Node::new(&config, NativePolicy, NodeLimits::default(), 0).unwrap()
}

fn inner(len: usize) -> Vec<u8> {
    let mut p = vec![0x5a; len];
    ipv4::Repr {
        src: Ipv4Addr::new(10, 1, 0, 5),
        dst: Ipv4Addr::new(10, 2, 0, 9),
        protocol: proto::UDP,
        payload_len: len - 20,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut p)
    .unwrap();
    p
}

/// Bytes the raw AEAD processes for an inner packet: payload, padding and trailer.
fn esp_body_len(len: usize) -> usize {
    len + 2 + (4 - (len + 2) % 4) % 4
}

fn bench(c: &mut Criterion) {
    let mut buffer = vec![0u8; HEADROOM + 2048 + TAILROOM];
    let raw = aes_gcm::Aes128Gcm::new_from_slice(&hex::decode(&KEY[..32]).unwrap()).unwrap();
    let nonce = [7u8; 12];
    let aad = [1u8; 8];
    for &(name, sizes) in SIZES {
        let packets: Vec<Vec<u8>> = sizes.iter().map(|&l| inner(l)).collect();
        let bytes: usize = sizes.iter().sum();

        let mut group = c.benchmark_group("outbound");
        group.throughput(Throughput::Bytes(bytes as u64));
        let mut a = node(1, 2);
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                for p in &packets {
                    let mut pkt = PacketBuf::copy_from(&mut buffer, p).unwrap();
                    let d = a.from_host(&mut pkt, 0, &mut |_: Port, out: &[u8]| {
                        std::hint::black_box(out);
                    });
                    debug_assert_eq!(d, Disposition::Sent(Port::Underlay));
                }
            })
        });
        group.finish();

        let mut group = c.benchmark_group("raw_seal");
        group.throughput(Throughput::Bytes(bytes as u64));
        let mut bodies: Vec<Vec<u8>> = sizes.iter().map(|&l| vec![0x5a; esp_body_len(l)]).collect();
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                for body in &mut bodies {
                    let mut work = PacketBuf::copy_from(&mut buffer, body).unwrap();
                    let tag = raw
                        .encrypt_inout_detached(&nonce.into(), &aad, work.data_mut().into())
                        .unwrap();
                    std::hint::black_box(tag);
                }
            })
        });
        group.finish();

        // Inbound needs fresh sequence numbers: A encrypts chunks ahead of time (not timed).
        let mut group = c.benchmark_group("inbound");
        group.throughput(Throughput::Bytes(bytes as u64));
        let (mut a, mut b) = (node(1, 2), node(2, 1));
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Small chunks keep the wire packets in cache, as the raw benchmark's are.
                    let chunk = left.min(64);
                    let mut wires = Vec::with_capacity(chunk as usize * packets.len());
                    for _ in 0..chunk {
                        for p in &packets {
                            let mut pkt = PacketBuf::copy_from(&mut buffer, p).unwrap();
                            a.from_host(&mut pkt, 0, &mut |_: Port, out: &[u8]| {
                                wires.push(out.to_vec())
                            });
                        }
                    }
                    let start = Instant::now();
                    for wire in &wires {
                        let mut pkt = PacketBuf::copy_from(&mut buffer, wire).unwrap();
                        let d = b.from_underlay(&mut pkt, 0, &mut |_: Port, out: &[u8]| {
                            std::hint::black_box(out);
                        });
                        debug_assert_eq!(d, Disposition::Sent(Port::Host));
                    }
                    total += start.elapsed();
                    left -= chunk;
                }
                total
            })
        });
        group.finish();

        let mut group = c.benchmark_group("raw_open");
        group.throughput(Throughput::Bytes(bytes as u64));
        let sealed: Vec<(Vec<u8>, Vec<u8>)> = sizes
            .iter()
            .map(|&l| {
                let mut body = vec![0x5a; esp_body_len(l)];
                let tag = raw
                    .encrypt_inout_detached(&nonce.into(), &aad, body.as_mut_slice().into())
                    .unwrap();
                (body, tag.to_vec())
            })
            .collect();
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                for (body, tag) in &sealed {
                    let mut work = PacketBuf::copy_from(&mut buffer, body).unwrap();
                    raw.decrypt_inout_detached(
                        &nonce.into(),
                        &aad,
                        work.data_mut().into(),
                        tag.as_slice().try_into().unwrap(),
                    )
                    .unwrap();
                }
            })
        });
        group.finish();
    }
}

/// Mean time per iteration of one benchmark, from the estimates criterion just wrote.
fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let path = format!("{dir}/criterion/{group}/{id}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn print_ratios() {
    println!("\nfast path / raw AES-GCM throughput (same run; 1.00 = as fast as the bare AEAD):");
    println!("{:>6}  {:>9}  {:>9}", "size", "outbound", "inbound");
    for &(name, _) in SIZES {
        let ratio = |path: &str, raw: &str| match (mean_ns(path, name), mean_ns(raw, name)) {
            (Some(p), Some(r)) => format!("{:.2}", r / p),
            _ => "n/a".into(),
        };
        println!(
            "{name:>6}  {:>9}  {:>9}",
            ratio("outbound", "raw_seal"),
            ratio("inbound", "raw_open")
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    print_ratios();
}
