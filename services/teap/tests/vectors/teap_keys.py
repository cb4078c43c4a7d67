#!/usr/bin/env python3
"""Independent known-answer vectors for ragw-teap's TLS 1.2 PRF and TEAP key schedule.

Written from the specifications, not from the Rust code:
  * RFC 5246 section 5: P_hash(secret, seed) = HMAC(secret, A(1) + seed) + HMAC(secret, A(2) + seed) + ...
    with A(0) = seed, A(i) = HMAC(secret, A(i-1)); PRF(secret, label, seed) = P_hash(secret, label + seed).
  * RFC 9930 section 6 (TLS 1.2 derivations):
      S-IMCK[0] = session_key_seed (TLS exporter output, 40 octets)
      IMSK[j]   = first 32 octets of PRF(EMSK[j], "TEAPbindkey@ietf.org", 0x00 | 0x00 | 0x40)
                  or MSK[j] truncated / zero-padded to 32, or 32 zero octets
      IMCK[j]   = first 60 octets of PRF(S-IMCK[j-1], "Inner Methods Compound Keys", IMSK[j])
      S-IMCK[j] = IMCK[j][0:40], CMK[j] = IMCK[j][40:60]
      two chains (MSK-based and EMSK-based); a round without EMSK leaves the EMSK chain unchanged
      a round with neither MSK nor EMSK (no inner method, Basic-Password-Auth) takes its CMK
      from the zero-IMSK IMCK but leaves S-IMCK as it was, so with no key-generating method
      "the MSK and EMSK will be generated directly from the session_key_seed" (RFC 9930,
      "EAP Master Session Key Generation"); hostap 2.10's peer and server do exactly this
      Compound-MAC = first 20 octets of HMAC(CMK[n], CB TLV with both MACs zeroed | 0x37
                                              | server outer TLVs | peer outer TLVs)
      MSK  = first 64 octets of PRF(S-IMCK[n], "Session Key Generating Function", "")
      EMSK = first 64 octets of PRF(S-IMCK[n], "Extended Session Key Generating Function", "")

Inputs are derived from fixed strings with SHA-256 so nothing here is random.
Output format: "case NAME" starts a case; then "key = hex" lines ("none" for absent values).

Regenerate with:
  python3 services/teap/tests/vectors/teap_keys.py > services/teap/tests/vectors/teap_keys.txt
"""

import hashlib
import hmac

HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384}


def p_hash(hash_name, secret, seed, length):
    digest = HASHES[hash_name]
    out = b""
    a = seed
    while len(out) < length:
        a = hmac.new(secret, a, digest).digest()
        out += hmac.new(secret, a + seed, digest).digest()
    return out[:length]


def prf(hash_name, secret, label, seed, length):
    return p_hash(hash_name, secret, label + seed, length)


