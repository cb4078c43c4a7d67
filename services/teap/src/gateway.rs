//! The TEAP gateway: a [`Handler`] for the RADIUS server core that runs one TEAP conversation
//! per device and decides it with the same device authentication as EST (`ragw-device-auth`)
//! and the registrar.
//!
//! - An EAP-Response/Identity (RFC 3748 §5.1) without State starts a conversation; the label is
//!   the outer identity's realm (`…@<label>`) or `default_label`. The reply is an
//!   Access-Challenge carrying the TEAP Start and a fresh random State, which the NAS echoes
//!   (RFC 2865 §5.24) and which keys the conversation from then on.
//! - Conversations are bounded in number and lifetime; an unknown or expired State is
//!   refused with EAP-Failure.
//! - A step that needs the registrar (or argon2) is deferred: the work runs in a task, the
//!   conversation is marked busy (a new packet for it is discarded, retransmissions are the
//!   core's), and the reply goes to the UDP loop through its [`Completer`].
//! - Access-Accept carries EAP-Success, MS-MPPE-Recv/Send-Key (RFC 2548, from the MSK) and
//!   User-Name; Access-Reject carries EAP-Failure. Every accept and every refusal is audited
//!   through the registrar with the NAS, the Calling-Station-Id and the reason.

pub mod api;
mod metrics;
mod registrar;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ragw_device_auth::guard::{AuthGuard, NotChecked};
use ragw_device_auth::{CertVerifiers, PasswordChecker, certificate_identity, check_validity};
use ragw_domain::{DeviceIdentity, IdentityKind, KeyType};
use ragw_pki::{CsrAttrsRequest, certs_only, encode_csr_attrs};
use ragw_proto::registrar::v1 as pb;
use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tonic::{Code as GrpcCode, Status};

pub use api::{
    Answer, Finish, InnerMethod, Next, Provisioning, Question, ServerEngine, SessionKeys,
    TeapConversation, TeapEngine,
};
pub use metrics::TeapMetrics;
pub use registrar::{GrpcRegistrar, Registrar, RegistrarFuture};

use crate::config::{CertificateProvisioning, PasswordMethod, TeapConfig, TeapLabel};
use crate::eap;
use crate::radius::{self, Attribute, Code, Packet, attr};
use crate::radius_server::udp::Completer;
use crate::radius_server::{Client, Handled, Handler, Reply, RequestKey, Secret};
use crate::tlv::error_code;

/// Random octets (State values, MPPE salts). The binary passes the system's CSPRNG.
pub type RandomSource = Arc<dyn Fn(&mut [u8]) + Send + Sync>;
/// The monotonic clock; tests pass their own.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// RFC 9930 §4.2.6 "Unspecified authentication failure" (warning range). Sent for a wrong
/// password rather than 1031 "User account credentials incorrect", which the RFC advises
/// against because it tells an attacker which user names exist.
pub const UNSPECIFIED_AUTHENTICATION_FAILURE: u32 = 1003;

const STATE_LEN: usize = 16;
/// The EAP-GTC message (RFC 3748 §5.6: "a displayable message"); hostapd sends the same.
const GTC_PROMPT: &[u8] = b"Password";
type StateId = [u8; STATE_LEN];

/// Audit records in flight at once; beyond it they are counted, not sent.
const MAX_PENDING_AUDIT: usize = 64;
/// Sources remembered for the per-NAS refusal audit budget.
const MAX_REFUSAL_SOURCES: usize = 10_000;
/// Reply-Message is one attribute (RFC 2865 §5.18): at most 253 octets.
const MAX_REPLY_MESSAGE: usize = 253;

/// Building the gateway failed: the configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GatewayError(pub String);

/// The TEAP gateway. `E` starts TEAP conversations (the real `teap_server`, or a test double).
pub struct TeapGateway<E: TeapEngine> {
    shared: Arc<Shared<E>>,
    completer: Completer,
}

struct Shared<E: TeapEngine> {
    engine: E,
    registrar: Arc<dyn Registrar>,
    config: TeapConfig,
    verifiers: CertVerifiers,
    passwords: PasswordChecker,
    /// Guessing bounds per user name and gateway-wide, as EST applies them.
    guard: AuthGuard,
    argon2: bool,
    table: Mutex<Table<E::Conversation>>,
    refusals: Mutex<RefusalBudget>,
    audit_slots: Arc<Semaphore>,
    metrics: TeapMetrics,
    random: RandomSource,
    clock: Clock,
}

/// What the gateway knows about a conversation besides the TEAP state.
#[derive(Debug, Clone)]
struct Context {
    label: String,
    /// The configured RADIUS client the conversation started through; only it may continue
    /// the conversation (a State seen by one NAS is no key for another).
    client: String,
    outer_identity: String,
    source: SocketAddr,
    nas: String,
    calling_station_id: String,
    /// When the EAP-Response/Identity started the conversation (the latency metric).
    started: Option<Instant>,
    device: Option<DeviceIdentity>,
    /// The user name a password came with, before it was checked: what a refusal names, so
    /// an auditor following password guessing sees the name tried, not the outer identity.
    claimed_user: Option<String>,
    /// The ragw-issued certificate the device authenticated with, for GetAssignment/Enroll.
    current_certificate: Option<Vec<u8>>,
    authenticated_by: Option<&'static str>,
    assignment: Option<pb::Assignment>,
    enrollment_id: Option<String>,
    provisioning: ProvisioningOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProvisioningOutcome {
    NotOffered,
    Unavailable,
    Offered,
    Issued,
    Failed,
}

impl ProvisioningOutcome {
    fn metric_name(self) -> &'static str {
        match self {
            ProvisioningOutcome::NotOffered => "not_offered",
            ProvisioningOutcome::Unavailable => "unavailable",
            ProvisioningOutcome::Offered => "declined",
            ProvisioningOutcome::Issued => "issued",
            ProvisioningOutcome::Failed => "failed",
        }
    }
}

