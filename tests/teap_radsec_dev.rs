//! `ragw dev` serves the TEAP gateway over RadSec (RFC 6614) too: its address in
//! endpoints.json (`radsec`), a dev RadSec client certificate in DATA_DIR/radsec (key 0600)
//! from a CA of its own. The project's TEAP peer, as a NAS over RadSec with that certificate,
//! authenticates with Basic-Password-Auth and the bootstrap password through the real gateway
//! and registrar (Access-Accept whose MPPE keys equal the peer's MSK); a wrong password is an
//! Access-Reject.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::Dev;
use ragw_teap_peer::{
    Peer, PeerConfig, RadiusAttrs, client_tls_config, radsec_client_tls_config, run_over_radsec,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn attempt(dev: &Dev, user: &str, password: &str) -> ragw_teap_peer::RadiusOutcome {
    let addr: SocketAddr = dev.endpoint("radsec").parse().unwrap();
    let roots = certs(&dev.dir.join("ca").join("root.pem"));
    let radsec = dev.dir.join("radsec");
    let nas_tls = radsec_client_tls_config(
        &roots,
        certs(&radsec.join("client.pem")),
        PrivateKeyDer::from_pem_file(radsec.join("client.key")).unwrap(),
    )
    .unwrap();
    let mut config = PeerConfig::new(
        client_tls_config(&roots, None).unwrap(),
        ServerName::try_from("127.0.0.1").unwrap(),
        user,
    );
    config.password = Some((user.to_string(), password.as_bytes().to_vec()));
    let peer = Peer::new(config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(run_over_radsec(
            peer,
            addr,
            nas_tls,
            ServerName::try_from("127.0.0.1").unwrap(),
            RadiusAttrs {
                nas_identifier: Some("radsec-nas".into()),
                calling_station_id: Some("02-00-00-00-00-77".into()),
                framed_mtu: Some(1400),
                timeout: Duration::from_secs(15),
                max_tries: 2,
            },
        ))
        .expect("conversation over RadSec")
}

#[test]
fn dev_serves_teap_over_radsec_with_its_dev_client_certificate() {
    let dev = Dev::start(&[]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["client.key", "ca.key"] {
            let mode = std::fs::metadata(dev.dir.join("radsec").join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "radsec/{key} is private");
        }
    }
    let password = std::fs::read_to_string(dev.dir.join("dev-password")).unwrap();

    let good = attempt(&dev, "sn-radsec-1", password.trim());
    assert!(good.accepted, "{:?}", good.peer);
    assert!(good.peer.success, "{:?}", good.peer);
    let msk = good.peer.keys.as_ref().expect("peer keys").msk;
    assert_eq!(good.radius_msk, Some(msk), "MPPE keys carry the peer's MSK");

    let bad = attempt(&dev, "sn-radsec-2", "not-the-password");
    assert!(!bad.accepted);
    assert!(!bad.peer.success);
}
