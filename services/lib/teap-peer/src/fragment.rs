//! TEAP fragmentation (RFC 9930 §3.7, which defers to RFC 5216 §2.1.5): the peer's outgoing
//! messages are cut into fragments of at most `max_fragment` TLS octets, and the server's
//! fragments are reassembled, each one answered by an ACK (a TEAP packet without data).
//!
//! Only TLS data is fragmented. The peer's Outer TLVs (usually none) ride on the first fragment,
//! and the Message Length of the L flag counts the TLS data alone.

use ragw_teap::eap::TeapMessage;

/// Why a server fragment cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("first fragment of a fragmented message lacks the L flag")]
    MissingLength,
    #[error("L flag on a fragment in the middle of a message")]
    LengthMidMessage,
    #[error("announced message length {announced} exceeds the {max}-octet limit")]
    MessageTooLong { announced: usize, max: usize },
    #[error("fragments carry {received} octets, more than the announced {announced}")]
    Overrun { received: usize, announced: usize },
    #[error("message ended after {received} of the announced {announced} octets")]
    Underrun { received: usize, announced: usize },
}

/// What one received fragment completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassembled {
    /// More fragments follow: answer with an ACK.
    Incomplete,
    /// The whole TLS data of one server message.
    Complete(Vec<u8>),
}

/// Collects the server's fragments into one message.
#[derive(Debug, Clone)]
pub struct Reassembler {
    max_message_len: usize,
    in_progress: Option<Partial>,
}

#[derive(Debug, Clone)]
struct Partial {
    announced: usize,
    data: Vec<u8>,
}

impl Reassembler {
    pub fn new(max_message_len: usize) -> Self {
        Self {
            max_message_len,
            in_progress: None,
        }
    }

    /// True while a fragmented message is half received.
    pub fn is_partial(&self) -> bool {
        self.in_progress.is_some()
    }

    /// Adds one received packet's TLS data.
    pub fn push(&mut self, message: &TeapMessage) -> Result<Reassembled, FragmentError> {
        let announced = match (message.message_length, self.in_progress.is_some()) {
            (Some(_), true) => return Err(FragmentError::LengthMidMessage),
            (Some(length), false) => {
                let announced = usize::try_from(length).unwrap_or(usize::MAX);
                if announced > self.max_message_len {
                    return Err(FragmentError::MessageTooLong {
                        announced,
                        max: self.max_message_len,
                    });
                }
                Some(announced)
            }
            (None, _) => None,
        };
        let partial = match (self.in_progress.take(), announced) {
            (Some(partial), _) => partial,
            (None, Some(announced)) => Partial {
                announced,
                data: Vec::with_capacity(announced),
            },
            (None, None) if message.more_fragments => return Err(FragmentError::MissingLength),
            (None, None) => return Ok(Reassembled::Complete(message.tls_data.clone())),
        };
        let mut partial = partial;
        partial.data.extend_from_slice(&message.tls_data);
        if partial.data.len() > partial.announced {
            return Err(FragmentError::Overrun {
                received: partial.data.len(),
                announced: partial.announced,
            });
        }
        if message.more_fragments {
            self.in_progress = Some(partial);
            return Ok(Reassembled::Incomplete);
        }
        if partial.data.len() != partial.announced {
            return Err(FragmentError::Underrun {
                received: partial.data.len(),
                announced: partial.announced,
            });
        }
        Ok(Reassembled::Complete(partial.data))
    }
}

/// Cuts one outgoing message into fragments and hands them out one per server ACK.
#[derive(Debug, Clone, Default)]
pub struct Fragmenter {
    pending: Vec<u8>,
    sent: usize,
}

