//! Tamper-evident audit events: each event holds the hash of the one before it, so an edited,
//! deleted or reordered row breaks the chain at a sequence number `ragw audit verify` can name.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// Domain separation for the hash input, so an event hash is never valid as any other hash.
const HASH_CONTEXT: &[u8] = b"ragw-audit-event-v1";

/// What a component wants to record; the store gives it a sequence number and chains it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    pub actor: String,
    pub action: String,
    pub device: String,
    pub label: String,
    pub enrollment: String,
    pub details: Value,
}

impl AuditDraft {
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        AuditDraft {
            actor: actor.into(),
            action: action.into(),
            device: String::new(),
            label: String::new(),
            enrollment: String::new(),
            details: Value::Object(Default::default()),
        }
    }

    pub fn device(mut self, device: impl Into<String>) -> Self {
        self.device = device.into();
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn enrollment(mut self, enrollment: impl Into<String>) -> Self {
        self.enrollment = enrollment.into();
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Turns the draft into the event that follows `prev` (sequence `prev_seq`, hash
    /// `prev_hash`).
    pub fn seal(self, prev_seq: i64, prev_hash: [u8; 32], time_unix_micros: i64) -> AuditEvent {
        let mut ev = AuditEvent {
            seq: prev_seq + 1,
            time_unix_micros,
            actor: self.actor,
            action: self.action,
            device: self.device,
            label: self.label,
            enrollment: self.enrollment,
            details: canonical_json(&self.details),
            prev_hash,
            hash: [0; 32],
        };
        ev.hash = ev.compute_hash();
        ev
    }
}

/// A stored audit event. `details` is canonical JSON text, hashed exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: i64,
    pub time_unix_micros: i64,
    pub actor: String,
    pub action: String,
    pub device: String,
    pub label: String,
    pub enrollment: String,
    pub details: String,
    #[serde(with = "hex32")]
    pub prev_hash: [u8; 32],
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

impl AuditEvent {
    /// SHA-256 over a length-prefixed encoding of every field but `hash`, so no two different
    /// events share an encoding.
    pub fn compute_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(HASH_CONTEXT);
        h.update(self.seq.to_be_bytes());
        h.update(self.time_unix_micros.to_be_bytes());
        for field in [
            &self.actor,
            &self.action,
            &self.device,
            &self.label,
            &self.enrollment,
            &self.details,
        ] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.update(self.prev_hash);
        h.finalize().into()
    }
}

/// JSON with object keys sorted and no insignificant whitespace, whatever serde_json's map
/// ordering feature is in the build.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(*k) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Why a chain failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first sequence number at which the chain is wrong (the missing one for a gap).
    pub seq: i64,
    pub problem: String,
}

/// Checks events fed in storage order. Stops judging after the first break.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: [u8; 32],
    checked: i64,
    broken: Option<ChainBreak>,
    started: bool,
    from_genesis: bool,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::from_genesis()
    }
}

impl ChainVerifier {
    /// For a whole log: the first event must be sequence 1 with the genesis hash.
    pub fn from_genesis() -> Self {
        ChainVerifier {
            expected_seq: 1,
            prev_hash: GENESIS_HASH,
            checked: 0,
            broken: None,
            started: false,
            from_genesis: true,
        }
    }

    /// For an excerpt: trust the first event's position, check everything after it.
    pub fn from_any_start() -> Self {
        ChainVerifier {
            from_genesis: false,
            ..Self::from_genesis()
        }
    }

    pub fn push(&mut self, ev: &AuditEvent) {
        if self.broken.is_some() {
            return;
        }
        if !self.started && !self.from_genesis {
            self.expected_seq = ev.seq;
            self.prev_hash = ev.prev_hash;
        }
        self.started = true;
        if ev.seq != self.expected_seq {
            let (seq, problem) = if ev.seq > self.expected_seq {
                (
                    self.expected_seq,
                    format!(
                        "event {} is missing (the next stored event is {})",
                        self.expected_seq, ev.seq
                    ),
                )
            } else {
                (
                    self.expected_seq,
                    format!(
                        "event {} expected but event {} found: rows are out of order or duplicated",
                        self.expected_seq, ev.seq
                    ),
                )
            };
            self.broken = Some(ChainBreak { seq, problem });
            return;
        }
        if ev.prev_hash != self.prev_hash {
            self.broken = Some(ChainBreak {
                seq: ev.seq,
                problem: format!(
                    "event {} does not follow event {}: its previous-hash field does not match (an event was removed, replaced or reordered)",
                    ev.seq,
                    ev.seq - 1
                ),
            });
            return;
        }
        if ev.compute_hash() != ev.hash {
            self.broken = Some(ChainBreak {
                seq: ev.seq,
                problem: format!(
                    "event {} was altered: its content does not match its hash",
                    ev.seq
                ),
            });
            return;
        }
        self.checked += 1;
        self.expected_seq += 1;
        self.prev_hash = ev.hash;
    }