struct Held<C> {
    conversation: C,
    context: Context,
}

enum Slot<C> {
    Idle(Box<Held<C>>),
    /// Its current step is being worked on (a deferred request).
    Busy,
}

struct Entry<C> {
    slot: Slot<C>,
    expires: Instant,
}

/// Conversations by State, with expiry in insertion order (all share one lifetime).
struct Table<C> {
    entries: HashMap<StateId, Entry<C>>,
    order: VecDeque<(Instant, StateId)>,
}

impl<C> Table<C> {
    fn new() -> Self {
        Table {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(expires, state)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            if self
                .entries
                .get(&state)
                .is_some_and(|e| e.expires == expires)
            {
                self.entries.remove(&state);
            }
        }
    }

    fn insert(&mut self, state: StateId, held: Held<C>, expires: Instant) {
        self.entries.insert(
            state,
            Entry {
                slot: Slot::Idle(Box::new(held)),
                expires,
            },
        );
        self.order.push_back((expires, state));
    }
}

/// Refusals audited one by one per source and interval; the rest only counted, so a flood of
/// junk cannot become a flood of audit rows.
struct RefusalBudget {
    per_source: u32,
    interval: Duration,
    sources: HashMap<IpAddr, (Instant, u32)>,
}

impl RefusalBudget {
    fn admit(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.sources.len() >= MAX_REFUSAL_SOURCES && !self.sources.contains_key(&source) {
            self.sources
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < self.interval);
            if self.sources.len() >= MAX_REFUSAL_SOURCES {
                return false;
            }
        }
        let (start, count) = self.sources.entry(source).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= self.interval {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.per_source
    }
}

/// What a reply needs from its request beyond the key.
#[derive(Clone)]
struct RequestInfo {
    key: RequestKey,
    secret: Secret,
    authenticator: [u8; radius::AUTHENTICATOR_LEN],
}

impl<E: TeapEngine> TeapGateway<E> {
    /// A gateway over `config` (validated here). `completer` is the sending side of the UDP
    /// shell's completion channel.
    pub fn new(
        config: TeapConfig,
        engine: E,
        registrar: Arc<dyn Registrar>,
        completer: Completer,
        metrics: TeapMetrics,
        random: RandomSource,
        clock: Clock,
    ) -> Result<TeapGateway<E>, GatewayError> {
        config.validate().map_err(|e| GatewayError(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifiers = CertVerifiers::new(
            config
                .labels
                .iter()
                .filter_map(|l| l.client_cert.as_ref().map(|c| (l.label.as_str(), c))),
            &provider,
        )
        .map_err(GatewayError)?;
        let argon2 = config
            .labels
            .iter()
            .any(|l| l.basic.as_ref().is_some_and(|b| b.uses_argon2()));
        let refusals = RefusalBudget {
            per_source: config.limits.refusal_audit_per_source,
            interval: config.limits.refusal_audit_interval,
            sources: HashMap::new(),
        };
        Ok(TeapGateway {
            shared: Arc::new(Shared {
                engine,
                registrar,
                verifiers,
                passwords: PasswordChecker::new(),
                guard: AuthGuard::new(config.limits.guard.clone()),
                argon2,
                table: Mutex::new(Table::new()),
                refusals: Mutex::new(refusals),
                audit_slots: Arc::new(Semaphore::new(MAX_PENDING_AUDIT)),
                metrics,
                random,
                clock,
                config,
            }),
            completer,
        })
    }

    /// Conversations held now (expired ones included until the next request sweeps them).
    pub fn open_conversations(&self) -> usize {
        self.shared.lock_table().entries.len()
    }

    fn begin(
        &self,
        request: RequestInfo,
        radius: &Packet,
        client: &Client,
        identifier: u8,
        identity: Vec<u8>,
    ) -> Handled {
        let shared = &self.shared;
        let now = (shared.clock)();
        let mut context = Context::new(radius, client, request.key.source, &identity);
        context.started = Some(now);
        let Some(label) = shared.config.label_for_identity(&identity) else {
            return shared.refuse_early(
                &context,
                Some(identifier),
                format!(
                    "the outer identity {:?} names no configured label and no default_label is \
                     set",
                    context.outer_identity
                ),
            );
        };
        context.label = label.label.clone();
        let mut table = shared.lock_table();
        table.expire(now);
        if table.entries.len() >= shared.config.limits.max_conversations {
            drop(table);
            shared.metrics.drop("conversation_limit");
            return shared.refuse_early(
                &context,
                Some(identifier),
                "too many TEAP conversations are in progress (teap.limits.max_conversations); \
                 try again later"
                    .into(),
            );
        }
        let mut state = [0u8; STATE_LEN];
        loop {
            (shared.random)(&mut state);
            if !table.entries.contains_key(&state) {
                break;
            }
        }
        let fragment = max_tls_fragment(radius);
        let (conversation, start) =
            match shared
                .engine
                .start(identifier.wrapping_add(1), identity, fragment)
            {
                Ok(started) => started,
                Err(e) => {
                    drop(table);
                    tracing::error!(error = %e, "a TEAP conversation could not start");
                    return shared.refuse_early(
                        &context,
                        Some(identifier),
                        format!("the TEAP server could not start a conversation: {e}"),
                    );
                }
            };
        tracing::debug!(label = %context.label, nas = %context.nas,
            station = %context.calling_station_id, "TEAP conversation started");
        table.insert(
            state,
            Held {
                conversation,
                context,
            },
            now + shared.config.limits.conversation_lifetime,
        );
        shared.metrics.set_open(table.entries.len());
        Handled::Reply(challenge(&start, &state))
    }

    fn resume(
        &self,
        request: RequestInfo,
        radius: &Packet,
        client: &Client,
        state: &[u8],
        eap_packet: &[u8],
        identifier: u8,
    ) -> Handled {
        let shared = &self.shared;
        let now = (shared.clock)();
        let held = {
            let mut table = shared.lock_table();
            table.expire(now);
            let entry = StateId::try_from(state)
                .ok()
                .and_then(|s| table.entries.get_mut(&s));
            match entry {
                None => {
                    shared.metrics.set_open(table.entries.len());
                    drop(table);
                    let context = Context::new(radius, client, request.key.source, b"");
                    return shared.refuse_early(
                        &context,
                        Some(identifier),
                        "the State names no TEAP conversation in progress (unknown, finished or \
                         expired); start again with an EAP-Response/Identity"
                            .into(),
                    );
                }
                Some(Entry {
                    slot: Slot::Idle(held),
                    ..
                }) if held.context.client != client.name => {
                    drop(table);
                    let context = Context::new(radius, client, request.key.source, b"");
                    return shared.refuse_early(
                        &context,
                        Some(identifier),
                        "the State belongs to a conversation another RADIUS client started".into(),
                    );
                }
                Some(entry) => match std::mem::replace(&mut entry.slot, Slot::Busy) {
                    Slot::Idle(held) => held,
                    Slot::Busy => {
                        shared.metrics.drop("conversation_busy");
                        return Handled::Discard;
                    }
                },
            }
        };
        let Ok(state) = StateId::try_from(state) else {
            return Handled::Discard;
        };
        let mut held = held;
        let next = held.conversation.receive(eap_packet);
        self.after(request, state, held, next)
    }

    /// Acts on what the conversation wants next; a question goes to a task.
    fn after(
        &self,
        request: RequestInfo,
        state: StateId,
        held: Box<Held<E::Conversation>>,
        next: Next,
    ) -> Handled {
        let shared = &self.shared;
        match next {
            Next::Send(eap) => {
                shared.put_back(state, held);
                Handled::Reply(challenge(&eap, &state))
            }
            Next::Discard(why) => {
                tracing::debug!(reason = %why, "TEAP packet discarded");
                shared.put_back(state, held);
                Handled::Discard
            }
            Next::Finished(finish) => {
                shared.remove(state);
                Handled::Reply(shared.finish(&request, held.context, finish))
            }
            Next::Ask(question) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    shared.remove(state);
                    return Handled::Reply(reject(None, "the gateway runs outside its runtime"));
                };
                let shared = Arc::clone(&self.shared);
                let completer = self.completer.clone();
                runtime.spawn(async move {
                    let key = request.key;
                    if let Some(reply) = shared.drive(request, state, held, question).await
                        && !completer.complete(key, reply)
                    {
                        tracing::debug!("the UDP loop stopped before a deferred TEAP reply");
                    }
                });
                Handled::Deferred
            }
        }
    }
}

