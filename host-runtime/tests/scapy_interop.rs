//! scapy (an independent IPsec implementation) against our pipelines, both directions,
//! every address-family combination, GCM-128/256, GMAC, ICV 8/12/16, ESN on/off, and a
//! tunnel-mode peer. The checks live in `tests/interop/scapy_peer.py`.

use std::process::Command;

#[test]
fn scapy_interoperates_in_both_directions() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/scapy_peer.py");
    let out = Command::new("python3")
        .arg(script)
        .env("IIPNIC", env!("CARGO_BIN_EXE_iipnic"))
        .output()
        .expect("python3 with scapy and cryptography (installed by `cargo xtask setup`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("scapy interop: 60 passed, 0 failed"),
        "{stdout}"
    );
}
