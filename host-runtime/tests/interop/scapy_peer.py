#!/usr/bin/env python3
"""scapy as an independent IPsec peer of iipnic (RFC 3884 IIPtran), in both directions.

For every combination of outer family (IPv4, IPv6), inner family (4in4, 6in4, 4in6, 6in6),
transform (AES-GCM-128, AES-GCM-256, AES-GMAC), ICV length (8, 12, 16; GMAC: 16) and ESN
(off, on):

* inbound: scapy encrypts IPIP tunnel packets in ESP transport mode; `iipnic replay`
  must decapsulate exactly the inner packets scapy started from;
* outbound: `iipnic replay` encapsulates and encrypts inner packets; scapy must decrypt
  each one back to the inner packet.

Then the tunnel-mode equivalence RFC 3884 promises: scapy in *tunnel* mode is accepted by
our inbound path, and decrypts our outbound packets straight to the inner packet.

Needs: scapy and cryptography (pip), and IIPNIC pointing at the iipnic binary.
"""

import os
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives.ciphers import algorithms, modes
from scapy.all import IP, UDP, IPv6, Raw, rdpcap, wrpcap
from scapy.layers.ipsec import CRYPT_ALGOS, ESP, CryptAlgo, SecurityAssociation

# scapy 2.8's AES-GCM goes through cryptography's one-shot AEAD API, which appends the full
# 16-byte tag whatever crypt_icv_size says. Its Cipher/modes.GCM path truncates the tag as
# RFC 4106 section 6 requires (leftmost bytes) and checks truncated tags, so this copy of
# the algorithm uses that path; it is still scapy's ESP code and the cryptography library.
CRYPT_ALGOS["AES-GCM-TRUNCATING"] = CryptAlgo(
    "AES-GCM-TRUNCATING",
    cipher=algorithms.AES,
    mode=modes.GCM,
    key_size=(16, 24, 32),
    salt_size=4,
    block_size=1,
    iv_size=8,
    icv_size=16,
    format_mode_iv=lambda sa, iv, **kw: sa.crypt_salt + iv,
)

IIPNIC = os.environ["IIPNIC"]
SPI = 0x1001
UNDERLAY = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
HOSTS = {4: ("10.1.0.5", "10.2.0.9"), 6: ("fd00:1::5", "fd00:2::9")}


def toml_config(outer, transform, icv, esn, keymat):
    """Two nodes: A (sender, node 1) and B (receiver, node 2), one protected vif each."""
    a, b = UNDERLAY[outer]
    algorithm = "aes-gmac" if transform == "gmac" else "aes-gcm"

    def node(name, me, peer, my_id, peer_id, direction):
        return f"""
[[nodes]]
name = "{name}"
underlay = ["{me}"]
underlay_mtu = 9200

[[nodes.vifs]]
id = 1
local = "{me}"
remote = "{peer}"
mtu = 9000
urpf = "loose"

[[nodes.routes]]
prefix = "10.{my_id}.0.0/16"
kind = "host"

[[nodes.routes]]
prefix = "fd00:{my_id}::/48"
kind = "host"

[[nodes.routes]]
prefix = "10.{peer_id}.0.0/16"
kind = "vif"
next_hops = [{{ vif = 1 }}]

[[nodes.routes]]
prefix = "fd00:{peer_id}::/48"
kind = "vif"
next_hops = [{{ vif = 1 }}]

[[nodes.spd]]
id = 1
direction = "{direction}"
src = "{a}/{128 if outer == 6 else 32}"
dst = "{b}/{128 if outer == 6 else 32}"
action = "protect"
{"sa = 1" if direction == "outbound" else ""}

[[nodes.sas]]
id = 1
direction = "{direction}"
spi = {SPI}
algorithm = "{algorithm}"
key = "{keymat.hex()}"
icv_len = {icv}
esn = {"true" if esn else "false"}
src = "{a}"
dst = "{b}"
"""

    return node("A", a, b, 1, 2, "outbound") + node("B", b, a, 2, 1, "inbound")