impl<E: TeapEngine> Handler for TeapGateway<E> {
    fn handle(&mut self, key: RequestKey, client: &Client, request: &Packet) -> Handled {
        let info = RequestInfo {
            key,
            secret: client.secret.clone(),
            authenticator: request.authenticator,
        };
        let early = |why: String, identifier: Option<u8>| {
            let context = Context::new(request, client, key.source, b"");
            self.shared.refuse_early(&context, identifier, why)
        };
        let eap_bytes = match request.eap_message() {
            Ok(Some(eap)) => eap,
            Ok(None) => {
                return early(
                    "the Access-Request carries no EAP-Message; this server answers only \
                     EAP-TEAP"
                        .into(),
                    None,
                );
            }
            Err(e) => {
                return early(
                    format!("its EAP-Message attributes are malformed ({e})"),
                    None,
                );
            }
        };
        let packet = match eap::Packet::parse(&eap_bytes) {
            Ok(p) => p,
            Err(e) => return early(format!("the EAP packet is malformed ({e})"), None),
        };
        if packet.code != eap::Code::Response {
            return early(
                "a NAS sends EAP-Responses only; this packet is not one".into(),
                Some(packet.identifier),
            );
        }
        match (request.state(), packet.body) {
            (None, eap::Body::Identity(identity)) => {
                self.begin(info, request, client, packet.identifier, identity)
            }
            (None, _) => early(
                "a conversation starts with an EAP-Response/Identity (RFC 3748 §5.1) and no \
                 State"
                    .into(),
                Some(packet.identifier),
            ),
            (Some(state), _) => {
                let state = state.to_vec();
                self.resume(info, request, client, &state, &eap_bytes, packet.identifier)
            }
        }
    }
}

