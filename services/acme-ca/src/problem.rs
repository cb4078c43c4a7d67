//! RFC 7807 problem documents with the ACME error types of RFC 8555 §6.7 (and the ones later
//! documents registered).

use serde_json::{Value, json};

/// ACME error types (`urn:ietf:params:acme:error:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    AccountDoesNotExist,
    AlreadyRevoked,
    BadCsr,
    BadNonce,
    BadPublicKey,
    BadRevocationReason,
    BadSignatureAlgorithm,
    Caa,
    Connection,
    Dns,
    ExternalAccountRequired,
    IncorrectResponse,
    InvalidContact,
    /// draft-aaron-acme-profiles.
    InvalidProfile,
    Malformed,
    OrderNotReady,
    RateLimited,
    RejectedIdentifier,
    ServerInternal,
    Tls,
    Unauthorized,
    UnsupportedContact,
    UnsupportedIdentifier,
    UserActionRequired,
}

impl ProblemType {
    pub fn name(self) -> &'static str {
        use ProblemType::*;
        match self {
            AccountDoesNotExist => "accountDoesNotExist",
            AlreadyRevoked => "alreadyRevoked",
            BadCsr => "badCSR",
            BadNonce => "badNonce",
            BadPublicKey => "badPublicKey",
            BadRevocationReason => "badRevocationReason",
            BadSignatureAlgorithm => "badSignatureAlgorithm",
            Caa => "caa",
            Connection => "connection",
            Dns => "dns",
            ExternalAccountRequired => "externalAccountRequired",
            IncorrectResponse => "incorrectResponse",
            InvalidContact => "invalidContact",
            InvalidProfile => "invalidProfile",
            Malformed => "malformed",
            OrderNotReady => "orderNotReady",
            RateLimited => "rateLimited",
            RejectedIdentifier => "rejectedIdentifier",
            ServerInternal => "serverInternal",
            Tls => "tls",
            Unauthorized => "unauthorized",
            UnsupportedContact => "unsupportedContact",
            UnsupportedIdentifier => "unsupportedIdentifier",
            UserActionRequired => "userActionRequired",
        }
    }

    pub fn urn(self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.name())
    }

    fn default_status(self) -> u16 {
        use ProblemType::*;
        match self {
            Unauthorized | OrderNotReady | UserActionRequired => 403,
            RateLimited => 429,
            ServerInternal => 500,
            _ => 400,
        }
    }
}

/// One refused identifier of a request: its problem, detail and `(type, value)`.
pub type Subproblem = (ProblemType, String, Option<(String, String)>);

/// A refusal, as sent to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub kind: ProblemType,
    pub detail: String,
    pub status: u16,
    /// RFC 8555 §6.7.1: one problem per identifier when several were refused.
    pub subproblems: Vec<Subproblem>,
    /// `badSignatureAlgorithm`: what is accepted (RFC 8555 §6.2).
    pub algorithms: Option<Vec<&'static str>>,
    /// `Location` to send with the problem (409 on key change, existing account).
    pub location: Option<String>,
    /// `Retry-After` seconds (`rateLimited`).
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            status: kind.default_status(),
            subproblems: Vec::new(),
            algorithms: None,
            location: None,
            retry_after: None,
        }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Problem::new(ProblemType::Malformed, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(ProblemType::Unauthorized, detail)
    }

    pub fn not_found(what: &str) -> Self {
        Problem::new(ProblemType::Malformed, format!("no such {what}")).status(404)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(ProblemType::ServerInternal, detail)
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "type": self.kind.urn(),
            "detail": self.detail,
            "status": self.status,
        });
        if let Some(obj) = v.as_object_mut() {
            if !self.subproblems.is_empty() {
                let subs: Vec<Value> = self
                    .subproblems
                    .iter()
                    .map(|(k, d, ident)| {
                        let mut s = json!({"type": k.urn(), "detail": d});
                        if let (Some((t, val)), Some(o)) = (ident, s.as_object_mut()) {
                            o.insert("identifier".into(), json!({"type": t, "value": val}));
                        }
                        s
                    })
                    .collect();
                obj.insert("subproblems".into(), Value::Array(subs));
            }
            if let Some(algs) = &self.algorithms {
                obj.insert("algorithms".into(), json!(algs));
            }
        }
        v
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let mut p = Problem::new(ProblemType::RejectedIdentifier, "no");
        p.subproblems.push((
            ProblemType::RejectedIdentifier,
            "localhost".into(),
            Some(("dns".into(), "localhost".into())),
        ));
        let v = p.to_json();
        assert_eq!(v["type"], "urn:ietf:params:acme:error:rejectedIdentifier");
        assert_eq!(v["status"], 400);
        assert_eq!(v["subproblems"][0]["identifier"]["value"], "localhost");
        assert_eq!(
            Problem::new(ProblemType::OrderNotReady, "x").status,
            403,
            "RFC 8555 §7.4"
        );
    }
}
