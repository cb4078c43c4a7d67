//! The client TLS configuration a TEAP peer uses: TLS 1.2 only (RFC 9930 defines its key
//! derivations for TLS 1.2 here; hostap and FreeRADIUS run TEAP over 1.2), the aws-lc-rs
//! provider, trust anchors from DER, and an optional client certificate for Phase 1.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::PeerError;

/// TLS 1.2 client config trusting `roots` (DER certificates), presenting `client_auth`
/// (leaf-first chain and key) when given.
///
/// Session resumption is disabled: a resumed TEAP session skips Phase 2 (RFC 9930 §3.5), and
/// tests or benchmarks that share one config across conversations want full ones.
pub fn client_tls_config(
    roots: &[CertificateDer<'_>],
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, PeerError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone().into_owned())?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])?
    .with_root_certificates(store);
    let mut config = match client_auth {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The client side of a RadSec connection (RFC 6614): TLS 1.2 or 1.3, trusting `roots`, with
/// the client certificate RadSec's mutual authentication requires. Unrelated to the TEAP
/// tunnel's TLS, which runs inside EAP.
pub fn radsec_client_tls_config(
    roots: &[CertificateDer<'_>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, PeerError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone().into_owned())?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_root_certificates(store)
    .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}