impl Context {
    fn new(radius: &Packet, client: &Client, source: SocketAddr, identity: &[u8]) -> Context {
        let text = |t: u8, n: usize| {
            radius
                .attribute(t)
                .map(|v| clip(&String::from_utf8_lossy(v), n))
                .unwrap_or_default()
        };
        let mut nas = format!("client {}", client.name);
        let nas_identifier = text(attr::NAS_IDENTIFIER, 64);
        if !nas_identifier.is_empty() {
            nas.push_str(&format!(", NAS-Identifier {nas_identifier}"));
        }
        if let Some(ip) = radius
            .attribute(attr::NAS_IP_ADDRESS)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
        {
            nas.push_str(&format!(", NAS-IP-Address {}", Ipv4Addr::from(ip)));
        }
        let outer_identity = if identity.is_empty() {
            text(attr::USER_NAME, 128)
        } else {
            clip(&String::from_utf8_lossy(identity), 128)
        };
        Context {
            label: String::new(),
            client: client.name.clone(),
            outer_identity,
            source,
            nas,
            calling_station_id: text(attr::CALLING_STATION_ID, 64),
            started: None,
            device: None,
            claimed_user: None,
            current_certificate: None,
            authenticated_by: None,
            assignment: None,
            enrollment_id: None,
            provisioning: ProvisioningOutcome::NotOffered,
        }
    }
}

