//! The emulator on the built-in triangle and on a topology file: every packet accounted
//! for, swaps and rekeys without loss, failover convergence, impaired links, and pcaps
//! that an independent decoder (tshark) decrypts with the keys file we write.

use std::path::Path;
use std::process::Command;

use iipnic::demo;
use iipnic::emulator::report::Report;
use iipnic::emulator::topology::{Rng, Topology};
use iipnic::emulator::{Emulator, Options};

fn run(topology: Topology, options: Options) -> Report {
    let mut emulator = Emulator::new(topology, options).unwrap();
    emulator.run(&mut |_| {});
    emulator
        .finish(std::time::Duration::from_millis(1))
        .unwrap()
}

fn assert_every_packet_accounted_for(report: &Report) {
    for f in &report.flows {
        assert!(f.sent > 0, "flow {} -> {} sent nothing", f.src, f.dst);
        assert_eq!(
            f.unaccounted(),
            0,
            "flow {} -> {}: sent {} delivered {} dropped {:?}",
            f.src,
            f.dst,
            f.sent,
            f.delivered,
            f.dropped
        );
        assert_eq!(
            f.duplicates_delivered, 0,
            "anti-replay lets no duplicate through"
        );
    }
}

#[test]
fn the_default_triangle_delivers_every_packet() {
    let report = run(
        Topology::default_triangle(&mut Rng::new(1)),
        Options {
            duration_ms: 1000,
            ..Options::default()
        },
    );
    assert_every_packet_accounted_for(&report);
    assert_eq!(report.flows.len(), 4);
    for f in &report.flows {
        assert_eq!((f.sent, f.delivered), (1000, 1000));
    }
    // B relays nothing while the direct links are up; every node decrypts what it receives.
    for (name, node) in &report.nodes {
        assert_eq!(node.counters.global.total_drops(), 0, "{name}");
    }
}

#[test]
fn swap_and_rekey_lose_nothing_and_failover_converges() {
    let report = run(
        demo::scenario(7),
        Options {
            duration_ms: 8000,
            ..Options::default()
        },
    );
    assert_every_packet_accounted_for(&report);
    assert!(
        report.events.iter().all(|e| e.result.is_ok()),
        "{:?}",
        report.events
    );
    assert_eq!(report.drops_between(1500, 3000), 0, "module swap");
    assert_eq!(report.drops_between(5000, 6500), 0, "rekey under load");
    // The cut loses what is sent into the dead link before the nodes notice (50 ms
    // detection, 1000 pps, the three flows over A-C), then traffic goes through B.
    let failover_loss = report.drops_between(3000, 5000);
    assert!(
        failover_loss > 0 && failover_loss <= 3 * 55,
        "failover loss {failover_loss}"
    );
    assert!(
        report.dropped.keys().all(|r| r == "link_down"),
        "{:?}",
        report.dropped
    );
    let recovered = report
        .samples
        .iter()
        .filter(|s| s.at_ms > 3200 && s.at_ms <= 5000);
    for s in recovered {
        assert!(
            s.delivered_pps >= 3900.0,
            "at {} ms only {} pkt/s",
            s.at_ms,
            s.delivered_pps
        );
    }
    // During the cut B relays A <-> C traffic: decapsulated from one vif, re-encrypted on another.
    let b = &report.nodes["B"].counters;
    assert!(
        b.global.tx_underlay > 1500,
        "B relayed {}",
        b.global.tx_underlay
    );
    // The rekeyed SA carried traffic after the swap of keys.
    assert!(
        report
            .events
            .iter()
            .any(|e| e.result.as_ref().is_ok_and(|r| r.contains("A->B")))
    );
    // Modules decide only on cache misses: a few dozen calls for 26 000 packets until the
    // link comes back. Then route-failover holds down and answers uncacheably on purpose.
    let calls_at = |ms| {
        report
            .samples
            .iter()
            .find(|s| s.at_ms == ms)
            .map(|s| s.module_calls)
            .unwrap()
    };
    assert!(calls_at(6500) < 100, "{}", calls_at(6500));
    assert!(report.nodes["A"].route_module.calls > calls_at(6500));
}

