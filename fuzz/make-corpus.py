#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/: a few small valid and malformed inputs per
fuzz target (standard library only). Run from anywhere: python3 fuzz/make-corpus.py

The secrets match the fuzz targets' constants, so signed seeds verify there.
"""

import hashlib
import hmac
import pathlib
import shutil
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"

RADIUS_PACKET_SECRET = b"fuzz-shared-secret"  # fuzz_targets/radius_packet.rs SECRET
SERVER_SECRET_V4 = b"fuzz-secret-v4"  # fuzz_targets/radius_server.rs SECRET_V4
SERVER_SECRET_V6 = b"fuzz-secret-v6"  # fuzz_targets/radius_server.rs SECRET_V6

# RADIUS (RFC 2865, RFC 3579, RFC 2548)
ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE, STATUS_SERVER = 1, 2, 3, 11, 12
USER_NAME, FRAMED_MTU, STATE, VENDOR_SPECIFIC = 1, 12, 24, 26
CALLING_STATION_ID, NAS_IDENTIFIER, PROXY_STATE = 31, 32, 33
EAP_MESSAGE, MESSAGE_AUTHENTICATOR = 79, 80
VENDOR_MICROSOFT, MS_MPPE_SEND_KEY, MS_MPPE_RECV_KEY = 311, 16, 17


def attribute(attribute_type, value):
    assert len(value) <= 253
    return bytes([attribute_type, len(value) + 2]) + value


def radius(code, identifier, authenticator, attributes):
    body = b"".join(attributes)
    return bytes([code, identifier]) + struct.pack(">H", 20 + len(body)) + authenticator + body


def signed_request(code, identifier, authenticator, attributes, secret):
    """Message-Authenticator first, HMAC-MD5 over the packet with its value zeroed (RFC 3579)."""
    unsigned = radius(code, identifier, authenticator,
                      [attribute(MESSAGE_AUTHENTICATOR, bytes(16))] + attributes)
    mac = hmac.new(secret, unsigned, hashlib.md5).digest()
    return unsigned[:22] + mac + unsigned[38:]


def eap_attributes(eap):
    return [attribute(EAP_MESSAGE, eap[i:i + 253]) for i in range(0, len(eap), 253)] or [
        attribute(EAP_MESSAGE, b"")]


def mppe_key(key, salt, secret, request_authenticator):
    """RFC 2548 §2.4.2 hidden MS-MPPE key (Salt, then the MD5-chain-hidden String)."""
    plain = bytes([len(key)]) + key
    plain += bytes(-len(plain) % 16)
    previous = request_authenticator + salt
    hidden = b""
    for i in range(0, len(plain), 16):
        b = hashlib.md5(secret + previous).digest()
        block = bytes(p ^ x for p, x in zip(plain[i:i + 16], b))
        hidden += block
        previous = block
    return salt + hidden


def vendor_specific(vendor_id, vendor_type, value):
    return attribute(VENDOR_SPECIFIC,
                     struct.pack(">I", vendor_id) + bytes([vendor_type, len(value) + 2]) + value)


# EAP (RFC 3748) and TEAP framing (RFC 9930 §4.1)
EAP_REQUEST, EAP_RESPONSE, EAP_SUCCESS, EAP_FAILURE = 1, 2, 3, 4
IDENTITY, NAK, TEAP = 1, 3, 55
L, M, S, O, VERSION = 0x80, 0x40, 0x20, 0x10, 1


def eap(code, identifier, data=b""):
    return bytes([code, identifier]) + struct.pack(">H", 4 + len(data)) + data


def teap_data(flags, tls=b"", message_length=None, outer=None):
    out = bytes([flags])
    if message_length is not None:
        out += struct.pack(">I", message_length)
    if outer is not None:
        out += struct.pack(">I", len(outer))
    return out + tls + (outer or b"")


# TEAP TLVs (RFC 9930 §4.2)
MANDATORY = 0x8000


def tlv(tlv_type, value, mandatory=False):
    return struct.pack(">HH", tlv_type | (MANDATORY if mandatory else 0), len(value)) + value


AUTHORITY_ID = tlv(1, b"\x01\x02ragw-authority")
IDENTITY_TYPE = tlv(2, struct.pack(">H", 2), True)
RESULT_SUCCESS = tlv(3, struct.pack(">H", 1), True)
ERROR_2002 = tlv(5, struct.pack(">I", 2002), True)
PKCS10 = tlv(16, bytes.fromhex("3003020100"))
CRYPTO_BINDING = tlv(12, bytes([0, 1, 1, 0x30]) + bytes(range(32)) + bytes(20) + bytes(20), True)
# A TLS 1.2 ClientHello record header and the start of a handshake: enough to look like TLS.
TLS_FRAGMENT = bytes.fromhex("160303002e0100002a0303") + bytes(32) + b"\x00\x00\x02\xc0\x2f\x01\x00"


def radius_packet_corpus():
    authenticator = bytes(range(16))
    identity = eap(EAP_RESPONSE, 0, bytes([IDENTITY]) + b"anonymous@example.net")
    yield "access-request-identity", signed_request(
        ACCESS_REQUEST, 7, authenticator,
        [attribute(USER_NAME, b"anonymous@example.net"), attribute(FRAMED_MTU, b"\x00\x00\x05\x78"),
         attribute(CALLING_STATION_ID, b"02-00-00-00-00-01"), attribute(NAS_IDENTIFIER, b"ap-1")]
        + eap_attributes(identity), RADIUS_PACKET_SECRET)
    teap_start_reply = eap(EAP_RESPONSE, 1, bytes([TEAP]) + teap_data(O | VERSION, TLS_FRAGMENT * 6,
                                                                       outer=IDENTITY_TYPE))
    yield "access-request-state-proxy-state", signed_request(
        ACCESS_REQUEST, 8, authenticator,
        [attribute(STATE, b"ragw-state-1"), attribute(PROXY_STATE, b"proxy-a"),
         attribute(PROXY_STATE, b"proxy-b")] + eap_attributes(teap_start_reply),
        RADIUS_PACKET_SECRET)
    yield "status-server", signed_request(STATUS_SERVER, 9, authenticator, [], RADIUS_PACKET_SECRET)
    msk = bytes(range(64))
    yield "access-accept-mppe", radius(ACCESS_ACCEPT, 7, bytes(16), [
        vendor_specific(VENDOR_MICROSOFT, MS_MPPE_RECV_KEY,
                        mppe_key(msk[:32], b"\x80\x01", RADIUS_PACKET_SECRET, bytes(16))),
        vendor_specific(VENDOR_MICROSOFT, MS_MPPE_SEND_KEY,
                        mppe_key(msk[32:], b"\x80\x02", RADIUS_PACKET_SECRET, bytes(16))),
        attribute(EAP_MESSAGE, eap(EAP_SUCCESS, 3))])
    yield "access-challenge", radius(ACCESS_CHALLENGE, 1, bytes(16), [attribute(STATE, b"s")])
    yield "bad-message-authenticator", radius(ACCESS_REQUEST, 1, authenticator,
                                              [attribute(MESSAGE_AUTHENTICATOR, bytes(16))])
    yield "attribute-length-1", radius(ACCESS_REQUEST, 1, authenticator, [b"\x01\x01"])
    yield "attribute-overrun", radius(ACCESS_REQUEST, 1, authenticator, [b"\x01\x10abc"])
    yield "length-past-datagram", radius(ACCESS_REQUEST, 1, authenticator, [])[:2] + b"\x00\x40" + authenticator
    yield "unknown-code", radius(99, 1, authenticator, [])
    yield "truncated-header", b"\x01\x02\x00"
    yield "padded", radius(ACCESS_REJECT, 5, authenticator, [attribute(18, b"no")]) + b"\x00" * 8


def eap_packet_corpus():
    yield "response-identity", eap(EAP_RESPONSE, 0, bytes([IDENTITY]) + b"host/device-1")
    yield "request-teap-start", eap(EAP_REQUEST, 1, bytes([TEAP]) + teap_data(S | O | VERSION, outer=AUTHORITY_ID))
    yield "response-teap-first-fragment", eap(
        EAP_RESPONSE, 2, bytes([TEAP]) + teap_data(L | M | O | VERSION, TLS_FRAGMENT, 400, IDENTITY_TYPE))
    yield "request-teap-ack", eap(EAP_REQUEST, 3, bytes([TEAP, VERSION]))
    yield "response-teap-last-fragment", eap(EAP_RESPONSE, 4, bytes([TEAP]) + teap_data(VERSION, TLS_FRAGMENT))
    yield "response-nak", eap(EAP_RESPONSE, 1, bytes([NAK, TEAP, 13]))
    yield "success", eap(EAP_SUCCESS, 5)
    yield "failure", eap(EAP_FAILURE, 5)
    yield "other-method", eap(EAP_REQUEST, 1, bytes([13, 0x20]))
    yield "teap-version-2", eap(EAP_REQUEST, 1, bytes([TEAP, S | 2]))
    yield "teap-outer-length-overrun", eap(EAP_RESPONSE, 1, bytes([TEAP, O | VERSION]) + struct.pack(">I", 99) + b"abc")
    yield "teap-l-without-length", eap(EAP_RESPONSE, 1, bytes([TEAP, L | VERSION, 0, 0]))
    yield "success-with-data", eap(EAP_SUCCESS, 1, b"x")
    yield "length-below-header", b"\x01\x01\x00\x02"
    # TeapMessage::parse is fed the same input: type data starting at the flags octet.
    yield "type-data-start", teap_data(S | O | VERSION, outer=AUTHORITY_ID)
    yield "type-data-fragment", teap_data(L | M | VERSION, TLS_FRAGMENT, 1000)


def teap_tlvs_corpus():
    yield "result-success", RESULT_SUCCESS
    yield "intermediate-result-crypto-binding", (
        tlv(10, struct.pack(">H", 1), True) + CRYPTO_BINDING + RESULT_SUCCESS)
    yield "request-action-csr-attributes", (
        tlv(8, bytes([2, 1]) + tlv(16, b""), True)
        + tlv(18, bytes.fromhex("300d06092a864886f70d010901")))
    yield "basic-password-auth", (
        tlv(13, b"Password:", True)
        + tlv(14, bytes([4]) + b"user" + bytes([6]) + b"secret", True))
    yield "pkcs10-identity-hint", PKCS10 + tlv(19, b"device-1") + IDENTITY_TYPE
    yield "nak-with-nested", tlv(4, struct.pack(">IH", 0, 99) + tlv(99, b"x", True), True)
    yield "error-result-failure", ERROR_2002 + tlv(3, struct.pack(">H", 2), True)
    yield "vendor-specific-nested", tlv(7, struct.pack(">I", 311) + tlv(1, b"v"), True)
    yield "trusted-server-root", tlv(17, struct.pack(">H", 1) + tlv(15, bytes.fromhex("3000")))
    yield "eap-payload-pac-channel-binding", (
        tlv(9, eap(EAP_RESPONSE, 1, bytes([IDENTITY]) + b"inner"), True)
        + tlv(11, b"\x00\x01\x00\x00") + tlv(6, b"cb", True))
    yield "unknown-mandatory-and-optional", tlv(99, b"abc", True) + tlv(100, b"") + AUTHORITY_ID
    yield "crypto-binding-short", tlv(12, bytes(10), True)
    yield "value-overrun", struct.pack(">HH", 3 | MANDATORY, 40) + b"\x00\x01"
    yield "truncated-header", b"\x80\x03\x00"
    yield "password-userlen-overrun", tlv(14, bytes([200]) + b"user", True)


def server_record(control, datagram):
    """fuzz_targets/radius_server.rs input: control octet, 2-octet length, datagram."""
    return bytes([control]) + struct.pack(">H", len(datagram)) + datagram


SIGN = 1  # control bit 0: the target signs the datagram with the source's secret


def source(n):  # 0, 1: IPv4 client ports 1812 and 40000; 2: IPv6 client; 3: unknown source
    return n << 1


def wait(seconds):
    return seconds << 3


def radius_server_corpus():
    authenticator = bytes(range(16, 32))
    identity = eap(EAP_RESPONSE, 0, bytes([IDENTITY]) + b"device-1")
    request = radius(ACCESS_REQUEST, 1, authenticator,
                     [attribute(USER_NAME, b"device-1"), attribute(PROXY_STATE, b"p1")]
                     + eap_attributes(identity))
    presigned = signed_request(ACCESS_REQUEST, 2, authenticator,
                               [attribute(NAS_IDENTIFIER, b"ap-1")] + eap_attributes(identity),
                               SERVER_SECRET_V4)
    status = radius(STATUS_SERVER, 3, authenticator, [])
    yield "request-then-retransmission", (
        server_record(SIGN | source(0), request) + server_record(source(0), b""))
    yield "presigned-v4-then-v6-status", (
        server_record(source(1), presigned)
        + server_record(SIGN | source(2), status))
    yield "expiry-after-wait", (
        server_record(SIGN | source(0), request) + server_record(SIGN | source(0) | wait(31), request))
    yield "unknown-source", server_record(SIGN | source(3), request)
    yield "unsigned-and-malformed", (
        server_record(source(0), request) + server_record(SIGN | source(0), b"\x01\x01\x00\x14")
        + server_record(SIGN | source(2), radius(ACCESS_ACCEPT, 1, authenticator, [])))
    yield "eviction", b"".join(
        server_record(SIGN | source(i % 3),
                      radius(ACCESS_REQUEST, i, authenticator, [attribute(USER_NAME, b"u")]))
        for i in range(6))


def conversation_record(control, data=b""):
    """fuzz_targets/teap_conversation.rs input: control octet, 2-octet length, bytes."""
    return bytes([control]) + struct.pack(">H", len(data)) + data


MODE_RAW, MODE_TEAP, MODE_GENUINE_TLS, MODE_SEALED_TLVS, PATCH_ID = 0, 1, 2, 3, 4
# Answers (control bits 3-5) and the server's fragment size (bits 6-7, first record).
NO_PROVISIONING, OPTIONAL_CSR, REQUIRED_CSR, PASSWORD = 0 << 3, 1 << 3, 2 << 3, 3 << 3
REJECT, ISSUED = 4 << 3, 5 << 3
BIG_FRAGMENTS, SMALL_FRAGMENTS = 3 << 6, 1 << 6
ACK = bytes([0x01])  # TEAP flags: version 1, no data


def teap_conversation_corpus():
    hello = conversation_record(BIG_FRAGMENTS | MODE_GENUINE_TLS)
    # ClientHello, then the client's second flight: the tunnel comes up and the answer to
    # TunnelUp picks the phase-2 path.
    tunnel = lambda answer: hello + conversation_record(MODE_GENUINE_TLS | answer)
    password = tlv(14, b"\x08device-1\x02pw", mandatory=True)
    yield "tunnel-then-binding-only", tunnel(NO_PROVISIONING) + conversation_record(
        MODE_SEALED_TLVS, tlv(3, b"\x00\x01", mandatory=True))
    yield "password-then-csr", tunnel(PASSWORD) + conversation_record(
        MODE_SEALED_TLVS | REQUIRED_CSR, password) + conversation_record(
        MODE_SEALED_TLVS | ISSUED, tlv(16, b"\x30\x00"))
    yield "optional-csr-declined", tunnel(OPTIONAL_CSR) + conversation_record(
        MODE_SEALED_TLVS, tlv(3, b"\x00\x01", mandatory=True))
    yield "reject-at-tunnel-up", tunnel(REJECT) + conversation_record(
        MODE_SEALED_TLVS, tlv(3, b"\x00\x02", mandatory=True))
    # The server's flight in 64-octet fragments, ACKed one by one.
    yield "fragmented-flight", conversation_record(SMALL_FRAGMENTS | MODE_GENUINE_TLS) + b"".join(
        conversation_record(MODE_TEAP, ACK) for _ in range(40))
    yield "raw-garbage", conversation_record(MODE_RAW | PATCH_ID, eap(2, 0, bytes([55, 0x01]) + b"junk"))
    yield "fragment-flood", conversation_record(MODE_TEAP, teap_data(0xC1, b"x" * 60, 65536)) + b"".join(
        conversation_record(MODE_TEAP, teap_data(0x41, b"x" * 60)) for _ in range(60))


def main():
    targets = {
        "radius_packet": radius_packet_corpus,
        "eap_packet": eap_packet_corpus,
        "teap_tlvs": teap_tlvs_corpus,
        "radius_server": radius_server_corpus,
        "teap_conversation": teap_conversation_corpus,
    }
    for target, seeds in targets.items():
        directory = CORPUS / target
        # Regression inputs (crash-*, see README.md) survive regeneration; seeds are rewritten.
        if directory.exists():
            for path in directory.glob("seed-*"):
                path.unlink()
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds():
            (directory / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
