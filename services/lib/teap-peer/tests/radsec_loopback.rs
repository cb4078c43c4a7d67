//! A whole TEAP authentication over RadSec: the project's peer (`run_over_radsec`, a NAS over
//! RADIUS/TLS) against ragw's RadSec listener (`ragw_teap::radius_server::radsec`) serving a
//! small handler around the server conversation (`ragw_teap::teap_server`). The MSK the peer
//! derives equals the one the Access-Accept carries in its MPPE keys (secret `radsec`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ragw_teap::radius::{self, Attribute, Code, Packet, attr};
use ragw_teap::radius_server::radsec::{
    RADSEC_SECRET, RadsecLimits, RadsecServer, radsec_tls_config,
};
use ragw_teap::radius_server::udp::completion_channel;
use ragw_teap::radius_server::{
    CacheLimits, Client, ClientTable, Handled, Handler, RadiusServer, Reply, RequestKey, Secret,
};
use ragw_teap::teap_server::{
    Answer, Conversation, ConversationLimits, Next, Question, TeapServerConfig, tls_server_config,
};
use ragw_teap_peer::{
    Peer, PeerConfig, RadiusAttrs, client_tls_config, radsec_client_tls_config, run_over_radsec,
};
use rustls_pki_types::ServerName;
use support::{Pki, SERVER_NAME};
use tokio::net::TcpListener;

/// Access-Requests to TEAP conversations by State; phase-1 client certificates accepted.
struct ConversationHandler {
    config: Arc<TeapServerConfig>,
    conversations: HashMap<Vec<u8>, Conversation>,
    next_state: u32,
}

impl ConversationHandler {
    fn challenge(&mut self, conversation: Conversation, eap: Vec<u8>) -> Reply {
        self.next_state += 1;
        let state = format!("radsec-state-{}", self.next_state).into_bytes();
        self.conversations.insert(state.clone(), conversation);
        let mut attributes = radius::eap_message_attributes(&eap);
        attributes.push(Attribute::new(attr::STATE, state));
        Reply {
            code: Code::AccessChallenge,
            attributes,
        }
    }
}

impl Handler for ConversationHandler {
    fn handle(&mut self, _key: RequestKey, _client: &Client, request: &Packet) -> Handled {
        let Ok(Some(eap)) = request.eap_message() else {
            return Handled::Discard;
        };
        let Some(state) = request.state().map(<[u8]>::to_vec) else {
            // EAP-Response/Identity: Code, Identifier, Length, Type 1, identity.
            let identifier = eap[1].wrapping_add(1);
            let random = Box::new(|buf: &mut [u8]| buf.fill(0x5a));
            let (conversation, start) = Conversation::start(
                Arc::clone(&self.config),
                identifier,
                eap[5..].to_vec(),
                random,
            )
            .unwrap();
            return Handled::Reply(self.challenge(conversation, start));
        };
        let Some(mut conversation) = self.conversations.remove(&state) else {
            return Handled::Discard;
        };
        let mut next = conversation.receive(&eap);
        loop {
            next = match next {
                Next::Ask(Question::TunnelUp { peer_certificates }) => {
                    assert!(!peer_certificates.is_empty(), "phase-1 client certificate");
                    conversation.answer(Answer::Authenticated { provisioning: None })
                }
                Next::Ask(other) => panic!("unexpected question {other:?}"),
                Next::Send(eap) => return Handled::Reply(self.challenge(conversation, eap)),
                Next::Discard(why) => panic!("server discarded: {why}"),
                Next::Finished(finish) => {
                    let mut attributes = radius::eap_message_attributes(&finish.eap);
                    let code = if finish.accepted {
                        let keys = finish.keys.as_ref().expect("keys on success");
                        attributes.extend(
                            radius::mppe_key_attributes(
                                &keys.msk,
                                [0x80, 1],
                                [0x80, 2],
                                RADSEC_SECRET,
                                &request.authenticator,
                            )
                            .unwrap(),
                        );
                        Code::AccessAccept
                    } else {
                        Code::AccessReject
                    };
                    return Handled::Reply(Reply { code, attributes });
                }
            };
        }
    }
}

#[tokio::test]
async fn teap_client_certificate_authentication_over_radsec() {
    let pki = Pki::new();
    // RadSec's own TLS reuses the test PKI: server certificate for the listener, the device
    // certificate as the NAS's client certificate.
    let radsec_tls = radsec_tls_config(
        pki.server_chain.clone(),
        pki.server_key.clone_key(),
        std::slice::from_ref(&pki.ca_der),
    )
    .unwrap();
    let teap = Arc::new(TeapServerConfig {
        tls: tls_server_config(pki.server_chain.clone(), pki.server_key.clone_key()).unwrap(),
        authority_id: b"radsec-authority".to_vec(),
        limits: ConversationLimits::default(),
        trusted_server_root_pkcs7: None,
    });
    let mut clients = ClientTable::new();
    clients.insert(
        "127.0.0.1".parse().unwrap(),
        Client {
            name: "nas".into(),
            secret: Secret::new(RADSEC_SECRET).unwrap(),
        },
    );
    let handler = ConversationHandler {
        config: teap,
        conversations: HashMap::new(),
        next_state: 0,
    };
    let core = RadiusServer::new(clients, handler, CacheLimits::default());
    let (_completer, completions) = completion_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        RadsecServer::new(radsec_tls, RadsecLimits::default()).serve(
            listener,
            core,
            completions,
            |_, _| {},
            async {
                let _ = stopped.await;
            },
        ),
    );

    let peer_tls = client_tls_config(
        std::slice::from_ref(&pki.ca_der),
        Some((pki.client_chain.clone(), pki.client_key.clone_key())),
    )
    .unwrap();
    let peer = Peer::new(PeerConfig::new(
        peer_tls,
        ServerName::try_from(SERVER_NAME).unwrap(),
        "anonymous@example",
    ))
    .unwrap();
    let nas_tls = radsec_client_tls_config(
        std::slice::from_ref(&pki.ca_der),
        pki.client_chain.clone(),
        pki.client_key.clone_key(),
    )
    .unwrap();
    let outcome = run_over_radsec(
        peer,
        addr,
        nas_tls,
        ServerName::try_from(SERVER_NAME).unwrap(),
        RadiusAttrs {
            nas_identifier: Some("nas-radsec".into()),
            framed_mtu: Some(1400),
            timeout: Duration::from_secs(5),
            max_tries: 2,
            ..RadiusAttrs::default()
        },
    )
    .await
    .expect("conversation over RadSec");
    assert!(outcome.accepted);
    assert!(outcome.peer.success, "{:?}", outcome.peer);
    assert_eq!(outcome.retransmissions, 0);
    let peer_msk = outcome.peer.keys.as_ref().expect("peer keys").msk;
    assert_eq!(outcome.radius_msk, Some(peer_msk));
    assert!(outcome.requests >= 3, "identity, TLS and binding rounds");

    let _ = stop.send(());
    let core = server.await.unwrap().unwrap();
    assert_eq!(core.counters().handled, u64::from(outcome.requests));
}