impl<E: TeapEngine> Shared<E> {
    fn lock_table(&self) -> std::sync::MutexGuard<'_, Table<E::Conversation>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put_back(&self, state: StateId, held: Box<Held<E::Conversation>>) {
        let mut table = self.lock_table();
        match table.entries.get_mut(&state) {
            Some(entry) => entry.slot = Slot::Idle(held),
            // It expired while its step was worked on; the next packet gets "unknown State".
            None => tracing::debug!("TEAP conversation expired during a deferred step"),
        }
    }

    fn remove(&self, state: StateId) {
        let mut table = self.lock_table();
        table.entries.remove(&state);
        self.metrics.set_open(table.entries.len());
    }

    /// Works out the answers (registrar, argon2) until the conversation has something to send.
    /// `None`: nothing to send (the conversation discarded the step).
    async fn drive(
        self: Arc<Self>,
        request: RequestInfo,
        state: StateId,
        mut held: Box<Held<E::Conversation>>,
        first: Question,
    ) -> Option<Reply> {
        let mut question = first;
        loop {
            let answer = self.answer(&mut held.context, question).await;
            match held.conversation.answer(answer) {
                Next::Ask(q) => question = q,
                Next::Send(eap) => {
                    self.put_back(state, held);
                    return Some(challenge(&eap, &state));
                }
                Next::Discard(why) => {
                    tracing::debug!(reason = %why, "TEAP conversation discarded its step");
                    self.put_back(state, held);
                    return None;
                }
                Next::Finished(finish) => {
                    self.remove(state);
                    return Some(self.finish(&request, held.context, finish));
                }
            }
        }
    }

    async fn answer(self: &Arc<Self>, context: &mut Context, question: Question) -> Answer {
        let Some(label) = self.config.label(&context.label).cloned() else {
            return Answer::Reject {
                error_code: error_code::UNEXPECTED_TLVS_EXCHANGED,
                reason: "the conversation's label is no longer configured".into(),
            };
        };
        match question {
            Question::TunnelUp { peer_certificates } => {
                self.tunnel_up(context, &label, peer_certificates).await
            }
            // The password is zeroized when the question drops, after the check.
            Question::CheckPassword { username, password } => {
                self.check_password(context, &label, &username, &password)
                    .await
            }
            Question::Enroll { csr_der } => self.enroll(context, &label, csr_der).await,
        }
    }

    /// Phase 1 is done: a device certificate chained to the label's anchors, else a
    /// certificate ragw issued (the registrar checks it), else a password if the label takes
    /// one, by Basic-Password-Auth or inner EAP-GTC as its `password_method` says.
    async fn tunnel_up(
        self: &Arc<Self>,
        context: &mut Context,
        label: &TeapLabel,
        peer_certificates: Vec<Vec<u8>>,
    ) -> Answer {
        let chain: Vec<CertificateDer<'static>> = peer_certificates
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let mut problem = None;
        if let Some(leaf) = chain.first() {
            if let Some(cc) = &label.client_cert {
                match self
                    .verifiers
                    .verify(&label.label, &chain, SystemTime::now())
                {
                    Ok(()) => {
                        let identity =
                            certificate_identity(leaf.as_ref(), cc.identity).and_then(|value| {
                                DeviceIdentity::new(cc.identity_kind, &value).map_err(|e| {
                                    format!(
                                        "its {} {:?} is not a valid device identifier: {e}",
                                        cc.identity,
                                        clip(&value, 80)
                                    )
                                })
                            });
                        match identity {
                            Ok(device) => {
                                context.device = Some(device);
                                context.authenticated_by = Some("device certificate");
                                return self.authenticated(context, label).await;
                            }
                            Err(e) => {
                                problem =
                                    Some(format!("the device certificate is trusted, but {e}"))
                            }
                        }
                    }
                    Err(e) => {
                        problem = Some(format!("the device certificate was not accepted: {e}"))
                    }
                }
            }
            if check_validity(leaf.as_ref(), SystemTime::now()).is_ok() {
                let request = pb::GetAssignmentRequest {
                    device: None,
                    profile: label.profile.clone(),
                    current_certificate_der: leaf.as_ref().to_vec(),
                };
                match self.call(self.registrar.get_assignment(request)).await {
                    Ok(assignment) => {
                        // The registrar names the device the certificate was issued to: the
                        // Access-Accept's User-Name and the audit carry it.
                        context.device = assignment.device.as_ref().and_then(identity_from_pb);
                        context.current_certificate = Some(leaf.as_ref().to_vec());
                        context.authenticated_by = Some("certificate ragw issued");
                        context.assignment = Some(assignment);
                        return self.authenticated(context, label).await;
                    }
                    Err(status) => {
                        let why = format!(
                            "the certificate is not a current one ragw issued for profile {:?} \
                             ({})",
                            label.profile,
                            clip(status.message(), 200)
                        );
                        problem = Some(match problem {
                            Some(p) => format!("{p}; {why}"),
                            None => why,
                        });
                    }
                }
            }
        }
        if label.basic.is_some() {
            // Either way the password comes back as CheckPassword: one check for both.
            return match label.password_method {
                PasswordMethod::Basic => Answer::RequirePassword { prompt: Vec::new() },
                PasswordMethod::EapGtc => Answer::RequireInnerEap {
                    method: InnerMethod::Gtc,
                    prompt: GTC_PROMPT.to_vec(),
                },
            };
        }
        let (error_code, reason) = match problem {
            Some(p) => (error_code::CLIENT_CERT_REJECTED, p),
            None => (
                error_code::CLIENT_CERT_NOT_SUPPLIED,
                format!(
                    "label {:?} authenticates devices by certificate and none was presented",
                    label.label
                ),
            ),
        };
        Answer::Reject { error_code, reason }
    }

    async fn check_password(
        self: &Arc<Self>,
        context: &mut Context,
        label: &TeapLabel,
        username: &[u8],
        password: &[u8],
    ) -> Answer {
        let refuse = |reason: String| Answer::Reject {
            error_code: UNSPECIFIED_AUTHENTICATION_FAILURE,
            reason,
        };
        let Some(basic) = label.basic.clone() else {
            return refuse(format!(
                "label {:?} does not accept passwords; present a device certificate",
                label.label
            ));
        };
        let Ok(user) = std::str::from_utf8(username) else {
            return refuse("the user name is not UTF-8".into());
        };
        context.claimed_user = Some(clip(user, 128));
        let device = match DeviceIdentity::new(basic.identity_kind, user) {
            Ok(d) => d,
            Err(e) => {
                return refuse(format!(
                    "the user name {:?} is not a valid device identifier ({} expected): {e}",
                    clip(user, 80),
                    kind_name(basic.identity_kind)
                ));
            }
        };
        // Bounded per user name (across NASes) and gateway-wide before any password is
        // checked, keyed by label and name as the device is.
        let guard_key = format!("{}\0{}", label.label, device.value());
        if let Err(why) = self.guard.may_check(&guard_key, (self.clock)()) {
            let (reason, wait) = match why {
                NotChecked::UserBackoff(wait) => ("user_backoff", wait),
                NotChecked::GlobalBound(wait) => ("global_bound", wait),
            };
            self.metrics.password_not_checked(reason);
            return refuse(format!(
                "the password was not checked: {} wrong passwords came too fast; try again in \
                 {} s",
                if reason == "user_backoff" {
                    "this user name's"
                } else {
                    "the gateway's"
                },
                wait.as_secs().max(1)
            ));
        }
        let ok = if self.argon2 {
            let shared = Arc::clone(self);
            let label_name = label.label.clone();
            let value = device.value().to_string();
            let password = zeroize::Zeroizing::new(password.to_vec());
            tokio::task::spawn_blocking(move || {
                shared
                    .passwords
                    .check(&label_name, &basic, &value, &password)
            })
            .await
            .unwrap_or(false)
        } else {
            self.passwords
                .check(&label.label, &basic, device.value(), password)
        };
        if !ok {
            self.guard.record_failure(&guard_key, (self.clock)());
            return refuse(format!(
                "wrong user name or password for label {:?}",
                label.label
            ));
        }
        self.guard.record_success(&guard_key);
        context.device = Some(device);
        context.authenticated_by = Some(match label.password_method {
            PasswordMethod::Basic => "password",
            PasswordMethod::EapGtc => "password (EAP-GTC)",
        });
        self.authenticated(context, label).await
    }

    /// The peer is authenticated: offer provisioning as the label says, with the CSR
    /// attributes of the device's assignment.
    async fn authenticated(self: &Arc<Self>, context: &mut Context, label: &TeapLabel) -> Answer {
        if label.certificate == CertificateProvisioning::Never {
            context.provisioning = ProvisioningOutcome::NotOffered;
            return Answer::Authenticated { provisioning: None };
        }
        let required = label.certificate == CertificateProvisioning::Required;
        let assignment = match context.assignment.take() {
            Some(a) => Ok(a),
            None => {
                let request = pb::GetAssignmentRequest {
                    device: context.device.as_ref().map(identity_to_pb),
                    profile: label.profile.clone(),
                    current_certificate_der: context
                        .current_certificate
                        .clone()
                        .unwrap_or_default(),
                };
                self.call(self.registrar.get_assignment(request))
                    .await
                    .map_err(|s| format!("the registrar gave no assignment: {}", s.message()))
            }
        };
        let attributes = assignment.and_then(|a| {
            let request = CsrAttrsRequest {
                dns_names: a.names.clone(),
                key: a
                    .allowed_keys
                    .iter()
                    .find_map(|k| KeyType::from_str(k).ok()),
                challenge_password: false,
            };
            encode_csr_attrs(&request).map_err(|e| format!("cannot encode the CSR attributes: {e}"))
        });
        match attributes {
            Ok(csr_attributes_der) => {
                context.provisioning = ProvisioningOutcome::Offered;
                Answer::Authenticated {
                    provisioning: Some(Provisioning {
                        csr_attributes_der,
                        required,
                    }),
                }
            }
            Err(e) if !required => {
                tracing::warn!(label = %label.label, error = %e,
                    "certificate provisioning not offered; network authentication goes on");
                context.provisioning = ProvisioningOutcome::Unavailable;
                Answer::Authenticated { provisioning: None }
            }
            Err(e) => {
                context.provisioning = ProvisioningOutcome::Unavailable;
                Answer::Reject {
                    error_code: error_code::INTERNAL_CA_ERROR,
                    reason: format!("label {:?} requires a certificate, but {e}", label.label),
                }
            }
        }
    }

    /// Enroll with the registrar and hold the exchange for the certificate, up to the bound.
    async fn enroll(
        self: &Arc<Self>,
        context: &mut Context,
        label: &TeapLabel,
        csr_der: Vec<u8>,
    ) -> Answer {
        let failed = |context: &mut Context, error_code: u32, reason: String| {
            context.provisioning = ProvisioningOutcome::Failed;
            Answer::EnrollFailed { error_code, reason }
        };
        if label.certificate == CertificateProvisioning::Never {
            return failed(
                context,
                error_code::GENERAL_PKI_ERROR,
                format!("label {:?} does not issue certificates", label.label),
            );
        }
        let deadline = (self.clock)() + self.config.limits.enrollment_hold;
        let request = pb::EnrollRequest {
            csr_der,
            device: context.device.as_ref().map(identity_to_pb),
            protocol: pb::Protocol::Teap as i32,
            profile: label.profile.clone(),
            current_certificate_der: context.current_certificate.clone().unwrap_or_default(),
        };
        let mut enrollment = match self.call(self.registrar.enroll(request)).await {
            Ok(pb::EnrollResponse {
                enrollment: Some(e),
                ..
            }) => e,
            Ok(_) => {
                return failed(
                    context,
                    error_code::INTERNAL_CA_ERROR,
                    "the registrar answered without an enrollment".into(),
                );
            }
            Err(status) => {
                let (code, reason) = status_error(&status);
                return failed(context, code, reason);
            }
        };
        context.enrollment_id = Some(enrollment.id.clone());
        loop {
            let id = enrollment.id.clone();
            let state = pb::EnrollmentState::try_from(enrollment.state)
                .unwrap_or(pb::EnrollmentState::Unspecified);
            match state {
                pb::EnrollmentState::Issued => {
                    return match certs_only(&enrollment.certificate_chain) {
                        Ok(pkcs7_der) if !enrollment.certificate_chain.is_empty() => {
                            context.provisioning = ProvisioningOutcome::Issued;
                            Answer::Issued { pkcs7_der }
                        }
                        Ok(_) => failed(
                            context,
                            error_code::INTERNAL_CA_ERROR,
                            format!("enrollment {id} is issued but holds no certificate"),
                        ),
                        Err(e) => failed(
                            context,
                            error_code::INTERNAL_CA_ERROR,
                            format!("enrollment {id}: the certificate cannot be packaged: {e}"),
                        ),
                    };
                }
                pb::EnrollmentState::Rejected | pb::EnrollmentState::Failed => {
                    let code = class_error_code(enrollment.failure_class);
                    return failed(
                        context,
                        code,
                        format!(
                            "enrollment {id} {}: {}; a new attempt needs a new CSR",
                            if state == pb::EnrollmentState::Rejected {
                                "was rejected"
                            } else {
                                "failed"
                            },
                            or_unknown(&enrollment.failure_detail)
                        ),
                    );
                }
                pb::EnrollmentState::AwaitingApproval => {
                    return failed(
                        context,
                        error_code::GENERAL_PKI_ERROR,
                        format!(
                            "enrollment {id} is awaiting approval by an operator; \
                             authenticate again with the same CSR once it is approved"
                        ),
                    );
                }
                _ => {}
            }
            let remaining = deadline.saturating_duration_since((self.clock)());
            if remaining.is_zero() {
                return failed(
                    context,
                    error_code::GENERAL_PKI_ERROR,
                    format!(
                        "enrollment {id} is still in progress after {} s; authenticate again \
                         with the same CSR to get the certificate",
                        self.config.limits.enrollment_hold.as_secs()
                    ),
                );
            }
            let request = pb::WaitEnrollmentRequest {
                id: id.clone(),
                timeout_millis: u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX),
            };
            let bound = remaining + self.config.limits.registrar_timeout;
            enrollment =
                match tokio::time::timeout(bound, self.registrar.wait_enrollment(request)).await {
                    Ok(Ok(e)) => e,
                    Ok(Err(status)) => {
                        let (code, reason) = status_error(&status);
                        return failed(context, code, reason);
                    }
                    Err(_) => {
                        return failed(
                            context,
                            error_code::INTERNAL_CA_ERROR,
                            format!("the registrar did not answer the wait for enrollment {id}"),
                        );
                    }
                };
        }
    }

    /// One registrar call within the registrar timeout.
    async fn call<T>(&self, call: RegistrarFuture<'_, T>) -> Result<T, Status> {
        match tokio::time::timeout(self.config.limits.registrar_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(
                "the registrar did not answer in time",
            )),
        }
    }

    /// The final reply, audited.
    fn finish(&self, request: &RequestInfo, context: Context, finish: Finish) -> Reply {
        self.metrics
            .provisioning(context.provisioning.metric_name());
        if let Some(started) = context.started {
            self.metrics
                .conversation_finished(finish.accepted, (self.clock)() - started);
        }
        if !finish.accepted {
            let reason = if finish.reason.is_empty() {
                "the TEAP conversation failed".to_string()
            } else {
                finish.reason.clone()
            };
            self.audit_refusal(&context, finish.error_code.unwrap_or(0), &reason, true);
            self.metrics.decision(false);
            return reject(Some(finish.eap), &reason);
        }
        let accept = self.accept_attributes(request, &context, &finish);
        match accept {
            Ok(attributes) => {
                self.audit_access(&context);
                self.metrics.decision(true);
                tracing::info!(label = %context.label, device = ?context.device.as_ref().map(|d| d.to_string()),
                    nas = %context.nas, station = %context.calling_station_id,
                    by = context.authenticated_by.unwrap_or("-"), "TEAP access accepted");
                Reply {
                    code: Code::AccessAccept,
                    attributes,
                }
            }
            Err(why) => {
                tracing::error!(error = %why, "TEAP accept could not be built; rejecting");
                self.audit_refusal(&context, 0, &why, true);
                self.metrics.decision(false);
                let identifier = finish.eap.get(1).copied().unwrap_or(0);
                reject(Some(eap_failure(identifier)), &why)
            }
        }
    }

    fn accept_attributes(
        &self,
        request: &RequestInfo,
        context: &Context,
        finish: &Finish,
    ) -> Result<Vec<Attribute>, String> {
        let keys = finish
            .keys
            .as_ref()
            .ok_or("the conversation succeeded without session keys")?;
        let mut salts = [0u8; 4];
        (self.random)(&mut salts);
        // RFC 2548: each salt unique; the encoder sets the high bit, so differ below it.
        if (salts[0] | 0x80, salts[1]) == (salts[2] | 0x80, salts[3]) {
            salts[3] ^= 1;
        }
        let mppe = radius::mppe_key_attributes(
            &keys.msk,
            [salts[0], salts[1]],
            [salts[2], salts[3]],
            request.secret.expose(),
            &request.authenticator,
        )
        .map_err(|e| format!("MS-MPPE keys: {e}"))?;
        let mut attributes = radius::eap_message_attributes(&finish.eap);
        attributes.extend(mppe);
        let user_name = match &context.device {
            Some(d) => d.value().to_string(),
            None => context.outer_identity.clone(),
        };
        if !user_name.is_empty() {
            attributes.push(Attribute::new(
                attr::USER_NAME,
                truncate_bytes(user_name.as_bytes(), MAX_REPLY_MESSAGE).to_vec(),
            ));
        }
        Ok(attributes)
    }

    /// Refuses a request that never reached (or no longer has) a conversation.
    fn refuse_early(&self, context: &Context, identifier: Option<u8>, reason: String) -> Handled {
        tracing::info!(nas = %context.nas, station = %context.calling_station_id,
            reason = %reason, "TEAP request refused");
        self.audit_refusal(context, 0, &reason, false);
        self.metrics.decision(false);
        Handled::Reply(reject(identifier.map(eap_failure), &reason))
    }

    fn audit_refusal(&self, context: &Context, error_code: u32, reason: &str, conversation: bool) {
        let now = (self.clock)();
        let admitted = self
            .refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(context.source.ip(), now);
        if !admitted {
            self.metrics.unaudited();
            return;
        }
        let request = pb::RecordRefusalRequest {
            protocol: pb::Protocol::Teap as i32,
            label: context.label.clone(),
            claimed_identity: match (&context.device, &context.claimed_user) {
                (Some(d), _) => d.to_string(),
                (None, Some(user)) => user.clone(),
                (None, None) => context.outer_identity.clone(),
            },
            client_address: context.source.to_string(),
            status: error_code,
            reason: clip(reason, 512),
            operation: if conversation {
                "teap".into()
            } else {
                "radius".into()
            },
            nas: context.nas.clone(),
            calling_station_id: context.calling_station_id.clone(),
        };
        self.send_audit(move |registrar| registrar.record_refusal(request));
    }

    fn audit_access(&self, context: &Context) {
        let mut reason = context
            .authenticated_by
            .unwrap_or("authenticated")
            .to_string();
        reason.push_str(match context.provisioning {
            ProvisioningOutcome::Issued => "; certificate issued",
            ProvisioningOutcome::Offered => "; certificate offered, not requested",
            ProvisioningOutcome::Failed => "; certificate enrollment failed",
            ProvisioningOutcome::Unavailable => "; certificate provisioning unavailable",
            ProvisioningOutcome::NotOffered => "",
        });
        let request = pb::RecordAccessRequest {
            protocol: pb::Protocol::Teap as i32,
            label: context.label.clone(),
            device: context.device.as_ref().map(identity_to_pb),
            outer_identity: context.outer_identity.clone(),
            client_address: context.source.to_string(),
            nas: context.nas.clone(),
            calling_station_id: context.calling_station_id.clone(),
            reason,
            enrollment_id: context.enrollment_id.clone().unwrap_or_default(),
        };
        self.send_audit(move |registrar| registrar.record_access(request));
    }

    fn send_audit<F>(&self, call: F)
    where
        F: for<'a> FnOnce(&'a dyn Registrar) -> RegistrarFuture<'a, ()> + Send + 'static,
    {
        let Ok(permit) = Arc::clone(&self.audit_slots).try_acquire_owned() else {
            self.metrics.unaudited();
            return;
        };
        let registrar = Arc::clone(&self.registrar);
        let metrics = self.metrics.clone();
        let timeout = self.config.limits.registrar_timeout;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.metrics.unaudited();
            return;
        };
        runtime.spawn(async move {
            let result = tokio::time::timeout(timeout, call(registrar.as_ref())).await;
            if !matches!(result, Ok(Ok(()))) {
                metrics.unaudited();
                tracing::warn!("could not audit a TEAP decision through the registrar");
            }
            drop(permit);
        });
    }
}