    /// Compares the end of the chain with the recorded head (last sequence number and hash),
    /// which catches events cut off the end.
    pub fn check_head(&mut self, head_seq: i64, head_hash: [u8; 32]) {
        if self.broken.is_some() {
            return;
        }
        let last_seq = self.expected_seq - 1;
        if head_seq > last_seq {
            self.broken = Some(ChainBreak {
                seq: last_seq + 1,
                problem: format!(
                    "the log head records event {head_seq} but the log ends at event {last_seq}: events were removed from the end"
                ),
            });
        } else if head_seq < last_seq {
            self.broken = Some(ChainBreak {
                seq: head_seq + 1,
                problem: format!(
                    "event {} and later are not covered by the log head (head is event {head_seq})",
                    head_seq + 1
                ),
            });
        } else if head_seq > 0 && head_hash != self.prev_hash {
            self.broken = Some(ChainBreak {
                seq: head_seq,
                problem: format!("event {head_seq} does not match the hash the log head records"),
            });
        }
    }

    pub fn checked(&self) -> i64 {
        self.checked
    }

    pub fn last_hash(&self) -> [u8; 32] {
        self.prev_hash
    }

    pub fn result(&self) -> Result<i64, ChainBreak> {
        match &self.broken {
            Some(b) => Err(b.clone()),
            None => Ok(self.checked),
        }
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bytes = hex::decode(&s).map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("a hash must be 32 bytes (64 hex digits)"))
    }
}

/// Parses a 64-hex-digit hash.
pub fn parse_hash_hex(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let (seq, prev) = out
                .last()
                .map(|e| (e.seq, e.hash))
                .unwrap_or((0, GENESIS_HASH));
            out.push(
                AuditDraft::new("tester", "enrollment.received")
                    .device(format!("mac:00:00:00:00:00:{i:02x}"))
                    .details(json!({"b": 1, "a": [1, {"z": 0, "y": 1}]}))
                    .seal(seq, prev, 1_000 + i),
            );
        }
        out
    }

    fn verify(events: &[AuditEvent]) -> Result<i64, ChainBreak> {
        let mut v = ChainVerifier::from_genesis();
        for e in events {
            v.push(e);
        }
        v.result()
    }

    #[test]
    fn canonical_json_sorts_keys() {
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": [1, {"z": 0, "y": "q\""}]})),
            r#"{"a":[1,{"y":"q\"","z":0}],"b":1}"#
        );
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
    }

    #[test]
    fn edit_delete_reorder_are_named() {
        let mut edited = chain(5);
        edited[2].actor = "mallory".into();
        assert_eq!(verify(&edited).unwrap_err().seq, 3);

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(verify(&deleted).unwrap_err().seq, 2);

        let mut reordered = chain(5);
        reordered.swap(1, 3);
        assert_eq!(verify(&reordered).unwrap_err().seq, 2);

        // Renumbered after a swap: the seqs look contiguous, the hashes do not.
        let mut renumbered = chain(5);
        renumbered.swap(1, 3);
        renumbered[1].seq = 2;
        renumbered[3].seq = 4;
        assert_eq!(verify(&renumbered).unwrap_err().seq, 2);
    }

    #[test]
    fn head_catches_truncation() {
        let events = chain(5);
        let mut v = ChainVerifier::from_genesis();
        for e in &events[..4] {
            v.push(e);
        }
        v.check_head(5, events[4].hash);
        assert_eq!(v.result().unwrap_err().seq, 5);
    }

    #[test]
    fn excerpt_verification_starts_anywhere() {
        let events = chain(6);
        let mut v = ChainVerifier::from_any_start();
        for e in &events[2..] {
            v.push(e);
        }
        assert_eq!(v.result(), Ok(4));
    }

    #[test]
    fn serde_round_trip() {
        let e = &chain(1)[0];
        let text = serde_json::to_string(e).unwrap();
        let back: AuditEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, e);
    }
}
