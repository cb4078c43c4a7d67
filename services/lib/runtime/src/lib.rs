//! What every ragw component needs around its own logic: configuration (file plus `RAGW_*`
//! environment overrides), logging, the health/readiness/metrics endpoint, and the component
//! identities used for mutual TLS between components.

pub mod config;
pub mod identity;
pub mod ops;
pub mod telemetry;

pub use config::ConfigError;
pub use identity::{IdentityError, Role};
pub use ops::{Health, MetricsRegistry};
pub use telemetry::LogFormat;
