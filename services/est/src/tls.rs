//! The HTTPS server's rustls configuration (aws-lc-rs provider only).
//!
//! Client certificates are optional at the TLS level (Basic-only pledges connect without one)
//! and their chain is checked after the handshake, per label, by the request logic: the label
//! is in the URL, which TLS does not see. The handshake still verifies the client's signature,
//! so a presented certificate always proves possession of its key. Deferring the chain check
//! also lets a device with an unacceptable certificate get a readable HTTP answer instead of a
//! TLS alert.

use std::sync::Arc;

use der::{Decode, Encode};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_cert::Certificate;

use crate::config::EstConfig;

/// The HTTPS server's certificate chain and key, PEM.
#[derive(Clone)]
pub struct ServerTls {
    /// End entity first, then intermediates.
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct DeferredClientAuth {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeferredClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Chain and identity are checked per label after the handshake (see the module
        // comment); refuse only what could never be a certificate.
        Certificate::from_der(end_entity.as_ref())
            .map(|_| ClientCertVerified::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The subjects of every certificate a device certificate may chain to (IDevID anchors and
/// ragw's CA certificates for re-enrollment), so clients pick the right certificate.
fn hints(config: &EstConfig) -> Vec<DistinguishedName> {
    let mut out: Vec<DistinguishedName> = Vec::new();
    let anchors = config.labels.iter().flat_map(|l| {
        l.client_cert
            .iter()
            .flat_map(|c| c.trust_anchors.iter().map(|a| a.as_ref().to_vec()))
            .chain(l.cacerts.iter().cloned())
    });
    for der in anchors {
        if let Ok(cert) = Certificate::from_der(&der)
            && let Ok(subject) = cert.tbs_certificate().subject().to_der()
        {
            let dn = DistinguishedName::from(subject);
            if !out.iter().any(|d| d.as_ref() == dn.as_ref()) {
                out.push(dn);
            }
        }
    }
    out
}

/// The rustls server configuration for `config`, with `tls` as the server identity.
pub fn server_config(config: &EstConfig, tls: &ServerTls) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&tls.cert_chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the server certificate PEM is unreadable: {e}"))?;
    if chain.is_empty() {
        return Err("the server certificate PEM holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .map_err(|e| format!("the server key PEM is unreadable: {e}"))?;
    let verifier = Arc::new(DeferredClientAuth {
        hints: hints(config),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut server = ServerConfig::builder_with_provider(provider.clone() as Arc<CryptoProvider>)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the server certificate and key do not fit together: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}
