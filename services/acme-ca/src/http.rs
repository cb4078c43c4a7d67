//! The thin HTTP(S) shell around [`Ca::handle`]: rustls (aws-lc-rs) with a server certificate
//! the CA issues to itself and renews, hyper HTTP/1.1, bounded bodies, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ragw_store::AcmeStore;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::ca::{Ca, Request, Response};
use crate::config::CaConfig;
use crate::error::CaError;
use crate::problem::Problem;

const MAX_CONNECTIONS: usize = 4096;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

async fn certified_key(ca: &Ca) -> Result<Arc<CertifiedKey>, CaError> {
    let (chain, key) = ca.issue_server_certificate().await?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| CaError::Tls(e.to_string()))?;
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

async fn tls_acceptor(ca: &Ca) -> Result<(TlsAcceptor, Arc<ServerCert>), CaError> {
    let resolver = Arc::new(ServerCert {
        current: RwLock::new(certified_key(ca).await?),
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CaError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), resolver))
}

/// Opens the CA and serves it on `listener` until `shutdown` completes.
pub async fn serve(
    config: CaConfig,
    store: Arc<dyn AcmeStore>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CaError> {
    let ca = Arc::new(Ca::open(config, store, listener.local_addr()?).await?);
    serve_ca(ca, listener, shutdown).await
}

/// Serves an opened CA on `listener` until `shutdown` completes, then lets requests in flight
/// finish (for a bounded time).
pub async fn serve_ca(
    ca: Arc<Ca>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CaError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let acceptor = if ca.config().plain_http {
        None
    } else {
        let (acceptor, resolver) = tls_acceptor(&ca).await?;
        tasks.spawn(renew_server_cert(ca.clone(), resolver, stop_rx.clone()));
        Some(acceptor)
    };
    tasks.spawn(watch_intermediate(ca.clone(), stop_rx.clone()));
    tracing::info!(directory = %ca.directory_url(), "local ACME CA serving");
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    // Over the connection limit: dropping is the cheapest refusal.
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ca = ca.clone();
                let acceptor = acceptor.clone();
                let stop = stop_rx.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(Ok(tls)) =
                                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                            {
                                serve_connection(ca, TokioIo::new(tls), stop).await;
                            }
                        }
                        None => serve_connection(ca, TokioIo::new(stream), stop).await,
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    tracing::info!("local ACME CA stopped");
    Ok(())
}

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Warns daily while the intermediate is within its last leaf lifetime: it is replaced only
/// at start, so a CA that runs for months would otherwise cut leaves short in silence.
async fn watch_intermediate(ca: Arc<Ca>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = wait_stop(&mut stop) => return,
            _ = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
        }
        ca.check_intermediate();
    }
}

/// Reissues the server certificate once two thirds of its life have passed.
async fn renew_server_cert(
    ca: Arc<Ca>,
    resolver: Arc<ServerCert>,
    mut stop: watch::Receiver<bool>,
) {
    let period = ca.server_validity() * 2 / 3;
    loop {
        tokio::select! {
            _ = wait_stop(&mut stop) => return,
            _ = tokio::time::sleep(period) => {}
        }
        match certified_key(&ca).await {
            Ok(k) => {
                if let Ok(mut c) = resolver.current.write() {
                    *c = k;
                }
                tracing::info!("renewed the CA's HTTPS certificate");
            }
            Err(e) => tracing::error!(error = %e, "renewing the CA's HTTPS certificate failed"),
        }
    }
}

async fn serve_connection<I>(ca: Arc<Ca>, io: I, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let header_timeout = Duration::from_secs(ca.config().header_timeout_seconds);
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let ca = ca.clone();
        async move { Ok::<_, Infallible>(respond(ca, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = wait_stop(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn respond(
    ca: Arc<Ca>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let max = ca.config().max_body_bytes;
    // An over-limit declared length is refused before a byte of the body is read; the
    // connection is closed with the answer, so the unread body is never waited for.
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
    match declared {
        Some(Some(n)) if n > max as u64 => {
            let p = Problem::malformed(format!("the request body is larger than {max} bytes"))
                .status(413);
            return closing(to_hyper(ca.refuse(&p)));
        }
        Some(None) => {
            let p = Problem::malformed("the Content-Length header is not a number");
            return closing(to_hyper(ca.refuse(&p)));
        }
        _ => {}
    }
    let body_timeout = Duration::from_secs(ca.config().body_timeout_seconds);
    let body = match tokio::time::timeout(body_timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(b)) => b.to_bytes().to_vec(),
        Ok(Err(_)) => {
            let p = Problem::malformed(format!("the request body is larger than {max} bytes"))
                .status(413);
            return to_hyper(ca.refuse(&p));
        }
        Err(_) => {
            let p = Problem::malformed("the request body did not arrive in time").status(408);
            return closing(to_hyper(ca.refuse(&p)));
        }
    };
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let request = Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        content_type,
        body,
    };
    // hyper drops this future when the client goes away. Handling runs in its own task so a
    // request is always carried through (a finalize never stops between claiming the order
    // and storing the certificate); only the answer is lost.
    let handler = ca.clone();
    match tokio::spawn(async move { handler.handle(request).await }).await {
        Ok(resp) => to_hyper(resp),
        Err(e) => {
            tracing::error!(error = %e, "request handler ended abnormally");
            to_hyper(ca.refuse(&Problem::internal("the request could not be handled")))
        }
    }
}

/// Ends the connection after this answer: the rest of the request is not read.
fn closing(mut r: hyper::Response<Full<Bytes>>) -> hyper::Response<Full<Bytes>> {
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

fn to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder().status(r.status);
    for (k, v) in &r.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(Full::new(Bytes::from(r.body)))
        .unwrap_or_else(|_| {
            let mut fallback = hyper::Response::new(Full::new(Bytes::new()));
            *fallback.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}