impl Fragmenter {
    /// True while fragments of the current message wait for the server's ACKs.
    pub fn has_pending(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// Starts a message and returns its first (maybe only) packet. `outer_tlvs` = Some sets the
    /// O flag (first peer message only); an unfragmented message carries no L flag.
    pub fn start(
        &mut self,
        tls_data: Vec<u8>,
        outer_tlvs: Option<Vec<u8>>,
        max_fragment: usize,
    ) -> TeapMessage {
        let max_fragment = max_fragment.max(1);
        let total = tls_data.len();
        self.pending = tls_data;
        self.sent = 0;
        let mut first = self.next(max_fragment);
        if total > max_fragment {
            // The 4-octet length field cannot overflow: EAP caps a message far below 4 GiB.
            first.message_length = Some(u32::try_from(total).unwrap_or(u32::MAX));
        }
        first.outer_tlvs = outer_tlvs;
        first
    }

    /// The next fragment after the server acknowledged the previous one.
    pub fn next(&mut self, max_fragment: usize) -> TeapMessage {
        let max_fragment = max_fragment.max(1);
        let end = self.pending.len().min(self.sent + max_fragment);
        let chunk = self
            .pending
            .get(self.sent..end)
            .unwrap_or_default()
            .to_vec();
        self.sent = end;
        let mut message = TeapMessage::new(chunk);
        message.more_fragments = self.has_pending();
        if !self.has_pending() {
            self.pending.clear();
            self.sent = 0;
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(data: &[u8], more: bool, length: Option<u32>) -> TeapMessage {
        let mut message = TeapMessage::new(data.to_vec());
        message.more_fragments = more;
        message.message_length = length;
        message
    }

    #[test]
    fn small_message_goes_out_whole_without_l_flag() {
        let mut fragmenter = Fragmenter::default();
        let first = fragmenter.start(vec![1, 2, 3], None, 10);
        assert_eq!(first.tls_data, [1, 2, 3]);
        assert_eq!(first.message_length, None);
        assert!(!first.more_fragments);
        assert!(!fragmenter.has_pending());
    }

    #[test]
    fn large_message_is_cut_with_l_on_first_and_m_on_all_but_last() {
        let data: Vec<u8> = (0..25).collect();
        let mut fragmenter = Fragmenter::default();
        let first = fragmenter.start(data.clone(), Some(vec![0, 2, 0, 2, 0, 1]), 10);
        assert_eq!(first.message_length, Some(25));
        assert!(first.more_fragments);
        assert_eq!(first.outer_tlvs.as_deref(), Some(&[0, 2, 0, 2, 0, 1][..]));
        let second = fragmenter.next(10);
        assert_eq!(second.message_length, None);
        assert!(second.more_fragments);
        assert_eq!(second.outer_tlvs, None);
        let third = fragmenter.next(10);
        assert!(!third.more_fragments);
        assert!(!fragmenter.has_pending());
        let joined = [first.tls_data, second.tls_data, third.tls_data].concat();
        assert_eq!(joined, data);
        // Exactly max_fragment octets fit one packet.
        let whole = fragmenter.start(vec![0; 10], None, 10);
        assert_eq!(whole.message_length, None);
        assert!(!whole.more_fragments);
    }

    #[test]
    fn fragments_round_trip_through_the_reassembler() {
        let data: Vec<u8> = (0..=255).cycle().take(3000).collect();
        let mut fragmenter = Fragmenter::default();
        let mut reassembler = Reassembler::new(64 * 1024);
        let mut packet = fragmenter.start(data.clone(), None, 1000);
        let mut acks = 0;
        loop {
            match reassembler.push(&packet).expect("valid fragment") {
                Reassembled::Incomplete => {
                    acks += 1;
                    assert!(reassembler.is_partial());
                    packet = fragmenter.next(1000);
                }
                Reassembled::Complete(whole) => {
                    assert_eq!(whole, data);
                    break;
                }
            }
        }
        assert_eq!(acks, 2);
        assert!(!reassembler.is_partial());
    }

    #[test]
    fn unfragmented_and_lenient_single_l_messages_complete_at_once() {
        let mut reassembler = Reassembler::new(100);
        assert_eq!(
            reassembler.push(&fragment(&[7, 8], false, None)),
            Ok(Reassembled::Complete(vec![7, 8]))
        );
        // An L flag on an unfragmented message is redundant but consistent.
        assert_eq!(
            reassembler.push(&fragment(&[7, 8], false, Some(2))),
            Ok(Reassembled::Complete(vec![7, 8]))
        );
    }

    #[test]
    fn inconsistent_fragments_are_refused() {
        let mut reassembler = Reassembler::new(100);
        assert_eq!(
            reassembler.push(&fragment(&[1], true, None)),
            Err(FragmentError::MissingLength)
        );
        assert_eq!(
            reassembler.push(&fragment(&[1], true, Some(101))),
            Err(FragmentError::MessageTooLong {
                announced: 101,
                max: 100
            })
        );
        let mut reassembler = Reassembler::new(100);
        assert_eq!(
            reassembler.push(&fragment(&[1, 2], true, Some(3))),
            Ok(Reassembled::Incomplete)
        );
        assert_eq!(
            reassembler.push(&fragment(&[3], true, Some(3))),
            Err(FragmentError::LengthMidMessage)
        );
        let mut reassembler = Reassembler::new(100);
        let _ = reassembler.push(&fragment(&[1, 2], true, Some(3)));
        assert_eq!(
            reassembler.push(&fragment(&[3, 4], false, None)),
            Err(FragmentError::Overrun {
                received: 4,
                announced: 3
            })
        );
        let mut reassembler = Reassembler::new(100);
        let _ = reassembler.push(&fragment(&[1], true, Some(3)));
        assert_eq!(
            reassembler.push(&fragment(&[2], false, None)),
            Err(FragmentError::Underrun {
                received: 2,
                announced: 3
            })
        );
    }
}
