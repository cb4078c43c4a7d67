#!/usr/bin/env python3
"""Writes the hostile EAP-TEAP response corpus that services/teap/tests/hostile_corpus.rs feeds
into a fresh `teap_server::Conversation` right after its Start (identifier START_ID).

Each `<case>.bin` holds one or more EAP-Response packets, each preceded by its length as two
big-endian octets. The test sends them in order: every packet but the last must be answered
(an ACK for a fragment), the last one gives the outcome the test's table names for the case.
A packet that follows an ACK carries the ACK's identifier (the server adds one per request).

These cases need no tunnel. Those that do (malformed or unexpected TLVs per state, a wrong
Crypto-Binding, data where an ACK is due) are built inside the test with a real TLS client.

Run from anywhere: python3 services/teap/tests/corpus/make-corpus.py   (stdlib only)
"""

import os
import struct

START_ID = 7
EAP_RESPONSE = 2
TYPE_TEAP = 55
VERSION = 1
# RFC 9930 §4.1 flag bits in the flags/version octet.
L, M, S, O = 0x80, 0x40, 0x20, 0x10

HERE = os.path.dirname(os.path.abspath(__file__))


def eap(code, identifier, type_data=b"", typ=None, length=None):
    body = b"" if typ is None else bytes([typ]) + type_data
    if length is None:
        length = 4 + len(body)
    return bytes([code, identifier]) + struct.pack(">H", length) + body


def teap(identifier, flags, tls=b"", message_length=None, outer=None, outer_length=None):
    data = bytes([flags | VERSION])
    if message_length is not None:
        data += struct.pack(">I", message_length)
    if outer is not None or outer_length is not None:
        data += struct.pack(">I", len(outer or b"") if outer_length is None else outer_length)
    data += tls + (outer or b"")
    return eap(EAP_RESPONSE, identifier, data, TYPE_TEAP)


def tlv(tlv_type, value, mandatory=False, length=None):
    field = tlv_type | (0x8000 if mandatory else 0)
    return struct.pack(">HH", field, len(value) if length is None else length) + value


def junk(n, seed):
    # Deterministic filler: the corpus must not change between runs of this script.
    return bytes((seed + 31 * i) & 0xFF for i in range(n))


def fragments(first_id, declared, sizes, last_more=False):
    """A fragmented peer message: L on the first, M on all but the last (unless last_more)."""
    out = []
    for i, size in enumerate(sizes):
        more = last_more or i + 1 < len(sizes)
        flags = (M if more else 0) | (L if i == 0 else 0)
        out.append(
            teap(first_id + i, flags, junk(size, i), declared if i == 0 else None)
        )
    return out


# A TLS 1.2 record header announcing more than any record may hold (RFC 5246 §6.2.1: 2^14
# plaintext, 2^14 + 2048 ciphertext), then a few octets.
HUGE_RECORD = bytes([0x16, 0x03, 0x03, 0xFF, 0xFF]) + junk(16, 3)
# A handshake record whose body is not a ClientHello.
NOT_A_HELLO = bytes([0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00])
# Alert record, fatal handshake_failure, as a first message.
ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])