def filler(name, length):
    """Deterministic octets: SHA-256 counter stream over a name."""
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(name.encode() + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def imsk_from(msk, emsk, hash_name):
    """(IMSK for the MSK chain, IMSK for the EMSK chain or None)."""
    if msk is None:
        msk_imsk = bytes(32)
    else:
        msk_imsk = (msk + bytes(32))[:32]
    emsk_imsk = None
    if emsk is not None:
        emsk_imsk = prf(hash_name, emsk, b"TEAPbindkey@ietf.org", b"\x00\x00\x40", 32)
    return msk_imsk, emsk_imsk


def imck(hash_name, s_imck_prev, imsk):
    block = prf(hash_name, s_imck_prev, b"Inner Methods Compound Keys", imsk, 60)
    return block[:40], block[40:60]


def crypto_binding_tlv(flags, sub_type, nonce):
    """Crypto-Binding TLV (type 12, mandatory) with both Compound-MAC fields zeroed."""
    value = bytes([0, 1, 1, (flags << 4) | sub_type]) + nonce + bytes(20) + bytes(20)
    assert len(value) == 76
    return (0x8000 | 12).to_bytes(2, "big") + len(value).to_bytes(2, "big") + value


def compound_mac(hash_name, cmk, cb_tlv, server_outer, peer_outer):
    buffer = cb_tlv + b"\x37" + server_outer + peer_outer
    return hmac.new(cmk, buffer, HASHES[hash_name]).digest()[:20]


def hexor(value):
    return "none" if value is None else value.hex()


def emit_case(name, hash_name, rounds, server_outer, peer_outer):
    print(f"case {name}")
    print(f"hash = {hash_name}")
    seed = filler(name + " session_key_seed", 40)
    print(f"session_key_seed = {seed.hex()}")
    print(f"server_outer_tlvs = {server_outer.hex()}")
    print(f"peer_outer_tlvs = {peer_outer.hex()}")
    print(f"rounds = {len(rounds)}")
    s_imck_msk = seed
    s_imck_emsk = seed
    cmk_emsk = None
    for j, (msk, emsk) in enumerate(rounds, start=1):
        msk_imsk, emsk_imsk = imsk_from(msk, emsk, hash_name)
        if msk is None and emsk is None:
            _, cmk_msk = imck(hash_name, s_imck_msk, msk_imsk)
        else:
            s_imck_msk, cmk_msk = imck(hash_name, s_imck_msk, msk_imsk)
        if emsk_imsk is not None:
            s_imck_emsk, cmk_emsk = imck(hash_name, s_imck_emsk, emsk_imsk)
        flags = 3 if emsk is not None else 2
        nonce = filler(f"{name} nonce {j}", 32)
        nonce = nonce[:31] + bytes([nonce[31] & 0xFE])
        cb = crypto_binding_tlv(flags, 0, nonce)
        msk_mac = compound_mac(hash_name, cmk_msk, cb, server_outer, peer_outer)
        # A sender includes the EMSK Compound-MAC only in rounds whose method gave an EMSK.
        emsk_mac = None
        if emsk is not None:
            emsk_mac = compound_mac(hash_name, cmk_emsk, cb, server_outer, peer_outer)
        # A peer that keeps sending an EMSK MAC after an EMSK-less round (flags 3) uses the
        # carried-forward EMSK-chain CMK; a receiver can still check that.
        carried = None
        if emsk is None and cmk_emsk is not None:
            carried_cb = crypto_binding_tlv(3, 0, nonce)
            carried = (carried_cb,
                       compound_mac(hash_name, cmk_emsk, carried_cb, server_outer, peer_outer),
                       compound_mac(hash_name, cmk_msk, carried_cb, server_outer, peer_outer))
        p = f"round{j}."
        print(f"{p}msk = {hexor(msk)}")
        print(f"{p}emsk = {hexor(emsk)}")
        print(f"{p}imsk_msk = {msk_imsk.hex()}")
        print(f"{p}imsk_emsk = {hexor(emsk_imsk)}")
        print(f"{p}s_imck_msk = {s_imck_msk.hex()}")
        print(f"{p}cmk_msk = {cmk_msk.hex()}")
        print(f"{p}s_imck_emsk = {s_imck_emsk.hex()}")
        print(f"{p}cmk_emsk = {hexor(cmk_emsk)}")
        print(f"{p}binding_tlv = {cb.hex()}")
        print(f"{p}msk_compound_mac = {msk_mac.hex()}")
        print(f"{p}emsk_compound_mac = {hexor(emsk_mac)}")
        if carried is not None:
            print(f"{p}carried.binding_tlv = {carried[0].hex()}")
            print(f"{p}carried.emsk_compound_mac = {carried[1].hex()}")
            print(f"{p}carried.msk_compound_mac = {carried[2].hex()}")
    for chain, s_imck in (("msk_chain", s_imck_msk), ("emsk_chain", s_imck_emsk)):
        msk = prf(hash_name, s_imck, b"Session Key Generating Function", b"", 64)
        emsk = prf(hash_name, s_imck, b"Extended Session Key Generating Function", b"", 64)
        print(f"{chain}.msk = {msk.hex()}")
        print(f"{chain}.emsk = {emsk.hex()}")
    print()


def emit_prf(name, hash_name, secret, label, seed, length):
    print(f"prf {name}")
    print(f"hash = {hash_name}")
    print(f"secret = {secret.hex()}")
    print(f"label = {label.hex()}")
    print(f"seed = {seed.hex()}")
    print(f"output = {prf(hash_name, secret, label, seed, length).hex()}")
    print()


def main():
    print("# Generated by: python3 services/teap/tests/vectors/teap_keys.py"
          " > services/teap/tests/vectors/teap_keys.txt")
    print("# Independent derivation from RFC 5246 section 5 and RFC 9930 section 6; do not edit.")
    print()
    # The TLS 1.2 PRF test vectors posted to the IETF TLS WG list (msg03416).
    emit_prf("tls-wg-sha256", "sha256", bytes.fromhex("9bbe436ba940f017b17652849a71db35"),
             b"test label", bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"), 100)
    emit_prf("tls-wg-sha384", "sha384", bytes.fromhex("b80b733d6ceefcdc71566ea48e5567df"),
             b"test label", bytes.fromhex("cd665cf6a8447dd6ff8b27555edb7465"), 148)
    emit_prf("empty-seed-long-output", "sha256", filler("prf secret", 40),
             b"Session Key Generating Function", b"", 200)

    authority_id = bytes.fromhex("0001") + (16).to_bytes(2, "big") + filler("authority id", 16)
    identity_type_outer = bytes.fromhex("0002000200 02".replace(" ", ""))
    eap_tls_msk = filler("eap-tls msk", 64)
    eap_tls_emsk = filler("eap-tls emsk", 64)

    emit_case("no-rounds", "sha256", [], authority_id, b"")
    emit_case("zero-imsk-round", "sha256", [(None, None)], authority_id, b"")
    emit_case("one-round-msk-emsk", "sha256", [(eap_tls_msk, eap_tls_emsk)],
              authority_id, identity_type_outer)
    emit_case("one-round-msk-emsk-sha384", "sha384", [(eap_tls_msk, eap_tls_emsk)],
              authority_id, identity_type_outer)
    emit_case("msk-emsk-then-short-msk", "sha256",
              [(eap_tls_msk, eap_tls_emsk), (filler("mschapv2 msk", 16), None)],
              authority_id, b"")
    emit_case("long-msk-then-password", "sha384",
              [(filler("long msk", 70), None), (None, None)], b"", identity_type_outer)
    emit_case("password-then-msk-emsk", "sha256",
              [(None, None), (eap_tls_msk, eap_tls_emsk)], authority_id, identity_type_outer)


if __name__ == "__main__":
    main()
