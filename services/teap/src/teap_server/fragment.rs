//! EAP-TEAP fragmentation (RFC 9930 §3.8, following RFC 5216 §2.1.5): the L flag and Message
//! Length on the first fragment only, M on every fragment but the last, and an empty message
//! (an ACK) from the receiver after each fragment with M.

use crate::eap::TeapMessage;

/// A peer message being reassembled.
#[derive(Debug, Default)]
pub(super) struct Reassembly {
    in_progress: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    declared_len: usize,
    data: Vec<u8>,
}

/// What one received fragment amounts to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// More fragments follow: answer with an ACK.
    NeedAck,
    /// The whole message's TLS data.
    Complete(Vec<u8>),
}

impl Reassembly {
    /// Takes one fragment's TLS data; `max_len` bounds the whole message.
    pub(super) fn receive(
        &mut self,
        message: &TeapMessage,
        max_len: usize,
    ) -> Result<Received, String> {
        let declared = message
            .message_length
            .map(|len| usize::try_from(len).unwrap_or(usize::MAX));
        if let Some(len) = declared {
            if self.in_progress.is_some() {
                return Err("L flag on a fragment other than the first".into());
            }
            if len > max_len {
                return Err(format!(
                    "Message Length {len} exceeds the {max_len}-octet limit"
                ));
            }
        }
        match self.in_progress.take() {
            None if message.more_fragments => {
                let declared_len = declared
                    .ok_or_else(|| "first fragment (M flag) without the L flag".to_string())?;
                check_fits(message.tls_data.len(), declared_len)?;
                self.in_progress = Some(Partial {
                    declared_len,
                    data: message.tls_data.clone(),
                });
                Ok(Received::NeedAck)
            }
            None => {
                if let Some(len) = declared
                    && len != message.tls_data.len()
                {
                    return Err(format!(
                        "Message Length {len} but the unfragmented message carries {} octets",
                        message.tls_data.len()
                    ));
                }
                if message.tls_data.len() > max_len {
                    return Err(format!(
                        "message of {} octets exceeds the {max_len}-octet limit",
                        message.tls_data.len()
                    ));
                }
                Ok(Received::Complete(message.tls_data.clone()))
            }
            Some(mut partial) => {
                let total = partial.data.len().saturating_add(message.tls_data.len());
                check_fits(total, partial.declared_len)?;
                if message.tls_data.is_empty() && message.more_fragments {
                    return Err("empty fragment with the M flag".into());
                }
                partial.data.extend_from_slice(&message.tls_data);
                if message.more_fragments {
                    self.in_progress = Some(partial);
                    return Ok(Received::NeedAck);
                }
                if partial.data.len() != partial.declared_len {
                    return Err(format!(
                        "fragments total {} octets but Message Length was {}",
                        partial.data.len(),
                        partial.declared_len
                    ));
                }
                Ok(Received::Complete(partial.data))
            }
        }
    }
}

fn check_fits(len: usize, declared_len: usize) -> Result<(), String> {
    if len > declared_len {
        return Err(format!(
            "fragments carry {len} octets, more than the Message Length {declared_len}"
        ));
    }
    Ok(())
}

/// Our own message being sent fragment by fragment.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    data: Vec<u8>,
    sent: usize,
}

impl Outgoing {
    /// Whether fragments remain after the ones already sent.
    pub(super) fn pending(&self) -> bool {
        self.sent < self.data.len()
    }

    /// Starts sending `data` and returns the first fragment.
    pub(super) fn start(&mut self, data: Vec<u8>, max_fragment: usize) -> TeapMessage {
        self.data = data;
        self.sent = 0;
        let total = self.data.len();
        let mut first = self.next(max_fragment);
        if first.more_fragments {
            first.message_length = Some(u32::try_from(total).unwrap_or(u32::MAX));
        }
        first
    }

    /// The next fragment (after the peer's ACK).
    pub(super) fn next(&mut self, max_fragment: usize) -> TeapMessage {
        let max_fragment = max_fragment.max(1);
        let end = self.sent.saturating_add(max_fragment).min(self.data.len());
        let chunk = self.data.get(self.sent..end).unwrap_or_default().to_vec();
        self.sent = end;
        let mut message = TeapMessage::new(chunk);
        message.more_fragments = self.pending();
        if !message.more_fragments {
            self.data = Vec::new();
            self.sent = 0;
        }
        message
    }
}