def inner_packets(inner):
    src, dst = HOSTS[inner]
    layer = IP if inner == 4 else IPv6
    return [bytes(layer(src=src, dst=dst) / UDP(sport=4000 + i, dport=9) / Raw(os.urandom(n)))
            for i, n in enumerate((0, 1, 13, 200, 1371, 3000))]


def outer_packet(outer, inner_bytes, inner):
    a, b = UNDERLAY[outer]
    layer = IP(src=a, dst=b, proto=4 if inner == 4 else 41) if outer == 4 else IPv6(src=a, dst=b, nh=4 if inner == 4 else 41)
    return layer / Raw(inner_bytes)


def scapy_sa(transform, icv, esn, keymat, tunnel=None):
    return SecurityAssociation(
        ESP,
        spi=SPI,
        crypt_algo="AES-NULL-GMAC" if transform == "gmac" else "AES-GCM-TRUNCATING",
        crypt_key=keymat,
        crypt_icv_size=icv,
        esn_en=esn,
        esn=0,
        tunnel_header=tunnel,
    )


def replay(tmp, config, packets, direction):
    cfg, pin, pout = (os.path.join(tmp, n) for n in ("net.toml", "in.pcap", "out.pcap"))
    with open(cfg, "w") as f:
        f.write(config)
    wrpcap(pin, packets)
    run = subprocess.run([IIPNIC, "replay", "--config", cfg, "--in", pin, "--out", pout, "--direction", direction],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise AssertionError(f"iipnic replay failed: {run.stderr}{run.stdout}")
    return [bytes(p) for p in rdpcap(pout)], run.stdout


def parse_ip(raw):
    return IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)


def check(tmp, outer, inner, transform, icv, esn, tunnel_mode):
    keymat = os.urandom(36 if transform == "gcm256" else 20)
    config = toml_config(outer, transform, icv, esn, keymat)
    inners = inner_packets(inner)
    a, b = UNDERLAY[outer]
    header = (IP(src=a, dst=b) if outer == 4 else IPv6(src=a, dst=b)) if tunnel_mode else None
    sa = scapy_sa(transform, icv, esn, keymat, header)

    # scapy -> iipnic
    if tunnel_mode:
        encrypted = [sa.encrypt(parse_ip(p), seq_num=i + 1) for i, p in enumerate(inners)]
    else:
        encrypted = [sa.encrypt(outer_packet(outer, p, inner), seq_num=i + 1) for i, p in enumerate(inners)]
    delivered, report = replay(tmp, config, encrypted, "inbound")
    if delivered != inners:
        raise AssertionError(f"inbound: {len(delivered)} of {len(inners)} delivered intact\n{report}")

    # iipnic -> scapy
    sealed, report = replay(tmp, config, [parse_ip(p) for p in inners], "outbound")
    if len(sealed) != len(inners):
        raise AssertionError(f"outbound: {len(sealed)} packets for {len(inners)}\n{report}")
    for raw, want in zip(sealed, inners):
        decrypted = sa.decrypt(parse_ip(raw))
        got = bytes(decrypted) if tunnel_mode else bytes(decrypted.payload)
        if got != want:
            raise AssertionError(f"outbound: scapy decrypted {got[:40].hex()}..., expected {want[:40].hex()}...")


def main():
    cases = []
    for outer in (4, 6):
        for inner in (4, 6):
            for transform, icvs in (("gcm128", (8, 12, 16)), ("gcm256", (8, 12, 16)), ("gmac", (16,))):
                for icv in icvs:
                    for esn in (False, True):
                        cases.append((outer, inner, transform, icv, esn, False))
            # RFC 3884: a tunnel-mode peer interoperates with an IIPtran node.
            cases.append((outer, inner, "gcm128", 16, False, True))
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            outer, inner, transform, icv, esn, tunnel = case
            name = f"{inner}in{outer} {transform} icv{icv} esn={'on' if esn else 'off'} {'tunnel-mode peer' if tunnel else 'transport+IPIP'}"
            try:
                check(tmp, *case)
                passed += 1
                print(f"ok    {name}")
            except Exception as e:  # report every case, then fail
                failed += 1
                print(f"FAIL  {name}: {e}")
    print(f"scapy interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
