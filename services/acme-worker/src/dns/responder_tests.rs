use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use super::*;
use crate::dns::tsig::{TsigAlgorithm, TsigKey};

const ZONE: &str = "devices.ragw.test";
const NOW: u64 = 1_800_000_000;

fn key() -> TsigKey {
    TsigKey::new(
        "ragw-dns-update",
        TsigAlgorithm::HmacSha256,
        b"0123456789abcdef0123456789abcdef".to_vec(),
    )
    .unwrap()
}

fn responder() -> Responder {
    Responder::new(&[ZoneConfig::new(ZONE)], key(), 60, true, DnsMetrics::new()).unwrap()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn query(qname: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    m
}

/// The single reply to `request`, parsed.
fn ask(r: &Responder, request: &[u8], transport: Transport) -> Message {
    let mut replies = r.handle(request, transport, NOW);
    assert_eq!(replies.len(), 1, "expected one reply");
    Message::from_vec(&replies.remove(0)).unwrap()
}

fn ask_udp(r: &Responder, m: &Message) -> Message {
    ask(r, &m.to_vec().unwrap(), Transport::Udp)
}

fn txts(m: &Message) -> Vec<String> {
    let mut out: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(txt_value(t)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn update(records: Vec<Record>, prerequisites: Vec<Record>, zone: &str) -> Message {
    let mut m = Message::query();
    m.metadata.op_code = OpCode::Update;
    m.metadata.recursion_desired = false;
    let mut z = Query::query(name(zone), RecordType::SOA);
    z.set_query_class(DNSClass::IN);
    m.add_query(z);
    for p in prerequisites {
        m.add_answer(p);
    }
    for r in records {
        m.add_authority(r);
    }
    m
}

fn add_rr(owner: &str, value: &str) -> Record {
    Record::from_rdata(
        name(owner),
        60,
        RData::TXT(TXT::new(vec![value.to_owned()])),
    )
}

fn delete_rr(owner: &str, value: &str) -> Record {
    let mut r = Record::from_rdata(name(owner), 0, RData::TXT(TXT::new(vec![value.to_owned()])));
    r.dns_class = DNSClass::NONE;
    r
}

fn signer_for(k: &TsigKey) -> TSigner {
    k.signer().unwrap()
}

/// Signs `m` at `time`, returns (bytes, request MAC).
fn sign(mut m: Message, signer: &TSigner, time: u64) -> (Vec<u8>, Vec<u8>) {
    m.finalize(signer, time).unwrap();
    let mac = m.signature().unwrap().data.mac.clone();
    (m.to_vec().unwrap(), mac)
}

const CHALLENGE: &str = "_acme-challenge.k7q2m9x4.devices.ragw.test.";

#[test]
fn apex_soa_and_ns() {
    let r = responder();
    let resp = ask_udp(&r, &query("devices.ragw.test.", RecordType::SOA));
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert!(resp.authoritative && resp.message_type == MessageType::Response);
    assert!(resp.recursion_desired && !resp.recursion_available);
    let RData::SOA(soa) = &resp.answers[0].data else {
        panic!("not a SOA: {resp:?}");
    };
    assert_eq!(soa.mname, name("ns.devices.ragw.test."));
    assert_eq!(soa.rname, name("hostmaster.devices.ragw.test."));
    assert_eq!(soa.serial, r.serial());

    let resp = ask_udp(&r, &query("DEVICES.ragw.test.", RecordType::NS));
    assert_eq!(resp.answers.len(), 1);
    assert!(
        matches!(&resp.answers[0].data, RData::NS(ns) if ns.0 == name("ns.devices.ragw.test."))
    );

    let resp = ask_udp(&r, &query("devices.ragw.test.", RecordType::A));
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert!(resp.answers.is_empty());
    assert!(matches!(resp.authorities[0].data, RData::SOA(_)));
}

#[test]
fn txt_answers_and_negative_answers() {
    let r = responder();
    r.add_txt(CHALLENGE, "token-one").unwrap();
    r.add_txt("_acme-challenge.K7Q2M9X4.devices.ragw.test", "token-two")
        .unwrap();
    r.add_txt(CHALLENGE, "token-one").unwrap();

    let resp = ask_udp(
        &r,
        &query(
            "_ACME-challenge.k7q2m9x4.devices.ragw.test.",
            RecordType::TXT,
        ),
    );
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert!(resp.authoritative);
    assert_eq!(txts(&resp), ["token-one", "token-two"]);
    assert!(
        resp.answers[0]
            .name
            .eq_case(&name("_ACME-challenge.k7q2m9x4.devices.ragw.test."))
    );
    assert_eq!(resp.answers[0].ttl, 60);

    // Another type at an existing name: NODATA with the SOA, its TTL the negative TTL.
    let resp = ask_udp(&r, &query(CHALLENGE, RecordType::A));
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert!(resp.answers.is_empty());
    assert_eq!(resp.authorities.len(), 1);
    assert!(matches!(resp.authorities[0].data, RData::SOA(_)));
    assert_eq!(resp.authorities[0].ttl, NEGATIVE_TTL);

    // An empty non-terminal exists.
    let resp = ask_udp(&r, &query("k7q2m9x4.devices.ragw.test.", RecordType::TXT));
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert!(resp.answers.is_empty());

    // A name that does not exist.
    let resp = ask_udp(
        &r,
        &query("_acme-challenge.other.devices.ragw.test.", RecordType::TXT),
    );
    assert_eq!(resp.response_code, ResponseCode::NXDomain);
    assert!(resp.authoritative);
    assert!(matches!(resp.authorities[0].data, RData::SOA(_)));

    // Removing one value leaves the other.
    r.remove_txt(CHALLENGE, "token-one").unwrap();
    r.remove_txt(CHALLENGE, "never-added").unwrap();
    assert_eq!(r.txt_values(CHALLENGE).unwrap(), ["token-two"]);
    r.remove_txt(CHALLENGE, "token-two").unwrap();
    let resp = ask_udp(&r, &query(CHALLENGE, RecordType::TXT));
    assert_eq!(resp.response_code, ResponseCode::NXDomain);

    let resp = ask_udp(&r, &query("devices.ragw.test.", RecordType::ANY));
    assert_eq!(resp.answers.len(), 2);
}

#[test]
fn refuses_outside_its_zones() {
    let r = responder();
    for (qname, class) in [
        ("example.com.", DNSClass::IN),
        ("ragw.test.", DNSClass::IN),
        ("xdevices.ragw.test.", DNSClass::IN),
        ("version.bind.", DNSClass::CH),
        ("devices.ragw.test.", DNSClass::CH),
    ] {
        let mut m = query(qname, RecordType::TXT);
        m.queries[0].set_query_class(class);
        let resp = ask_udp(&r, &m);
        assert_eq!(resp.response_code, ResponseCode::Refused, "{qname}");
        assert!(!resp.authoritative);
        assert!(resp.answers.is_empty());
    }
    assert!(r.add_txt("_acme-challenge.example.com", "x").is_err());
}

#[test]
fn edns_is_echoed_and_unknown_versions_get_badvers() {
    let r = responder();
    let mut m = query("devices.ragw.test.", RecordType::SOA);
    m.set_edns(Edns::new());
    let resp = ask_udp(&r, &m);
    assert!(resp.edns.is_some());
    assert_eq!(resp.response_code, ResponseCode::NoError);

    let mut edns = Edns::new();
    edns.set_version(1);
    m.set_edns(edns);
    let resp = ask_udp(&r, &m);
    // BADVERS and BADSIG share the code 16; hickory decodes it as BADSIG.
    assert_eq!(u16::from(resp.response_code), 16);
    assert!(resp.edns.is_some());
}

#[test]
fn large_answers_are_truncated_over_udp_only() {
    let r = responder();
    for i in 0..20 {
        r.add_txt(CHALLENGE, &format!("{i:02}-{}", "v".repeat(200)))
            .unwrap();
    }
    let m = query(CHALLENGE, RecordType::TXT);
    let resp = ask_udp(&r, &m);
    assert!(resp.truncation);
    assert!(resp.answers.is_empty());
    let resp = ask(&r, &m.to_vec().unwrap(), Transport::Tcp);
    assert!(!resp.truncation);
    assert_eq!(resp.answers.len(), 20);
}

#[test]
fn signed_update_adds_and_deletes_single_values() {
    let r = responder();
    let signer = signer_for(&key());
    let m = update(
        vec![add_rr(CHALLENGE, "one"), add_rr(CHALLENGE, "two")],
        vec![],
        "devices.ragw.test.",
    );
    let (bytes, mac) = sign(m, &signer, NOW);
    let replies = r.handle(&bytes, Transport::Udp, NOW + 5);
    let resp = Message::from_vec(&replies[0]).unwrap();
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert_eq!(resp.op_code, OpCode::Update);
    assert_eq!(resp.queries[0].name(), &name("devices.ragw.test."));
    // The response is signed with our key, chained to the request MAC.
    let sig = resp.signature().unwrap();
    assert_eq!(sig.data.error, None);
    signer
        .verify_message_byte(&replies[0], Some(&mac), true)
        .unwrap();
    assert_eq!(r.txt_values(CHALLENGE).unwrap(), ["one", "two"]);

    let (bytes, _) = sign(
        update(vec![delete_rr(CHALLENGE, "one")], vec![], ZONE),
        &signer,
        NOW,
    );
    let resp = ask(&r, &bytes, Transport::Tcp);
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert_eq!(r.txt_values(CHALLENGE).unwrap(), ["two"]);
    assert_eq!(r.metrics.server_update_count("NOERROR"), 2);

    // "Delete the TXT RRset" (class ANY, no rdata), as `nsupdate`'s "update delete NAME TXT".
    let mut all = Record::update0(name(CHALLENGE), 0, RecordType::TXT);
    all.dns_class = DNSClass::ANY;
    let (bytes, _) = sign(update(vec![all], vec![], ZONE), &signer, NOW);
    assert_eq!(
        ask(&r, &bytes, Transport::Udp).response_code,
        ResponseCode::NoError
    );
    assert!(r.txt_values(CHALLENGE).unwrap().is_empty());
}

#[test]
fn unsigned_update_is_refused() {
    let r = responder();
    let m = update(vec![add_rr(CHALLENGE, "x")], vec![], ZONE);
    let resp = ask_udp(&r, &m);
    assert_eq!(resp.response_code, ResponseCode::Refused);
    assert!(resp.signature().is_none());
    assert!(r.txt_values(CHALLENGE).unwrap().is_empty());
    assert_eq!(r.metrics.server_update_count("REFUSED"), 1);
}

#[test]
fn wrong_secret_gets_badsig_unsigned() {
    let r = responder();
    let wrong = TsigKey::new(
        "ragw-dns-update",
        TsigAlgorithm::HmacSha256,
        b"not the right secret at all.....".to_vec(),
    )
    .unwrap();
    let (bytes, _) = sign(
        update(vec![add_rr(CHALLENGE, "x")], vec![], ZONE),
        &signer_for(&wrong),
        NOW,
    );
    let resp = ask(&r, &bytes, Transport::Udp);
    assert_eq!(resp.response_code, ResponseCode::NotAuth);
    let sig = resp.signature().unwrap();
    assert_eq!(sig.data.error, Some(TsigError::BadSig));
    assert!(sig.data.mac.is_empty());
    assert!(r.txt_values(CHALLENGE).unwrap().is_empty());
    assert_eq!(r.metrics.server_update_count("NOTAUTH"), 1);
}

#[test]
fn unknown_key_or_algorithm_gets_badkey() {
    let r = responder();
    let other_name = TsigKey::new(
        "someone-else",
        TsigAlgorithm::HmacSha256,
        key().secret().to_vec(),
    )
    .unwrap();
    let other_alg = TsigKey::new(
        "ragw-dns-update",
        TsigAlgorithm::HmacSha512,
        key().secret().to_vec(),
    )
    .unwrap();
    for k in [other_name, other_alg] {
        let (bytes, _) = sign(
            update(vec![add_rr(CHALLENGE, "x")], vec![], ZONE),
            &signer_for(&k),
            NOW,
        );
        let resp = ask(&r, &bytes, Transport::Udp);
        assert_eq!(resp.response_code, ResponseCode::NotAuth);
        let sig = resp.signature().unwrap();
        assert_eq!(sig.data.error, Some(TsigError::BadKey));
        assert_eq!(sig.name, name(&format!("{}.", k.name())));
    }
}

#[test]
fn stale_signature_gets_badtime_signed_with_server_time() {
    let r = responder();
    let signer = signer_for(&key());
    let signed_at = NOW - 301;
    let (bytes, mac) = sign(
        update(vec![add_rr(CHALLENGE, "x")], vec![], ZONE),
        &signer,
        signed_at,
    );
    let replies = r.handle(&bytes, Transport::Udp, NOW);
    let resp = Message::from_vec(&replies[0]).unwrap();
    assert_eq!(resp.response_code, ResponseCode::NotAuth);
    let sig = resp.signature().unwrap();
    assert_eq!(sig.data.error, Some(TsigError::BadTime));
    assert_eq!(sig.data.time, signed_at);
    assert_eq!(sig.data.other, NOW.to_be_bytes()[2..].to_vec());
    // Signed, so the client can trust the reported skew.
    signer
        .verify_message_byte(&replies[0], Some(&mac), true)
        .unwrap();
    assert!(r.txt_values(CHALLENGE).unwrap().is_empty());

    // A future timestamp likewise; within the fudge is fine.
    let (bytes, _) = sign(
        update(vec![add_rr(CHALLENGE, "x")], vec![], ZONE),
        &signer,
        NOW + 400,
    );
    assert_eq!(
        ask(&r, &bytes, Transport::Udp).response_code,
        ResponseCode::NotAuth
    );
    let (bytes, _) = sign(
        update(vec![add_rr(CHALLENGE, "x")], vec![], ZONE),
        &signer,
        NOW - 299,
    );
    assert_eq!(
        ask(&r, &bytes, Transport::Udp).response_code,
        ResponseCode::NoError
    );
}

#[test]
fn tampered_update_gets_badsig() {
    let r = responder();
    let (mut bytes, _) = sign(
        update(vec![add_rr(CHALLENGE, "abcd")], vec![], ZONE),
        &signer_for(&key()),
        NOW,
    );
    let pos = bytes.windows(4).position(|w| w == b"abcd").unwrap();
    bytes[pos] = b'X';
    let resp = ask(&r, &bytes, Transport::Udp);
    assert_eq!(resp.response_code, ResponseCode::NotAuth);
    assert_eq!(
        resp.signature().unwrap().data.error,
        Some(TsigError::BadSig)
    );
    assert!(r.txt_values(CHALLENGE).unwrap().is_empty());
}

#[test]
fn update_policy_and_rfc2136_checks() {
    let r = responder();
    let signer = signer_for(&key());
    let rcode = |m: Message| {
        let (bytes, _) = sign(m, &signer, NOW);
        ask(&r, &bytes, Transport::Udp).response_code
    };
    let a = Record::from_rdata(name(CHALLENGE), 60, RData::A(A::new(192, 0, 2, 1)));

    // Only TXT; an update mixing TXT with another type changes nothing.
    assert_eq!(
        rcode(update(
            vec![add_rr(CHALLENGE, "t"), a.clone()],
            vec![],
            ZONE
        )),
        ResponseCode::Refused
    );
    assert!(r.txt_values(CHALLENGE).unwrap().is_empty());
    // "Delete all RRsets of a name" would reach other types.
    let mut any = Record::update0(name(CHALLENGE), 0, RecordType::ANY);
    any.dns_class = DNSClass::ANY;
    assert_eq!(
        rcode(update(vec![any], vec![], ZONE)),
        ResponseCode::Refused
    );
    // A name outside the zone section's zone.
    assert_eq!(
        rcode(update(
            vec![add_rr("_acme-challenge.example.com.", "t")],
            vec![],
            ZONE
        )),
        ResponseCode::NotZone
    );
    // A zone this server does not have, or a name below the apex as zone.
    assert_eq!(
        rcode(update(
            vec![add_rr("_acme-challenge.example.com.", "t")],
            vec![],
            "example.com."
        )),
        ResponseCode::NotAuth
    );
    assert_eq!(
        rcode(update(
            vec![add_rr(CHALLENGE, "t")],
            vec![],
            "k7q2m9x4.devices.ragw.test."
        )),
        ResponseCode::NotAuth
    );
    // A deletion with a TTL is malformed (RFC 2136 §3.4.1.3).
    let mut bad_delete = delete_rr(CHALLENGE, "t");
    bad_delete.ttl = 5;
    assert_eq!(
        rcode(update(vec![bad_delete], vec![], ZONE)),
        ResponseCode::FormErr
    );

    // Prerequisites.
    let mut not_exists = Record::update0(name(CHALLENGE), 0, RecordType::TXT);
    not_exists.dns_class = DNSClass::NONE;
    let mut exists = Record::update0(name(CHALLENGE), 0, RecordType::TXT);
    exists.dns_class = DNSClass::ANY;
    assert_eq!(
        rcode(update(
            vec![add_rr(CHALLENGE, "v")],
            vec![exists.clone()],
            ZONE
        )),
        ResponseCode::NXRRSet
    );
    assert_eq!(
        rcode(update(
            vec![add_rr(CHALLENGE, "v")],
            vec![not_exists.clone()],
            ZONE
        )),
        ResponseCode::NoError
    );
    assert_eq!(
        rcode(update(vec![add_rr(CHALLENGE, "w")], vec![not_exists], ZONE)),
        ResponseCode::YXRRSet
    );
    let mut value = add_rr(CHALLENGE, "v");
    value.ttl = 0;
    assert_eq!(
        rcode(update(
            vec![add_rr(CHALLENGE, "w")],
            vec![exists, value],
            ZONE
        )),
        ResponseCode::NoError
    );
    assert_eq!(r.txt_values(CHALLENGE).unwrap(), ["v", "w"]);
    let mut stale = add_rr(CHALLENGE, "v");
    stale.ttl = 0;
    assert_eq!(
        rcode(update(vec![delete_rr(CHALLENGE, "v")], vec![stale], ZONE)),
        ResponseCode::NXRRSet
    );
    let mut in_use = Record::update0(name("k7q2m9x4.devices.ragw.test."), 0, RecordType::ANY);
    in_use.dns_class = DNSClass::ANY;
    assert_eq!(
        rcode(update(vec![add_rr(CHALLENGE, "z")], vec![in_use], ZONE)),
        ResponseCode::NXDomain
    );
    assert_eq!(r.txt_values(CHALLENGE).unwrap(), ["v", "w"]);

    // The apex's SOA/NS are not for update.
    let soa_delete = {
        let mut rr = Record::update0(name("devices.ragw.test."), 0, RecordType::SOA);
        rr.dns_class = DNSClass::ANY;
        rr
    };
    assert_eq!(
        rcode(update(vec![soa_delete], vec![], ZONE)),
        ResponseCode::Refused
    );
    // TXT at the apex is fine (a zone delegated for the challenge name alone).
    assert_eq!(
        rcode(update(
            vec![add_rr("devices.ragw.test.", "apex")],
            vec![],
            ZONE
        )),
        ResponseCode::NoError
    );
}

#[test]
fn record_limits_refuse_the_whole_update() {
    let r = responder();
    let signer = signer_for(&key());
    let records: Vec<Record> = (0..=crate::dns::store::MAX_VALUES_PER_NAME)
        .map(|i| add_rr(CHALLENGE, &i.to_string()))
        .collect();
    let (bytes, _) = sign(update(records, vec![], ZONE), &signer, NOW);
    assert_eq!(
        ask(&r, &bytes, Transport::Tcp).response_code,
        ResponseCode::Refused
    );
    assert!(r.txt_values(CHALLENGE).unwrap().is_empty());
}

#[test]
fn signed_queries_get_signed_answers() {
    let r = responder();
    r.add_txt(CHALLENGE, "x").unwrap();
    let signer = signer_for(&key());
    let (bytes, mac) = sign(query(CHALLENGE, RecordType::TXT), &signer, NOW);
    let replies = r.handle(&bytes, Transport::Udp, NOW);
    signer
        .verify_message_byte(&replies[0], Some(&mac), true)
        .unwrap();
    assert_eq!(txts(&Message::from_vec(&replies[0]).unwrap()), ["x"]);
}

#[test]
fn zone_transfer_is_signed_chained_and_complete() {
    let r = responder();
    for i in 0..300 {
        r.add_txt(
            &format!("_acme-challenge.d{i:03}.devices.ragw.test"),
            &format!("{i}-{}", "t".repeat(80)),
        )
        .unwrap();
    }
    let signer = signer_for(&key());
    let mut m = query(ZONE, RecordType::AXFR);
    m.metadata.recursion_desired = false;
    let mut verifier = m.finalize(&signer, NOW).unwrap().unwrap();
    let replies = r.handle(&m.to_vec().unwrap(), Transport::Tcp, NOW);
    assert!(replies.len() > 1, "expected several messages");
    let mut records = Vec::new();
    for reply in &replies {
        let resp = verifier.verify(reply).unwrap();
        assert_eq!(resp.response_code, ResponseCode::NoError);
        records.extend(resp.answers.clone());
    }
    assert_eq!(records.len(), 300 + 3);
    assert!(matches!(records.first().unwrap().data, RData::SOA(_)));
    assert!(matches!(records.last().unwrap().data, RData::SOA(_)));
    assert!(matches!(records[1].data, RData::NS(_)));

    // IXFR over TCP gets the same full transfer.
    let mut m = query(ZONE, RecordType::IXFR);
    m.finalize(&signer, NOW).unwrap();
    assert_eq!(
        r.handle(&m.to_vec().unwrap(), Transport::Tcp, NOW).len(),
        replies.len()
    );
    // IXFR over UDP: the SOA alone.
    let mut m = query(ZONE, RecordType::IXFR);
    m.finalize(&signer, NOW).unwrap();
    let resp = ask(&r, &m.to_vec().unwrap(), Transport::Udp);
    assert_eq!(resp.answers.len(), 1);
    // AXFR over UDP: FORMERR.
    let mut m = query(ZONE, RecordType::AXFR);
    m.finalize(&signer, NOW).unwrap();
    assert_eq!(
        ask(&r, &m.to_vec().unwrap(), Transport::Udp).response_code,
        ResponseCode::FormErr
    );
    // Unsigned, or of a name that is not a zone apex: refused.
    let resp = ask(
        &r,
        &query(ZONE, RecordType::AXFR).to_vec().unwrap(),
        Transport::Tcp,
    );
    assert_eq!(resp.response_code, ResponseCode::Refused);
    let resp = ask(
        &r,
        &query("example.com.", RecordType::AXFR).to_vec().unwrap(),
        Transport::Tcp,
    );
    assert_eq!(resp.response_code, ResponseCode::Refused);
    let mut m = query(CHALLENGE, RecordType::AXFR);
    m.finalize(&signer, NOW).unwrap();
    assert_eq!(
        ask(&r, &m.to_vec().unwrap(), Transport::Tcp).response_code,
        ResponseCode::NotAuth
    );
}

#[test]
fn transfers_need_to_be_enabled() {
    let r = Responder::new(
        &[ZoneConfig::new(ZONE)],
        key(),
        60,
        false,
        DnsMetrics::new(),
    )
    .unwrap();
    let mut m = query(ZONE, RecordType::AXFR);
    m.finalize(&signer_for(&key()), NOW).unwrap();
    assert_eq!(
        ask(&r, &m.to_vec().unwrap(), Transport::Tcp).response_code,
        ResponseCode::Refused
    );
}

#[test]
fn notify_messages_are_signed() {
    let r = responder();
    let signer = signer_for(&key());
    let messages = r.notify_messages(NOW);
    assert_eq!(messages.len(), 1);
    let (id, bytes) = &messages[0];
    let m = Message::from_vec(bytes).unwrap();
    assert_eq!(m.id, *id);
    assert_eq!(m.op_code, OpCode::Notify);
    assert!(m.authoritative);
    assert_eq!(m.queries[0].query_type(), RecordType::SOA);
    signer.verify_message_byte(bytes, None, true).unwrap();
    // We are a primary: incoming NOTIFYs are not for us.
    assert_eq!(
        ask(&r, bytes, Transport::Udp).response_code,
        ResponseCode::NotImp
    );
}

#[test]
fn zone_configuration_is_checked() {
    let k = key();
    let m = DnsMetrics::new();
    assert!(Responder::new(&[], k.clone(), 60, false, m.clone()).is_err());
    assert!(
        Responder::new(
            &[
                ZoneConfig::new("ragw.test"),
                ZoneConfig::new("devices.ragw.test")
            ],
            k.clone(),
            60,
            false,
            m.clone()
        )
        .is_err()
    );
    let mut zone = ZoneConfig::new("_acme-challenge.devices.example.com");
    zone.nameservers = vec![
        "ragw-dns.example.com".to_owned(),
        "ns2.example.net.".to_owned(),
    ];
    zone.hostmaster = Some("dns-admin.example.com".to_owned());
    let r = Responder::new(&[zone, ZoneConfig::new("other.test")], k, 60, false, m).unwrap();
    assert_eq!(
        r.zones(),
        ["_acme-challenge.devices.example.com", "other.test"]
    );
    let resp = ask_udp(
        &r,
        &query("_acme-challenge.devices.example.com.", RecordType::NS),
    );
    assert_eq!(resp.answers.len(), 2);
    r.add_txt("_acme-challenge.devices.example.com", "apex-value")
        .unwrap();
    let resp = ask_udp(
        &r,
        &query("_acme-challenge.devices.example.com.", RecordType::TXT),
    );
    assert_eq!(txts(&resp), ["apex-value"]);
}

// ---- malformed input ----

/// A request whose reply must be nothing or a FORMERR with the request's ID.
fn assert_dropped_or_formerr(r: &Responder, bytes: &[u8]) {
    for transport in [Transport::Udp, Transport::Tcp] {
        let replies = r.handle(bytes, transport, NOW);
        assert!(replies.len() <= 1, "{bytes:02x?}");
        if let Some(reply) = replies.first() {
            assert!(reply.len() >= 12);
            assert_eq!(reply[..2], bytes[..2]);
            assert_eq!(reply[3] & 0x0f, 1, "expected FORMERR for {bytes:02x?}");
        }
    }
}

fn header(qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut h = vec![0xab, 0xcd, 0x01, 0x00];
    for c in [qd, an, ns, ar] {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

#[test]
fn malformed_corpus() {
    let r = responder();
    for short in [&[][..], &[0x12], &[0u8; 11]] {
        assert!(r.handle(short, Transport::Udp, NOW).is_empty());
    }
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    // Counts far beyond the data.
    corpus.push(header(0xffff, 0xffff, 0xffff, 0xffff));
    corpus.push(header(1, 0, 0, 0));
    // A question cut short.
    let mut q = header(1, 0, 0, 0);
    q.extend_from_slice(b"\x07devices\x04ragw");
    corpus.push(q);
    // Compression loop: a pointer to itself, and two pointers to each other.
    let mut q = header(1, 0, 0, 0);
    q.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1]);
    corpus.push(q);
    let mut q = header(1, 0, 0, 0);
    q.extend_from_slice(&[0x01, b'a', 0xc0, 17, 0xc0, 14, 0, 16, 0, 1]);
    corpus.push(q);
    // A forward pointer, past the end.
    let mut q = header(1, 0, 0, 0);
    q.extend_from_slice(&[0xc0, 0xff, 0, 16, 0, 1]);
    corpus.push(q);
    // A label longer than 63 octets (0x40/0x80 are reserved label types).
    for first in [0x40u8, 0x80, 0x3f] {
        let mut q = header(1, 0, 0, 0);
        q.push(first);
        q.extend_from_slice(b"abc\x00\x00\x10\x00\x01");
        corpus.push(q);
    }
    // A name longer than 255 octets.
    let mut q = header(1, 0, 0, 0);
    for _ in 0..5 {
        q.push(63);
        q.extend_from_slice(&[b'a'; 63]);
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    corpus.push(q);
    // A record whose RDLENGTH runs past the end.
    let mut q = header(0, 1, 0, 0);
    q.extend_from_slice(&[0, 0, 16, 0, 1, 0, 0, 0, 60, 0xff, 0xff, 1, 2]);
    corpus.push(q);
    // Two OPT records.
    let mut q = header(1, 0, 0, 2);
    q.extend_from_slice(&[0, 0, 6, 0, 1]);
    q.extend_from_slice(&[0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(&[0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0]);
    corpus.push(q);
    // A TSIG record that is not last, and one in the answer section.
    let (signed, _) = sign(query(ZONE, RecordType::SOA), &signer_for(&key()), NOW);
    let mut not_last = signed.clone();
    not_last[11] += 1;
    not_last.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    corpus.push(not_last);
    let mut in_answers = signed.clone();
    in_answers[7] = 1;
    in_answers[11] = 0;
    corpus.push(in_answers);
    // Oversized: 64 KiB of zeros after a header claiming one question.
    let mut big = header(1, 0, 0, 0);
    big.resize(65_535, 0xff);
    corpus.push(big);

    for bytes in &corpus {
        assert_dropped_or_formerr(&r, bytes);
    }

    // Responses are never answered, whatever they contain.
    let mut response = query(ZONE, RecordType::SOA).to_vec().unwrap();
    response[2] |= 0x80;
    assert!(r.handle(&response, Transport::Udp, NOW).is_empty());
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_mutations_never_panic() {
    let r = responder();
    r.add_txt(CHALLENGE, "present").unwrap();
    let signer = signer_for(&key());
    let mut seeds: Vec<Vec<u8>> = vec![
        query(CHALLENGE, RecordType::TXT).to_vec().unwrap(),
        query(ZONE, RecordType::ANY).to_vec().unwrap(),
        {
            let mut m = query(ZONE, RecordType::SOA);
            m.set_edns(Edns::new());
            m.to_vec().unwrap()
        },
    ];
    let mut prereq = Record::update0(name(CHALLENGE), 0, RecordType::TXT);
    prereq.dns_class = DNSClass::ANY;
    seeds.push(
        sign(
            update(
                vec![add_rr(CHALLENGE, "a"), delete_rr(CHALLENGE, "present")],
                vec![prereq],
                ZONE,
            ),
            &signer,
            NOW,
        )
        .0,
    );
    seeds.push(sign(query(ZONE, RecordType::AXFR), &signer, NOW).0);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in &seeds {
        for _ in 0..4000 {
            let mut bytes = seed.clone();
            match rng.below(4) {
                0 => {
                    for _ in 0..=rng.below(4) {
                        let i = rng.below(bytes.len());
                        bytes[i] ^= 1 << rng.below(8);
                    }
                }
                1 => {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next() as u8;
                }
                2 => bytes.truncate(rng.below(bytes.len() + 1)),
                _ => {
                    let i = rng.below(bytes.len());
                    let extra = rng.below(8);
                    for _ in 0..extra {
                        bytes.insert(i, rng.next() as u8);
                    }
                }
            }
            let transport = if rng.below(2) == 0 {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            for reply in r.handle(&bytes, transport, NOW) {
                // Whatever we answer must itself be a well-formed message.
                Message::from_vec(&reply).unwrap();
            }
        }
    }
    // Pure noise too.
    for _ in 0..4000 {
        let len = rng.below(600);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        for reply in r.handle(&bytes, Transport::Udp, NOW) {
            Message::from_vec(&reply).unwrap();
        }
    }
}
