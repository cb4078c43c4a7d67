use super::*;
use ragw_device_auth::Secret as PasswordSecret;
use ragw_domain::IdentityKind;
use rustls::pki_types::CertificateDer;

fn no_env(_: &str) -> Option<String> {
    None
}

fn section(dir: &std::path::Path) -> TeapSection {
    let secret = dir.join("nas1.secret");
    std::fs::write(&secret, "nas-one-secret\n").unwrap();
    let mut clients = BTreeMap::new();
    clients.insert(
        "nas1".to_string(),
        RadiusClientSection {
            address: "192.0.2.10".into(),
            secret_file: Some(secret),
            secret_env: None,
        },
    );
    clients.insert(
        "campus".to_string(),
        RadiusClientSection {
            address: "10.0.0.0/8".into(),
            secret_file: None,
            secret_env: Some("CAMPUS_SECRET".into()),
        },
    );
    let mut labels = BTreeMap::new();
    labels.insert(
        "iot".to_string(),
        TeapLabelSection {
            profile: Some("devices".into()),
            basic: Some(BasicSection {
                bootstrap_secret: Some("boot".into()),
                ..Default::default()
            }),
            client_cert: None,
            password_method: PasswordMethod::EapGtc,
            provisioning: ProvisioningSection {
                certificate: CertificateProvisioning::Required,
            },
        },
    );
    labels.insert(
        "lab".to_string(),
        TeapLabelSection {
            basic: Some(BasicSection {
                bootstrap_secret: Some("lab-boot".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    TeapSection {
        listen: default_listen(),
        ops_listen: default_ops_listen(),
        registrar_url: default_registrar_url(),
        registrar_tls_name: None,
        tls_cert: None,
        tls_key: None,
        trusted_server_root: None,
        authority_id: Some("ragw-test".into()),
        default_label: Some("lab".into()),
        limits: TeapLimitsSection::default(),
        clients,
        labels,
        radsec: None,
    }
}

fn campus_env(name: &str) -> Option<String> {
    (name == "CAMPUS_SECRET").then(|| "campus-secret".to_string())
}

#[test]
fn section_reads_secrets_from_files_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = section(dir.path()).to_config(&campus_env).unwrap();
    let nas1 = cfg.clients.iter().find(|c| c.name == "nas1").unwrap();
    assert_eq!(nas1.secret.expose(), b"nas-one-secret");
    assert!(nas1.prefix.contains("192.0.2.10".parse().unwrap()));
    let campus = cfg.clients.iter().find(|c| c.name == "campus").unwrap();
    assert_eq!(campus.secret.expose(), b"campus-secret");
    assert!(campus.prefix.contains("10.9.8.7".parse().unwrap()));
    let iot = cfg.label("iot").unwrap();
    assert_eq!(iot.profile, "devices");
    assert_eq!(iot.certificate, CertificateProvisioning::Required);
    assert_eq!(iot.password_method, PasswordMethod::EapGtc);
    assert_eq!(
        cfg.label("lab").unwrap().password_method,
        PasswordMethod::Basic
    );
    assert_eq!(cfg.label("lab").unwrap().profile, "lab");
    assert_eq!(
        cfg.label("lab").unwrap().certificate,
        CertificateProvisioning::Offered
    );
    assert_eq!(cfg.authority_id, b"ragw-test");
    assert_eq!(cfg.limits.enrollment_hold, Duration::from_secs(20));

    let e = section(dir.path())
        .to_config(&no_env)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "teap.clients.campus.secret_env: the environment variable CAMPUS_SECRET is not set"
    );
}

#[test]
fn secrets_must_come_from_exactly_one_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = section(dir.path());
    s.clients.get_mut("campus").unwrap().secret_env = None;
    let e = s.to_config(&campus_env).unwrap_err().to_string();
    assert!(
        e.starts_with("teap.clients.campus: no shared secret"),
        "{e}"
    );
    let mut s = section(dir.path());
    s.clients.get_mut("nas1").unwrap().secret_env = Some("X".into());
    let e = s.to_config(&campus_env).unwrap_err().to_string();
    assert!(e.contains("only one of secret_file and secret_env"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let mut s = section(dir.path());
    s.clients.get_mut("nas1").unwrap().secret_file = Some(empty);
    let e = s.to_config(&campus_env).unwrap_err().to_string();
    assert!(e.contains("shared secret of clients.nas1 is empty"), "{e}");
    let mut s = section(dir.path());
    s.clients.get_mut("nas1").unwrap().address = "192.0.2.300".into();
    let e = s.to_config(&campus_env).unwrap_err().to_string();
    assert!(e.starts_with("teap.clients.nas1.address:"), "{e}");
}

#[test]
fn password_method_is_basic_or_eap_gtc() {
    let parse = |text: &str| toml::from_str::<TeapLabelSection>(text).map(|l| l.password_method);
    assert_eq!(parse("").unwrap(), PasswordMethod::Basic);
    assert_eq!(
        parse("password_method = \"basic\"").unwrap(),
        PasswordMethod::Basic
    );
    assert_eq!(
        parse("password_method = \"eap-gtc\"").unwrap(),
        PasswordMethod::EapGtc
    );
    let e = parse("password_method = \"mschapv2\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("eap-gtc"), "{e}");
}

#[test]
fn a_plain_secret_key_is_refused_by_the_format() {
    let text = "address = \"127.0.0.1\"\nsecret = \"testing123\"\n";
    let e = toml::from_str::<RadiusClientSection>(text)
        .unwrap_err()
        .to_string();
    assert!(e.contains("secret"), "{e}");
}

#[test]
fn validation_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = section(dir.path()).to_config(&campus_env).unwrap();

    let mut c = good.clone();
    c.clients.clear();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .starts_with("teap.clients:")
    );

    let mut c = good.clone();
    c.default_label = Some("nope".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("teap.default_label:"), "{e}");

    let mut c = good.clone();
    c.labels.push(TeapLabel::new("cams", "cams"));
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("teap.labels.cams: no authentication method"),
        "{e}"
    );

    let mut c = good.clone();
    c.labels[0].basic = Some(BasicAuth::new(IdentityKind::SerialNumber));
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains(".basic: neither password_file"), "{e}");

    let mut c = good.clone();
    let mut certificates_only = TeapLabel::new("cams", "cams");
    certificates_only.client_cert = Some(ClientCertAuth {
        trust_anchors: vec![CertificateDer::from(vec![0x30, 0x00])],
        identity: ragw_device_auth::CertIdentityField::SanDns,
        identity_kind: IdentityKind::SerialNumber,
    });
    certificates_only.password_method = PasswordMethod::EapGtc;
    c.labels.push(certificates_only);
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("teap.labels.cams.password_method: asks for a password"),
        "{e}"
    );

    let mut c = good.clone();
    c.limits.enrollment_hold = Duration::from_secs(200);
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("teap.limits.enrollment_hold_seconds: is 200 s"),
        "{e}"
    );

    let mut c = good.clone();
    c.limits.max_conversations = 0;
    assert!(c.validate().is_err());

    let mut c = good.clone();
    c.authority_id.clear();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("authority_id")
    );

    let mut c = good.clone();
    let dup = c.clients[0].clone();
    c.clients.push(RadiusClient {
        name: "again".into(),
        ..dup
    });
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("same address"), "{e}");

    let mut c = good;
    let mut upper = TeapLabel::new("IOT", "iot");
    let mut basic = BasicAuth::new(IdentityKind::SerialNumber);
    basic.bootstrap = Some(PasswordSecret::from_plain("x"));
    upper.basic = Some(basic);
    c.labels.push(upper);
    assert!(c.validate().unwrap_err().to_string().contains("twice"));
}