#[test]
fn impaired_links_still_account_for_every_packet() {
    let mut topology = Topology::default_triangle(&mut Rng::new(3));
    for link in &mut topology.links {
        link.loss = 0.02;
        link.reorder = 0.2;
        link.duplicate = 0.05;
    }
    let report = run(
        topology,
        Options {
            duration_ms: 2000,
            seed: 11,
            ..Options::default()
        },
    );
    assert_every_packet_accounted_for(&report);
    assert!(
        report.dropped.get("link_loss").copied().unwrap_or(0) > 50,
        "{:?}",
        report.dropped
    );
    // Reordering within the 1024-packet window is accepted; the duplicate copies are
    // dropped by anti-replay and not charged to the flows.
    let replays: u64 = report
        .nodes
        .values()
        .map(|n| n.counters.global.drops(iipnic_firmware::DropReason::Replay))
        .sum();
    assert!(
        replays > 50,
        "duplicates must meet the replay window: {replays}"
    );
    assert!(!report.dropped.contains_key("replay"));
}

#[test]
fn topology_files_load_and_errors_name_the_line() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/two-sites.toml"
    ));
    let report = run(
        Topology::load(path).unwrap(),
        Options {
            duration_ms: 3000,
            ..Options::default()
        },
    );
    assert_every_packet_accounted_for(&report);
    assert!(report.events[0].result.is_ok(), "{:?}", report.events[0]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("loss = 0.01", "loss = \"lots\"");
    std::fs::write(&bad, &text).unwrap();
    let err = Topology::load(&bad).unwrap_err();
    let line = text
        .lines()
        .position(|l| l.starts_with("loss = \"lots\""))
        .unwrap()
        + 1;
    assert_eq!(err.line, Some(line), "{err}");
    let text = std::fs::read_to_string(path).unwrap().replace(
        "between = [\"east\", \"west\"]",
        "between = [\"east\", \"north\"]",
    );
    std::fs::write(&bad, &text).unwrap();
    assert!(
        Topology::load(&bad)
            .unwrap_err()
            .to_string()
            .contains("links[0].between: no node named `north`")
    );
}

fn tshark_fields(pcap: &Path, keys: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args([
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
    ]);
    for line in keys.lines() {
        cmd.arg("-o").arg(format!("uat:esp_sa:{line}"));
    }
    cmd.args(["-T", "fields", "-E", "separator=;"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark is installed by `cargo xtask setup` (Debian package tshark)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(';').map(str::to_string).collect())
        .collect()
}

#[test]
fn pcaps_decrypt_in_tshark_with_the_written_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut topology = demo::scenario(5);
    // A short run with a rekey in it, so the keys file must hold both generations.
    topology.events.retain(|e| {
        matches!(
            e.action,
            iipnic::emulator::topology::EventAction::Rekey { .. }
        )
    });
    topology.events[0].at_ms = 150;
    topology.events[0].action = iipnic::emulator::topology::EventAction::Rekey {
        from: "A".into(),
        to: "C".into(),
    };
    let report = run(
        topology,
        Options {
            duration_ms: 300,
            pcap_dir: Some(dir.path().to_path_buf()),
            ..Options::default()
        },
    );
    assert_every_packet_accounted_for(&report);
    let keys = std::fs::read_to_string(dir.path().join("esp_sa")).unwrap();
    assert_eq!(keys.lines().count(), 7, "six SAs and one rekeyed:\n{keys}");
    let mut checked = 0;
    for link in ["A-B", "B-C", "A-C"] {
        let pcap = dir.path().join(format!("link-{link}.pcap"));
        for row in tshark_fields(
            &pcap,
            &keys,
            &[
                "esp.spi",
                "esp.icv_good",
                "udp.dstport",
                "ip.dst",
                "ipv6.dst",
            ],
        ) {
            if row[0].is_empty() {
                continue;
            }
            assert_eq!(
                row[1], "1",
                "{link}: ICV not good for SPI {}: {row:?}",
                row[0]
            );
            assert_eq!(row[2], "9", "{link}: the inner UDP packet decodes: {row:?}");
            // Outer and inner destinations: the inner one is a host behind a node.
            let inner = if row[3].contains(',') {
                row[3].split(',').nth(1).unwrap().to_string()
            } else {
                row[4].clone()
            };
            assert!(
                inner.starts_with("10.") || inner.starts_with("fd00:"),
                "{link}: inner destination {inner}"
            );
            checked += 1;
        }
    }
    let sent: u64 = report.links.iter().map(|l| l.packets).sum();
    assert_eq!(checked, sent, "every ESP packet on every link was checked");
}
