//! The sans-IO core driven with plain values: no sockets, no registrar.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::config::{
    BasicAuth, CertIdentityField, ClientCertAuth, EnrollmentTiming, Limits, SERIAL_NUMBER, Secret,
    TrustedProxy,
};
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::time::Duration;
use tonic::metadata::MetadataValue;

struct Pki {
    device_ca: Vec<u8>,
    idevid: Vec<u8>,
    foreign: Vec<u8>,
    ragw_ca: Vec<u8>,
    ragw_leaf: Vec<u8>,
}

fn ca(name: &str) -> (Vec<u8>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    (cert.der().to_vec(), Issuer::new(p, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, serial: Option<&str>) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["device.example".to_string()]).unwrap();
    if let Some(s) = serial {
        p.distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 5]), s);
    }
    p.signed_by(&key, issuer).unwrap().der().to_vec()
}

fn pki() -> Pki {
    let (device_ca, dev_issuer) = ca("Device Maker CA");
    let (_, other_issuer) = ca("Someone Else");
    let (ragw_ca, ragw_issuer) = ca("ragw issuing CA");
    Pki {
        idevid: leaf(&dev_issuer, Some("SN-0042")),
        foreign: leaf(&other_issuer, Some("SN-0042")),
        ragw_leaf: leaf(&ragw_issuer, None),
        device_ca,
        ragw_ca,
    }
}

fn config(pki: &Pki) -> EstConfig {
    let mut iot = LabelConfig::new("iot", "iot");
    iot.cacerts = vec![pki.ragw_ca.clone()];
    let mut basic = BasicAuth::new(IdentityKind::SerialNumber);
    basic.bootstrap = Some(Secret::from_plain("bootstrap-secret"));
    iot.basic = Some(basic);
    iot.client_cert = Some(ClientCertAuth {
        trust_anchors: vec![CertificateDer::from(pki.device_ca.clone())],
        identity: CertIdentityField::Subject(SERIAL_NUMBER),
        identity_kind: IdentityKind::IdevidSerial,
    });
    let mut certs_only_label = LabelConfig::new("cams", "cameras");
    certs_only_label.base64_line_length = 64;
    certs_only_label.content_transfer_encoding = false;
    certs_only_label.client_cert = iot.client_cert.clone();
    EstConfig {
        labels: vec![iot, certs_only_label],
        default_label: Some("iot".into()),
        limits: Limits {
            requests_per_second: 1.0,
            burst: 2,
            ..Limits::default()
        },
        enrollment: EnrollmentTiming {
            wait: Duration::from_secs(5),
            retry_after_seconds: 7,
            approval_retry_after_seconds: 600,
        },
        trusted_proxy: Some(TrustedProxy {
            addresses: vec!["10.0.0.0/8".parse().unwrap()],
            client_cert_header: "x-ssl-client-cert".into(),
            client_address_header: Some("x-forwarded-for".into()),
        }),
    }
}

fn request(method: Method, path: &str) -> HttpRequest {
    HttpRequest {
        method,
        path: path.into(),
        headers: HeaderMap::new(),
        body: Bytes::new(),
        peer: Peer {
            addr: "192.0.2.10".parse().unwrap(),
            tls_chain: Vec::new(),
        },
    }
}

fn with_basic(mut r: HttpRequest, user: &str, pw: &str) -> HttpRequest {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    r.headers
        .insert(AUTHORIZATION, format!("Basic {v}").parse().unwrap());
    r
}

fn with_csr(mut r: HttpRequest, body: &[u8]) -> HttpRequest {
    r.headers
        .insert(CONTENT_TYPE, "application/pkcs10".parse().unwrap());
    r.body = Bytes::copy_from_slice(body);
    r
}