#[test]
fn realm_selects_the_label() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = section(dir.path()).to_config(&campus_env).unwrap();
    let pick = |id: &[u8]| cfg.label_for_identity(id).map(|l| l.label.as_str());
    assert_eq!(pick(b"anonymous@iot"), Some("iot"));
    assert_eq!(pick(b"anonymous@IoT"), Some("iot"));
    assert_eq!(pick(b"a@b@iot"), Some("iot"));
    assert_eq!(pick(b"anonymous@example.com"), Some("lab"));
    assert_eq!(pick(b"anonymous"), Some("lab"));
    assert_eq!(pick(b"x@\xff"), Some("lab"));
    let mut no_default = cfg.clone();
    no_default.default_label = None;
    assert_eq!(
        no_default
            .label_for_identity(b"anonymous")
            .map(|l| l.label.as_str()),
        None
    );
}

#[test]
fn authority_id_defaults_to_the_certificate_digest() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["radius.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = dir.path().join("server.pem");
    std::fs::write(&pem, cert.pem()).unwrap();
    let mut s = section(dir.path());
    s.authority_id = None;
    s.tls_cert = Some(pem);
    let cfg = s.to_config(&campus_env).unwrap();
    assert_eq!(cfg.authority_id.len(), 16);
    assert_eq!(cfg.authority_id, authority_id_for(cert.der()));
    assert_ne!(authority_id_for(b"other"), cfg.authority_id);
}
