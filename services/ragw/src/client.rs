//! How `ragw admin`, `ragw audit` and `ragw eap-server` reach the registrar: from a `ragw dev` data directory, or
//! from an explicit URL and certificate files.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ragw_runtime::identity::{Role, ensure_dev_credentials};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// A `ragw dev` data directory: endpoint and credentials are read from it.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Registrar URL, e.g. https://registrar.ragw.svc:7443 (needs --ca, --cert and --key).
    #[arg(long, global = true, env = "RAGW_REGISTRAR")]
    pub registrar: Option<String>,
    /// CA certificate (PEM) that issued the registrar's certificate.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) carrying the role the command needs (admin, auditor, eap-server).
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// Name expected in the registrar's certificate.
    #[arg(long, global = true, default_value = "localhost")]
    pub server_name: String,
}

pub async fn connect(args: &ConnectArgs, role: Role) -> Result<Channel> {
    let (url, ca, cert, key) = match (&args.registrar, &args.data_dir) {
        (Some(url), _) => {
            let (Some(ca), Some(cert), Some(key)) = (&args.ca, &args.cert, &args.key) else {
                bail!("--registrar needs --ca, --cert and --key");
            };
            (url.clone(), ca.clone(), cert.clone(), key.clone())
        }
        (None, data_dir) => {
            let dir = data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./ragw-data"));
            let endpoints_path = crate::dev::endpoints_file(&dir);
            let text = std::fs::read_to_string(&endpoints_path).with_context(|| {
                format!(
                    "reading {} (is `ragw dev --data-dir {}` running? or pass --registrar)",
                    endpoints_path.display(),
                    dir.display()
                )
            })?;
            let endpoints: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", endpoints_path.display()))?;
            let url = endpoints
                .get("grpc")
                .and_then(|v| v.as_str())
                .with_context(|| format!("{} has no grpc endpoint", endpoints_path.display()))?
                .to_string();
            let creds = ensure_dev_credentials(&crate::dev::tls_dir(&dir))?;
            let (cert, key) = creds.pair(role);
            (url, creds.ca_pem.clone(), cert, key)
        }
    };
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&ca)?))
        .identity(Identity::from_pem(read(&cert)?, read(&key)?))
        .domain_name(args.server_name.clone());
    let channel = Channel::from_shared(url.clone())
        .with_context(|| format!("registrar URL {url:?}"))?
        .tls_config(tls)?
        .connect()
        .await
        .with_context(|| format!("connecting to the registrar at {url}"))?;
    Ok(channel)
}

/// A lazily connected channel for the long-running components, so a gateway or worker starts
/// (and keeps retrying) while the registrar is still coming up. `tls_name` is the name the
/// registrar's certificate must carry; `None` takes the URL's host.
pub fn registrar_channel(
    url: &str,
    tls_name: Option<&str>,
    tls: &crate::config::TlsSection,
) -> Result<Channel> {
    let mut client_tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read_file(&tls.ca)?))
        .identity(Identity::from_pem(
            read_file(&tls.cert)?,
            read_file(&tls.key)?,
        ));
    if let Some(name) = tls_name {
        client_tls = client_tls.domain_name(name.to_string());
    }
    Ok(Channel::from_shared(url.to_string())
        .with_context(|| format!("registrar URL {url:?} is not a URL"))?
        .tls_config(client_tls)
        .context("registrar TLS configuration")?
        .connect_lazy())
}

fn read_file(p: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

/// A gRPC error as an operator should read it.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}