/// The TLS data one EAP-Request may carry for a NAS that announced its Framed-MTU (RFC 3580
/// §3.10: the largest EAP packet it carries): the MTU less the TEAP header of a first fragment
/// (EAP header, type, flags, Message Length: 10 octets), within bounds that keep a RADIUS
/// packet under 4096 octets and a handshake from taking hundreds of round trips.
fn max_tls_fragment(radius: &Packet) -> Option<usize> {
    const TEAP_FIRST_FRAGMENT_OVERHEAD: usize = 10;
    const SMALLEST: usize = 64;
    const LARGEST: usize = 1400;
    let mtu = radius
        .attribute(attr::FRAMED_MTU)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map(u32::from_be_bytes)?;
    let mtu = usize::try_from(mtu).ok()?;
    Some(
        mtu.saturating_sub(TEAP_FIRST_FRAGMENT_OVERHEAD)
            .clamp(SMALLEST, LARGEST),
    )
}

fn challenge(eap: &[u8], state: &StateId) -> Reply {
    let mut attributes = radius::eap_message_attributes(eap);
    attributes.push(Attribute::new(attr::STATE, state.to_vec()));
    Reply {
        code: Code::AccessChallenge,
        attributes,
    }
}

fn reject(eap: Option<Vec<u8>>, reason: &str) -> Reply {
    let mut attributes = eap
        .map(|e| radius::eap_message_attributes(&e))
        .unwrap_or_default();
    attributes.push(Attribute::new(
        attr::REPLY_MESSAGE,
        truncate_bytes(reason.as_bytes(), MAX_REPLY_MESSAGE).to_vec(),
    ));
    Reply {
        code: Code::AccessReject,
        attributes,
    }
}

