//! ragw's domain model. No I/O, no async runtime, no SQL, no gRPC: just the rules.

pub mod audit;
pub mod enrollment;
pub mod error_class;
pub mod identity;
pub mod label;
pub mod names;
pub mod profile;

pub use audit::{AuditDraft, AuditEvent, ChainVerifier, GENESIS_HASH};
pub use enrollment::{ApprovalMode, EnrollmentState, Protocol};
pub use error_class::ErrorClass;
pub use identity::{DeviceIdentity, IdentityKind};
pub use profile::{Eku, KeyType, Profile};
