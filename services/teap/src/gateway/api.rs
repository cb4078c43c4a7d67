//! The boundary between the gateway and the TEAP conversation. The types are
//! [`crate::teap_server`]'s; the traits let the gateway's tests script a conversation, and
//! [`ServerEngine`] is the real one.

use std::sync::Arc;

pub use crate::keys::SessionKeys;
pub use crate::teap_server::{Answer, Finish, InnerMethod, Next, Provisioning, Question};
use crate::teap_server::{Conversation, TeapServerConfig};

use super::RandomSource;

/// Starts conversations (holds the TLS configuration, Authority-ID and limits).
pub trait TeapEngine: Send + Sync + 'static {
    type Conversation: TeapConversation;
    /// After the peer's EAP-Response/Identity: the conversation and the EAP-Request/TEAP Start
    /// with `identifier`; an error says why no conversation could start. `max_tls_fragment`,
    /// when the NAS said how large an EAP packet it carries (Framed-MTU), replaces the
    /// configured fragment size.
    fn start(
        &self,
        identifier: u8,
        outer_identity: Vec<u8>,
        max_tls_fragment: Option<usize>,
    ) -> Result<(Self::Conversation, Vec<u8>), String>;
}

/// One TEAP conversation (sans-IO): EAP-Responses in, what to do next out.
pub trait TeapConversation: Send + 'static {
    /// One EAP-Response packet (already reassembled from EAP-Message attributes).
    fn receive(&mut self, eap_response: &[u8]) -> Next;
    /// The driver's answer to the last [`Next::Ask`].
    fn answer(&mut self, answer: Answer) -> Next;
    fn outer_identity(&self) -> &[u8];
}

/// [`crate::teap_server`] conversations over one configuration; Crypto-Binding nonces from
/// `random`.
pub struct ServerEngine {
    config: Arc<TeapServerConfig>,
    random: RandomSource,
}

impl ServerEngine {
    pub fn new(config: Arc<TeapServerConfig>, random: RandomSource) -> ServerEngine {
        ServerEngine { config, random }
    }
}

impl TeapEngine for ServerEngine {
    type Conversation = Conversation;

    fn start(
        &self,
        identifier: u8,
        outer_identity: Vec<u8>,
        max_tls_fragment: Option<usize>,
    ) -> Result<(Conversation, Vec<u8>), String> {
        let random = Arc::clone(&self.random);
        let config = match max_tls_fragment {
            Some(fragment) if fragment != self.config.limits.max_tls_fragment => {
                let mut config = TeapServerConfig::clone(&self.config);
                config.limits.max_tls_fragment = fragment;
                Arc::new(config)
            }
            _ => Arc::clone(&self.config),
        };
        Conversation::start(
            config,
            identifier,
            outer_identity,
            Box::new(move |buf: &mut [u8]| random(buf)),
        )
        .map_err(|e| e.to_string())
    }
}

impl TeapConversation for Conversation {
    fn receive(&mut self, eap_response: &[u8]) -> Next {
        Conversation::receive(self, eap_response)
    }

    fn answer(&mut self, answer: Answer) -> Next {
        Conversation::answer(self, answer)
    }

    fn outer_identity(&self) -> &[u8] {
        Conversation::outer_identity(self)
    }
}