/// EAP-Failure (RFC 3748 §4.2) with the identifier of the response it answers.
fn eap_failure(identifier: u8) -> Vec<u8> {
    vec![4, identifier, 0, 4]
}

/// The TEAP Error code for a registrar refusal or failure (ErrorClass as the registrar sets
/// it in the `ragw-error-class` metadata).
fn status_error(status: &Status) -> (u32, String) {
    let message = clip(
        status
            .message()
            .strip_prefix("csr_der: ")
            .unwrap_or(status.message()),
        400,
    );
    let class = status
        .metadata()
        .get("ragw-error-class")
        .and_then(|v| v.to_str().ok());
    match status.code() {
        GrpcCode::InvalidArgument => match class {
            Some("bad_identity") => (error_code::BAD_IDENTITY_IN_CSR, message),
            _ => (error_code::BAD_CSR, message),
        },
        GrpcCode::PermissionDenied => (error_code::BAD_IDENTITY_IN_CSR, message),
        GrpcCode::Unavailable
        | GrpcCode::DeadlineExceeded
        | GrpcCode::ResourceExhausted
        | GrpcCode::Aborted
        | GrpcCode::Cancelled => (
            error_code::INTERNAL_CA_ERROR,
            format!("the registrar is not available ({message}); try again later"),
        ),
        _ => (
            error_code::INTERNAL_CA_ERROR,
            format!("the registrar failed: {message}"),
        ),
    }
}