CASES = {
    # --- EAP header damage: not a packet the conversation can take (silently dropped) ---
    "eap-too-short": [bytes([EAP_RESPONSE, START_ID, 0])],
    "eap-length-below-header": [bytes([EAP_RESPONSE, START_ID, 0, 3])],
    "eap-length-exceeds-buffer": [eap(EAP_RESPONSE, START_ID, bytes([VERSION]), TYPE_TEAP, 60)],
    "eap-unknown-code": [eap(9, START_ID, bytes([VERSION]), TYPE_TEAP)],
    "eap-request-not-response": [eap(1, START_ID, bytes([VERSION]), TYPE_TEAP)],
    "eap-success-from-peer": [eap(3, START_ID)],
    "eap-response-without-type": [eap(EAP_RESPONSE, START_ID)],
    "eap-wrong-identifier": [teap(START_ID + 1, 0, junk(40, 1))],
    "eap-empty-nak": [eap(EAP_RESPONSE, START_ID, b"", 3)],
    # --- TEAP header damage ---
    "teap-missing-flags": [eap(EAP_RESPONSE, START_ID, b"", TYPE_TEAP)],
    "teap-version-0": [eap(EAP_RESPONSE, START_ID, bytes([0x00]) + junk(8, 2), TYPE_TEAP)],
    "teap-version-2": [eap(EAP_RESPONSE, START_ID, bytes([0x02]) + junk(8, 2), TYPE_TEAP)],
    "teap-l-flag-truncated-length": [
        eap(EAP_RESPONSE, START_ID, bytes([L | VERSION, 0, 0]), TYPE_TEAP)
    ],
    "teap-o-flag-truncated-length": [
        eap(EAP_RESPONSE, START_ID, bytes([O | VERSION, 0]), TYPE_TEAP)
    ],
    "teap-outer-length-overrun": [teap(START_ID, O, junk(10, 4), outer=b"", outer_length=1000)],
    # --- the wrong method or flags: the conversation ends at once with EAP-Failure ---
    "legacy-nak-to-teap": [eap(EAP_RESPONSE, START_ID, bytes([13]), 3)],
    "identity-inside-teap": [eap(EAP_RESPONSE, START_ID, b"device", 1)],
    "other-method-eap-tls": [eap(EAP_RESPONSE, START_ID, bytes([0x00]), 13)],
    "flags-start-from-peer": [teap(START_ID, S, junk(20, 5))],
    "flags-ack-during-handshake": [teap(START_ID, 0)],
    "malformed-outer-tlvs": [teap(START_ID, O, junk(10, 6), outer=tlv(1, b"ab", length=20))],
    # --- lengths that lie ---
    "l-flag-length-mismatch": [teap(START_ID, L, junk(10, 7), message_length=100)],
    "message-length-over-limit": [teap(START_ID, L | M, junk(1000, 8), message_length=1 << 20)],
    "first-fragment-without-l": [teap(START_ID, M, junk(1000, 9))],
    # --- fragments out of order ---
    "fragment-l-on-second": [
        teap(START_ID, L | M, junk(1000, 10), message_length=2000),
        teap(START_ID + 1, L | M, junk(500, 11), message_length=2000),
    ],
    "fragment-overruns-declared": fragments(START_ID, 1500, [1000, 1000]),
    "fragment-short-of-declared": fragments(START_ID, 3000, [1000, 1000]),
    "fragment-empty-with-m": [
        teap(START_ID, L | M, junk(1000, 12), message_length=3000),
        teap(START_ID + 1, M),
    ],
    "fragment-o-flag-on-second": [
        teap(START_ID, L | M, junk(1000, 13), message_length=2000),
        teap(START_ID + 1, O, junk(1000, 14), outer=tlv(19, b"hint")),
    ],
    # --- floods: past the size bound, and past the exchange bound ---
    # 64 KiB declared (the default max_message_len), 4000-octet fragments: the 17th carries
    # the total past the declared length.
    "fragment-flood-size-bound": fragments(START_ID, 65536, [4000] * 17, last_more=True),
    # Small fragments that stay inside the size bound: the 51st response passes the default
    # max_exchanges of 50.
    "fragment-flood-exchange-bound": fragments(START_ID, 65536, [1000] * 51, last_more=True),
    # --- oversized: the largest EAP packet, all TLS garbage ---
    "oversized-eap-packet": [teap(START_ID, 0, junk(65535 - 6, 15))],
    # --- TLS damage in the first message ---
    "tls-garbage": [teap(START_ID, 0, b"this is not TLS at all")],
    "tls-record-too-large": [teap(START_ID, 0, HUGE_RECORD)],
    "tls-not-a-client-hello": [teap(START_ID, 0, NOT_A_HELLO)],
    "tls-alert-first": [teap(START_ID, 0, ALERT)],
}


def main():
    for old in os.listdir(HERE):
        if old.endswith(".bin"):
            os.remove(os.path.join(HERE, old))
    for name, packets in sorted(CASES.items()):
        with open(os.path.join(HERE, name + ".bin"), "wb") as f:
            for p in packets:
                assert len(p) <= 0xFFFF, name
                f.write(struct.pack(">H", len(p)) + p)
    print(f"wrote {len(CASES)} cases to {HERE}")


if __name__ == "__main__":
    main()