fn respond(step: Step) -> HttpResponse {
    match step {
        Step::Respond(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn body(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn assert_text(r: &HttpResponse, status: StatusCode, needle: &str) {
    assert_eq!(r.status, status, "{}", body(r));
    assert_eq!(
        r.header(&CONTENT_TYPE).unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        r.header(&CONTENT_LENGTH).unwrap(),
        &r.body.len().to_string()
    );
    assert!(body(r).contains(needle), "{:?} lacks {needle:?}", body(r));
}

fn gateway() -> (Gateway, Pki) {
    let pki = pki();
    (Gateway::new(config(&pki)).unwrap(), pki)
}

#[test]
fn routing_methods_and_unsupported_operations() {
    let (gw, _) = gateway();
    let now = SystemTime::now();
    let r = respond(gw.begin(&request(Method::GET, "/index.html"), now));
    assert_text(&r, StatusCode::NOT_FOUND, "not an EST path");
    let r = respond(gw.begin(&request(Method::GET, "/.well-known/est/nope/cacerts"), now));
    assert_text(&r, StatusCode::NOT_FOUND, "unknown EST label \"nope\"");
    let r = respond(gw.begin(&request(Method::GET, "/.well-known/est/../cacerts"), now));
    assert_text(&r, StatusCode::NOT_FOUND, "unknown EST label");
    let r = respond(gw.begin(&request(Method::GET, "/.well-known/est/a/b/cacerts"), now));
    assert_text(&r, StatusCode::NOT_FOUND, "not an EST path");
    let r = respond(gw.begin(&request(Method::GET, "/.well-known/est/iot/enroll"), now));
    assert_text(
        &r,
        StatusCode::NOT_FOUND,
        "unknown EST operation \"enroll\"",
    );
    let r = respond(gw.begin(&request(Method::POST, "/.well-known/est/fullcmc"), now));
    assert_text(&r, StatusCode::NOT_IMPLEMENTED, "/fullcmc is not supported");
    let r = respond(gw.begin(&request(Method::POST, "/.well-known/est/cacerts"), now));
    assert_text(&r, StatusCode::METHOD_NOT_ALLOWED, "takes GET, not POST");
    assert_eq!(r.header(&ALLOW).unwrap(), "GET");
    let r = respond(gw.begin(
        &request(Method::GET, "/.well-known/est/iot/simpleenroll"),
        now,
    ));
    assert_eq!(r.header(&ALLOW).unwrap(), "POST");

    let mut cfg = gw.config().clone();
    cfg.default_label = None;
    let gw = Gateway::new(cfg).unwrap();
    let r = respond(gw.begin(&request(Method::GET, "/.well-known/est/cacerts"), now));
    assert_text(&r, StatusCode::NOT_FOUND, "no default label");
}

#[test]
fn cacerts_is_unauthenticated_certs_only_base64() {
    let (gw, pki) = gateway();
    let r = respond(gw.begin(
        &request(Method::GET, "/.well-known/est/cacerts"),
        SystemTime::now(),
    ));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header(&CONTENT_TYPE).unwrap(),
        "application/pkcs7-mime; smime-type=certs-only"
    );
    assert_eq!(r.header(&CTE).unwrap(), "base64");
    let text = body(&r);
    assert!(text.ends_with("\r\n"), "CRLF-wrapped by default");
    for line in text.split_terminator("\r\n") {
        assert!(line.len() <= 64 && !line.contains('\n'), "line {line:?}");
    }
    assert_eq!(text.split_terminator("\r\n").next().unwrap().len(), 64);
    let der = decode_lenient(&r.body, 1 << 20).unwrap();
    assert_eq!(
        ragw_pki::parse_certs_only(&der).unwrap(),
        vec![pki.ragw_ca.clone()]
    );

    // A label without CA certificates asks the registrar for the upstream CA's, and says when
    // none was issued yet.
    let Step::CaCerts(pending, call) = gw.begin(
        &request(Method::GET, "/.well-known/est/cams/cacerts"),
        SystemTime::now(),
    ) else {
        panic!("a label without cacerts asks the registrar")
    };
    assert_eq!(call.profile, "cameras");
    let r = gw.cacerts_from_registrar(&pending, Ok(pb::CaCertificates::default()));
    assert_text(
        &r,
        StatusCode::SERVICE_UNAVAILABLE,
        "est.labels.cams.cacerts",
    );
    assert_eq!(r.header(&RETRY_AFTER).unwrap(), "60");
    let r = gw.cacerts_from_registrar(
        &pending,
        Ok(pb::CaCertificates {
            certificates_der: vec![pki.ragw_ca.clone()],
        }),
    );
    assert_eq!(r.status, StatusCode::OK);
    let der = decode_lenient(&r.body, 1 << 20).unwrap();
    assert_eq!(ragw_pki::parse_certs_only(&der).unwrap(), vec![pki.ragw_ca]);
}

#[test]
fn csrattrs_needs_credentials_and_carries_the_assignment() {
    let (gw, _) = gateway();
    let now = SystemTime::now();
    let path = "/.well-known/est/iot/csrattrs";
    let r = respond(gw.begin(&request(Method::GET, path), now));
    assert_text(&r, StatusCode::UNAUTHORIZED, "authentication required");
    assert_eq!(
        r.header(&WWW_AUTHENTICATE).unwrap(),
        "Basic realm=\"ragw EST iot\", charset=\"UTF-8\""
    );
    // (Another name than the one that logs in next: a wrong password makes its name wait.)
    let r = respond(gw.begin(&with_basic(request(Method::GET, path), "sn-9", "nope"), now));
    assert_text(&r, StatusCode::UNAUTHORIZED, "wrong user name or password");
    assert!(!body(&r).contains("nope"));

    let Step::Assignment(pending, call) = gw.begin(
        &with_basic(request(Method::GET, path), "sn-1", "bootstrap-secret"),
        now,
    ) else {
        panic!("expected an assignment call")
    };
    assert_eq!(call.profile, "iot");
    assert_eq!(call.device.as_ref().unwrap().value, "sn-1");
    assert_eq!(
        call.device.unwrap().kind,
        pb::IdentityKind::SerialNumber as i32
    );

    let assignment = pb::Assignment {
        label: "k7q2m9x4a".into(),
        parent_domain: "devices.example.com".into(),
        names: vec!["k7q2m9x4a.devices.example.com".into()],
        allowed_keys: vec!["ecdsa-p384".into(), "rsa-3072".into()],
        profile: "iot".into(),
        ..Default::default()
    };
    let r = gw.assignment_response(&pending, Ok(assignment));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(&CONTENT_TYPE).unwrap(), "application/csrattrs");
    let der = decode_lenient(&r.body, 1 << 20).unwrap();
    let attrs = ragw_pki::csrattrs::parse_csr_attrs(&der).unwrap();
    assert_eq!(
        ragw_pki::csrattrs::requested_dns_names(&attrs).unwrap(),
        vec!["k7q2m9x4a.devices.example.com"]
    );
    // ecdsa-with-SHA384 follows from the first allowed key.
    assert!(attrs.contains(&ragw_pki::csrattrs::AttrOrOid::Oid(
        const_oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3")
    )));

    let r = gw.assignment_response(&pending, Err(Status::unavailable("connection refused")));
    assert_text(
        &r,
        StatusCode::SERVICE_UNAVAILABLE,
        "registrar is not available",
    );
    assert_eq!(r.header(&RETRY_AFTER).unwrap(), "7");
}

#[test]
fn enroll_body_and_content_type_problems() {
    let (gw, _) = gateway();
    let now = SystemTime::now();
    let path = "/.well-known/est/simpleenroll";
    let authed = || with_basic(request(Method::POST, path), "sn-1", "bootstrap-secret");
    let r = respond(gw.begin(&authed(), now));
    assert_text(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "no Content-Type");
    let mut wrong = authed();
    wrong.headers.insert(
        CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let r = respond(gw.begin(&wrong, now));
    assert_text(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/x-www-form-urlencoded",
    );
    let r = respond(gw.begin(&with_csr(authed(), b"MIIB!!!"), now));
    assert_text(
        &r,
        StatusCode::BAD_REQUEST,
        "not a base64-encoded PKCS#10 CSR",
    );
    let r = respond(gw.begin(&with_csr(authed(), b""), now));
    assert_text(&r, StatusCode::BAD_REQUEST, "empty");

    // CRLF-wrapped base64 with a charset parameter is fine; the DER goes to the registrar as is.
    let der = vec![0x30u8; 100];
    let wrapped = encode_wrapped(&der, 64);
    let mut ok = with_csr(authed(), wrapped.as_bytes());
    ok.headers.insert(
        CONTENT_TYPE,
        "Application/PKCS10; charset=us-ascii".parse().unwrap(),
    );
    let Step::Enroll(pending, call) = gw.begin(&ok, now) else {
        panic!("expected an enroll call")
    };
    assert_eq!(call.csr_der, der);
    assert_eq!(call.protocol, pb::Protocol::Est as i32);
    assert!(call.current_certificate_der.is_empty());
    assert_eq!(pending.device.unwrap().value(), "sn-1");

    // Unauthenticated requests are refused before the body is looked at.
    let r = respond(gw.begin(&with_csr(request(Method::POST, path), b"!!"), now));
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn device_certificates_authenticate_per_label() {
    let (gw, pki) = gateway();
    let now = SystemTime::now();
    let mut r = with_csr(
        request(Method::POST, "/.well-known/est/cams/simpleenroll"),
        b"MAA=",
    );
    r.peer.tls_chain = vec![CertificateDer::from(pki.idevid.clone())];
    let Step::Enroll(pending, call) = gw.begin(&r, now) else {
        panic!("expected an enroll call")
    };
    assert_eq!(call.profile, "cameras");
    let d = pending.device.unwrap();
    assert_eq!(
        (d.kind(), d.value()),
        (IdentityKind::IdevidSerial, "SN-0042")
    );

    // A certificate from another CA: refused with the reason; the cert-only label answers 403.
    r.peer.tls_chain = vec![CertificateDer::from(pki.foreign.clone())];
    let resp = respond(gw.begin(&r, now));
    assert_text(
        &resp,
        StatusCode::FORBIDDEN,
        "not issued by a certificate authority",
    );
    assert!(resp.header(&WWW_AUTHENTICATE).is_none());

    // On a label with Basic too, the password still works next to an unacceptable certificate.
    let mut both = with_basic(
        with_csr(
            request(Method::POST, "/.well-known/est/iot/simpleenroll"),
            b"MAA=",
        ),
        "sn-9",
        "bootstrap-secret",
    );
    both.peer.tls_chain = vec![CertificateDer::from(pki.foreign.clone())];
    let Step::Enroll(pending, _) = gw.begin(&both, now) else {
        panic!("expected an enroll call")
    };
    assert_eq!(pending.device.unwrap().value(), "sn-9");
}

#[test]
fn trusted_proxy_header() {
    let (gw, pki) = gateway();
    let now = SystemTime::now();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(&pki.idevid)
    );
    let escaped = pem.replace('\n', "%0A").replace(' ', "%20");
    let mut r = with_csr(
        request(Method::POST, "/.well-known/est/cams/simpleenroll"),
        b"MAA=",
    );
    r.headers
        .insert("x-ssl-client-cert", escaped.parse().unwrap());
    let resp = respond(gw.begin(&r, now));
    assert_text(
        &resp,
        StatusCode::FORBIDDEN,
        "accepted only from the configured trusted proxies",
    );

    r.peer.addr = "10.1.2.3".parse().unwrap();
    r.headers
        .insert("x-forwarded-for", "198.51.100.7, 10.9.9.9".parse().unwrap());
    let Step::Enroll(pending, _) = gw.begin(&r, now) else {
        panic!("expected an enroll call")
    };
    assert_eq!(pending.device.unwrap().value(), "SN-0042");
    assert_eq!(
        gw.client_address(r.peer.addr, &r.headers),
        "10.9.9.9".parse::<IpAddr>().unwrap()
    );
    r.headers
        .insert("x-ssl-client-cert", "garbage%".parse().unwrap());
    let resp = respond(gw.begin(&r, now));
    assert_text(
        &resp,
        StatusCode::BAD_REQUEST,
        "does not hold a client certificate",
    );
}

#[test]
fn reenroll_needs_a_current_certificate() {
    let (gw, pki) = gateway();
    let now = SystemTime::now();
    let path = "/.well-known/est/iot/simplereenroll";
    let r = respond(gw.begin(&with_csr(request(Method::POST, path), b"MAA="), now));
    assert_text(
        &r,
        StatusCode::FORBIDDEN,
        "needs the certificate ragw issued",
    );

    let mut r = with_csr(request(Method::POST, path), b"MAA=");
    r.peer.tls_chain = vec![CertificateDer::from(pki.ragw_leaf.clone())];
    let Step::Enroll(pending, call) = gw.begin(&r, now) else {
        panic!("expected an enroll call")
    };
    assert!(pending.device.is_none() && call.device.is_none());
    assert_eq!(call.current_certificate_der, pki.ragw_leaf);

    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(3000 * 365 * 86400);
    let resp = respond(gw.begin(&r, later));
    assert_text(&resp, StatusCode::FORBIDDEN, "expired");

    let r = with_basic(r, "sn-1", "wrong");
    let resp = respond(gw.begin(&r, now));
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
}

fn pending(op: Operation) -> Pending {
    Pending {
        label: "iot".into(),
        operation: op,
        device: None,
        one_line_reply: false,
    }
}

#[test]
fn registrar_refusals_map_to_statuses() {
    let (gw, _) = gateway();
    let p = pending(Operation::SimpleEnroll);
    let mut s = Status::invalid_argument(
        "csr_der: the CSR asks for \"evil.example.com\", but this device is assigned \"abc.d.example\"",
    );
    s.metadata_mut().insert(
        "ragw-error-class",
        MetadataValue::from_static("bad_identity"),
    );
    s.metadata_mut().insert(
        "ragw-expected-names",
        MetadataValue::from_static("abc.d.example"),
    );
    let r = gw.registrar_error(&p, &s);
    assert_text(&r, StatusCode::BAD_REQUEST, "badIdentity: the CSR asks for");
    assert!(body(&r).contains("expected subjectAltName: dNSName=abc.d.example"));
    assert!(!body(&r).contains("csr_der:"));

    let mut s =
        Status::invalid_argument("csr_der: the CSR's ecdsa-with-SHA256 signature does not verify");
    s.metadata_mut().insert(
        "ragw-error-class",
        MetadataValue::from_static("bad_request"),
    );
    assert_text(
        &gw.registrar_error(&p, &s),
        StatusCode::BAD_REQUEST,
        "badRequest: the CSR's",
    );

    let r = gw.registrar_error(
        &pending(Operation::SimpleReenroll),
        &Status::permission_denied("the current certificate (serial 01) is revoked"),
    );
    assert_text(
        &r,
        StatusCode::FORBIDDEN,
        "cannot be used to re-enroll: the current certificate",
    );
    let r = gw.registrar_error(&p, &Status::deadline_exceeded("slow"));
    assert_text(&r, StatusCode::SERVICE_UNAVAILABLE, "retry after 7 s");
    let r = gw.registrar_error(&p, &Status::unauthenticated("no cert"));
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = gw.registrar_error(&p, &Status::internal("boom"));
    assert_text(&r, StatusCode::INTERNAL_SERVER_ERROR, "boom");
}

fn enrollment(state: pb::EnrollmentState) -> pb::Enrollment {
    pb::Enrollment {
        id: "0f8e".into(),
        state: state as i32,
        ..Default::default()
    }
}

fn answer(next: EnrollNext) -> HttpResponse {
    match next {
        EnrollNext::Respond(r) => r,
        EnrollNext::Wait(id) => panic!("expected an answer, got a wait on {id}"),
    }
}

#[test]
fn enrollment_states_map_to_answers() {
    let (gw, pki) = gateway();
    let p = pending(Operation::SimpleEnroll);

    let mut issued = enrollment(pb::EnrollmentState::Issued);
    issued.certificate_chain = vec![pki.ragw_leaf.clone(), pki.ragw_ca.clone()];
    let r = answer(gw.enroll_response(&p, &issued, false));
    assert_eq!(r.status, StatusCode::OK);
    let der = decode_lenient(&r.body, 1 << 20).unwrap();
    assert_eq!(
        ragw_pki::parse_certs_only(&der).unwrap(),
        vec![pki.ragw_leaf.clone()],
        "only the end-entity certificate"
    );

    let r = answer(gw.enroll_response(
        &p,
        &enrollment(pb::EnrollmentState::AwaitingApproval),
        false,
    ));
    assert_text(&r, StatusCode::ACCEPTED, "awaiting approval");
    assert_eq!(r.header(&RETRY_AFTER).unwrap(), "600");

    assert!(matches!(
        gw.enroll_response(&p, &enrollment(pb::EnrollmentState::Queued), false),
        EnrollNext::Wait(id) if id == "0f8e"
    ));
    let r = answer(gw.enroll_response(&p, &enrollment(pb::EnrollmentState::Ordering), true));
    assert_text(&r, StatusCode::ACCEPTED, "in progress");
    assert_eq!(r.header(&RETRY_AFTER).unwrap(), "7");

    let mut failed = enrollment(pb::EnrollmentState::Failed);
    failed.failure_detail = "the CA is down".into();
    failed.failure_class = pb::ErrorClass::InternalCaError as i32;
    let r = answer(gw.enroll_response(&p, &failed, false));
    assert_text(
        &r,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internalCAError: enrollment 0f8e failed: the CA is down",
    );
    failed.failure_class = pb::ErrorClass::BadIdentity as i32;
    let r = answer(gw.enroll_response(&p, &failed, false));
    assert_text(&r, StatusCode::BAD_REQUEST, "badIdentity");

    let mut rejected = enrollment(pb::EnrollmentState::Rejected);
    rejected.failure_detail = "unknown device".into();
    let r = answer(gw.enroll_response(&p, &rejected, false));
    assert_text(&r, StatusCode::FORBIDDEN, "rejected: unknown device");

    let empty = enrollment(pb::EnrollmentState::Issued);
    let r = answer(gw.enroll_response(&p, &empty, false));
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn limits() {
    let (gw, _) = gateway();
    let addr: IpAddr = "192.0.2.10".parse().unwrap();
    let t = Instant::now();
    gw.admit(addr, t).unwrap();
    gw.admit(addr, t).unwrap();
    let r = gw.admit(addr, t).unwrap_err();
    assert_text(
        &r,
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests from 192.0.2.10",
    );
    assert_eq!(r.header(&RETRY_AFTER).unwrap(), "1");

    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, "10000000".parse().unwrap());
    let r = gw.check_declared_length(&h).unwrap_err();
    assert_text(&r, StatusCode::PAYLOAD_TOO_LARGE, "larger than");
    h.insert(CONTENT_LENGTH, "12".parse().unwrap());
    gw.check_declared_length(&h).unwrap();
    h.insert(CONTENT_LENGTH, "twelve".parse().unwrap());
    assert_eq!(
        gw.check_declared_length(&h).unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn wrapped_responses_on_a_label_that_asks_for_them() {
    let (gw, pki) = gateway();
    let p = Pending {
        label: "cams".into(),
        operation: Operation::SimpleEnroll,
        device: None,
        one_line_reply: false,
    };
    let mut issued = enrollment(pb::EnrollmentState::Issued);
    issued.certificate_chain = vec![pki.ragw_leaf.clone()];
    let r = answer(gw.enroll_response(&p, &issued, false));
    let text = body(&r);
    assert!(text.contains("\r\n"));
    assert!(text.split("\r\n").all(|l| l.len() <= 64));
    assert!(r.header(&CTE).is_none());
}

#[test]
fn a_csr_posted_on_one_line_gets_its_certificate_on_one_line() {
    let (gw, pki) = gateway();
    let mut issued = enrollment(pb::EnrollmentState::Issued);
    issued.certificate_chain = vec![pki.ragw_leaf.clone()];
    for (one_line_reply, wrapped) in [(false, true), (true, false)] {
        let p = Pending {
            label: "cams".into(),
            operation: Operation::SimpleEnroll,
            device: None,
            one_line_reply,
        };
        let text = body(&answer(gw.enroll_response(&p, &issued, false)));
        assert_eq!(text.trim_end().contains("\r\n"), wrapped, "{text}");
    }
    assert!(is_one_base64_line(b"MIIB+abc=\r\n"));
    assert!(!is_one_base64_line(b"MIIB\r\n+abc=\r\n"));
    assert!(!is_one_base64_line(b"MIIB\n+abc="));
    assert!(!is_one_base64_line(b"  "));
}

#[test]
fn not_found_bodies_echo_a_bounded_part_of_a_long_path() {
    let (gw, _) = gateway();
    let long = "a".repeat(60 * 1024);
    for path in [
        format!("/{long}"),
        format!("/.well-known/est/a/b/{long}"),
        format!("/.well-known/est/{long}"),
        format!("/.well-known/est/iot/{long}"),
    ] {
        let r = respond(gw.begin(&request(Method::GET, &path), SystemTime::now()));
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(
            r.body.len() < 512,
            "a 404 for a 60 KiB path has a {} byte body",
            r.body.len()
        );
    }
}

#[test]
fn password_guessing_is_bounded_per_user_name_and_server_wide() {
    let pki = pki();
    let mut cfg = config(&pki);
    cfg.limits.guard.failures_per_second = 3;
    let gw = Gateway::new(cfg).unwrap();
    let now = SystemTime::now();
    let t = Instant::now();
    let csrattrs = |user: &str, pw: &str, clock: Instant| {
        respond(gw.begin_at(
            &with_basic(request(Method::GET, "/.well-known/est/csrattrs"), user, pw),
            now,
            clock,
        ))
    };
    // A wrong password: 401; the same name straight after (as from another address) is not
    // checked at all, even with the right password, and is told when to come back.
    assert_eq!(
        csrattrs("sn-1", "guess", t).status,
        StatusCode::UNAUTHORIZED
    );
    let r = csrattrs("sn-1", "bootstrap-secret", t);
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header(&RETRY_AFTER).unwrap(), "1");
    // After the wait the real device gets in, and its count starts again.
    let t1 = t + Duration::from_secs(1);
    assert!(matches!(
        gw.begin_at(
            &with_basic(
                request(Method::GET, "/.well-known/est/csrattrs"),
                "sn-1",
                "bootstrap-secret"
            ),
            now,
            t1
        ),
        Step::Assignment(..)
    ));
    // The wait doubles per failure.
    assert_eq!(csrattrs("sn-2", "a", t1).status, StatusCode::UNAUTHORIZED);
    let t2 = t1 + Duration::from_millis(1500);
    // Server-wide: three failures in this second (sn-2, sn-3, sn-5) reach the bound; a fourth
    // name is refused with 503 before its password is looked at.
    assert_eq!(csrattrs("sn-3", "a", t1).status, StatusCode::UNAUTHORIZED);
    assert_eq!(csrattrs("sn-5", "a", t1).status, StatusCode::UNAUTHORIZED);
    let r = csrattrs("sn-4", "bootstrap-secret", t1);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.header(&RETRY_AFTER).is_some());
    assert_eq!(csrattrs("sn-2", "b", t2).status, StatusCode::UNAUTHORIZED);
    let r = csrattrs("sn-2", "bootstrap-secret", t2 + Duration::from_secs(1));
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "2 s after the second failure"
    );
}

#[test]
fn csrattrs_takes_an_idevid_without_a_password_and_a_401_says_how() {
    let (gw, pki) = gateway();
    let now = SystemTime::now();
    let mut r = request(Method::GET, "/.well-known/est/iot/csrattrs");
    r.peer.tls_chain = vec![CertificateDer::from(pki.idevid.clone())];
    let Step::Assignment(pending, call) = gw.begin(&r, now) else {
        panic!("an IDevID under the label's anchors learns its name without a password")
    };
    assert_eq!(call.device.unwrap().value, "SN-0042");
    assert_eq!(pending.device.unwrap().kind(), IdentityKind::IdevidSerial);

    let r = respond(gw.begin(&request(Method::GET, "/.well-known/est/iot/csrattrs"), now));
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header(&WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    let text = body(&r);
    assert!(
        text.contains("HTTP Basic") && text.contains("TLS client certificate"),
        "{text}"
    );
}