fn class_error_code(class: i32) -> u32 {
    match pb::ErrorClass::try_from(class).unwrap_or(pb::ErrorClass::Unspecified) {
        pb::ErrorClass::BadRequest => error_code::BAD_CSR,
        pb::ErrorClass::BadIdentity => error_code::BAD_IDENTITY_IN_CSR,
        pb::ErrorClass::InternalCaError => error_code::INTERNAL_CA_ERROR,
        pb::ErrorClass::Unspecified => error_code::GENERAL_PKI_ERROR,
    }
}

/// The registrar's name for a device; `None` for a kind or value this gateway cannot hold.
fn identity_from_pb(id: &pb::DeviceIdentity) -> Option<DeviceIdentity> {
    let kind = match pb::IdentityKind::try_from(id.kind).ok()? {
        pb::IdentityKind::Mac => IdentityKind::Mac,
        pb::IdentityKind::SerialNumber => IdentityKind::SerialNumber,
        pb::IdentityKind::IdevidSerial => IdentityKind::IdevidSerial,
        pb::IdentityKind::Username => IdentityKind::Username,
        pb::IdentityKind::Unspecified => return None,
    };
    DeviceIdentity::new(kind, &id.value).ok()
}

fn identity_to_pb(id: &DeviceIdentity) -> pb::DeviceIdentity {
    let kind = match id.kind() {
        IdentityKind::Mac => pb::IdentityKind::Mac,
        IdentityKind::SerialNumber => pb::IdentityKind::SerialNumber,
        IdentityKind::IdevidSerial => pb::IdentityKind::IdevidSerial,
        IdentityKind::Username => pb::IdentityKind::Username,
    };
    pb::DeviceIdentity {
        kind: kind as i32,
        value: id.value().to_string(),
    }
}

fn kind_name(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::Mac => "a MAC address",
        IdentityKind::SerialNumber => "a serial number",
        IdentityKind::IdevidSerial => "an IDevID serial number",
        IdentityKind::Username => "a user name",
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "no detail given" } else { s }
}

/// At most `n` characters, control characters dropped (for logs and audit).
fn clip(s: &str, n: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(n).collect()
}

/// At most `n` octets, cut at a character boundary.
fn truncate_bytes(bytes: &[u8], n: usize) -> &[u8] {
    if bytes.len() <= n {
        return bytes;
    }
    let mut end = n;
    while end > 0 && bytes.get(end).is_some_and(|b| (b & 0xc0) == 0x80) {
        end -= 1;
    }
    bytes.get(..end).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
