//! `run_over_radius` against a RADIUS server on loopback UDP that wraps the scripted TEAP
//! server of `support`: State echo, EAP-Message reassembly, Message-Authenticator, MPPE keys,
//! and a dropped request recovered by retransmission.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use ragw_teap::radius::{self, Attribute, Code, Packet, attr};
use ragw_teap_peer::{Peer, PeerConfig, RadiusAttrs, client_tls_config, run_over_radius};
use rustls_pki_types::ServerName;
use support::{MiniServer, Pki, Plan, SERVER_NAME, ServerStep};
use tokio::net::UdpSocket;

const SECRET: &[u8] = b"loopback-secret";

struct Seen {
    requests: Vec<Packet>,
    dropped: u32,
}

/// Serves one conversation. Drops the first copy of request number `drop_index`.
async fn serve(socket: UdpSocket, pki: &Pki, plan: Plan, drop_index: usize) -> (Seen, ServerStep) {
    let mut buf = [0u8; 4096];
    let mut seen = Seen {
        requests: Vec::new(),
        dropped: 0,
    };
    let mut conversation: Option<MiniServer> = None;
    let mut plan = Some(plan);
    let mut state_counter = 0u32;
    let mut expected_state: Option<Vec<u8>> = None;
    loop {
        let (len, from) = socket.recv_from(&mut buf).await.unwrap();
        let request = Packet::parse_verified_request(&buf[..len], SECRET).expect("verifies");
        assert_eq!(
            request.attributes[0].attribute_type,
            attr::MESSAGE_AUTHENTICATOR
        );
        if seen.requests.len() == drop_index && seen.dropped == 0 {
            seen.dropped += 1;
            continue;
        }
        assert_eq!(
            request.state().map(<[u8]>::to_vec),
            expected_state,
            "State echoed"
        );
        assert_eq!(
            request.attribute(attr::NAS_IDENTIFIER),
            Some(&b"nas-loop"[..])
        );
        assert_eq!(
            request.attribute(attr::USER_NAME),
            Some(&b"anonymous@example"[..])
        );
        seen.requests.push(request.clone());
        let eap = request.eap_message().unwrap().expect("EAP-Message");
        let step = match conversation.as_mut() {
            None => {
                let (server, start) =
                    MiniServer::start(pki.server_config(), plan.take().unwrap(), 1000);
                conversation = Some(server);
                ServerStep::Send(start)
            }
            Some(server) => server.receive(&eap),
        };
        let (code, eap_out, final_step) = match step {
            ServerStep::Send(eap) => (Code::AccessChallenge, eap, None),
            finished @ ServerStep::Finished { .. } => {
                let ServerStep::Finished { success, eap, .. } = &finished else {
                    unreachable!()
                };
                let code = if *success {
                    Code::AccessAccept
                } else {
                    Code::AccessReject
                };
                (code, eap.clone(), Some(finished))
            }
        };
        let mut response = Packet::response_to(&request, code);
        for part in radius::eap_message_attributes(&eap_out) {
            response.push(part);
        }
        if code == Code::AccessChallenge {
            state_counter += 1;
            let state = format!("state-{state_counter}").into_bytes();
            response.push(Attribute::new(attr::STATE, state.clone()));
            expected_state = Some(state);
        }
        if let Some(ServerStep::Finished {
            keys: Some(keys), ..
        }) = &final_step
        {
            for attribute in radius::mppe_key_attributes(
                &keys.msk,
                [0x80, 7],
                [0x80, 9],
                SECRET,
                &request.authenticator,
            )
            .unwrap()
            {
                response.push(attribute);
            }
        }
        let bytes = response.encode_response(&request, SECRET).unwrap();
        socket.send_to(&bytes, from).await.unwrap();
        if let Some(finished) = final_step {
            return (seen, finished);
        }
    }
}

fn attrs() -> RadiusAttrs {
    RadiusAttrs {
        calling_station_id: Some("02-00-00-00-00-01".into()),
        nas_identifier: Some("nas-loop".into()),
        framed_mtu: Some(1400),
        timeout: Duration::from_millis(300),
        max_tries: 4,
    }
}

#[tokio::test]
async fn client_certificate_conversation_over_radius_recovers_the_same_msk() {
    let pki = Pki::new();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = socket.local_addr().unwrap();
    let tls = client_tls_config(
        std::slice::from_ref(&pki.ca_der),
        Some((pki.client_chain.clone(), pki.client_key.clone_key())),
    )
    .unwrap();
    let peer = Peer::new(PeerConfig::new(
        tls,
        ServerName::try_from(SERVER_NAME).unwrap(),
        "anonymous@example",
    ))
    .unwrap();
    let server = async { serve(socket, &pki, Plan::NoInner, 2).await };
    let client = run_over_radius(peer, server_addr, SECRET, attrs());
    let ((seen, finished), outcome) = tokio::join!(server, client);
    let outcome = outcome.expect("conversation over RADIUS");
    assert!(outcome.accepted);
    assert!(outcome.peer.success, "{:?}", outcome.peer);
    let peer_msk = outcome.peer.keys.as_ref().unwrap().msk;
    assert_eq!(
        outcome.radius_msk,
        Some(peer_msk),
        "MPPE keys carry the peer's MSK"
    );
    let ServerStep::Finished {
        keys: Some(keys), ..
    } = &finished
    else {
        panic!("server did not succeed")
    };
    assert_eq!(keys.msk, peer_msk);
    assert_eq!(seen.dropped, 1);
    assert_eq!(outcome.retransmissions, 1);
    assert_eq!(outcome.requests as usize, seen.requests.len());
    // A fresh Request Authenticator per request (retransmissions aside).
    let mut authenticators: Vec<_> = seen.requests.iter().map(|r| r.authenticator).collect();
    authenticators.sort();
    authenticators.dedup();
    assert_eq!(authenticators.len(), seen.requests.len());
}

#[tokio::test]
async fn wrong_password_over_radius_is_an_access_reject() {
    let pki = Pki::new();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = socket.local_addr().unwrap();
    let tls = client_tls_config(std::slice::from_ref(&pki.ca_der), None).unwrap();
    let mut config = PeerConfig::new(
        tls,
        ServerName::try_from(SERVER_NAME).unwrap(),
        "anonymous@example",
    );
    config.password = Some(("alice".into(), b"wrong".to_vec()));
    let peer = Peer::new(config).unwrap();
    let plan = Plan::Password {
        username: b"alice".to_vec(),
        password: b"right".to_vec(),
    };
    let server = async { serve(socket, &pki, plan, usize::MAX).await };
    let client = run_over_radius(peer, server_addr, SECRET, attrs());
    let (_, outcome) = tokio::join!(server, client);
    let outcome = outcome.expect("conversation over RADIUS");
    assert!(!outcome.accepted);
    assert!(!outcome.peer.success);
    assert_eq!(outcome.radius_msk, None);
    assert_eq!(outcome.retransmissions, 0);
}
