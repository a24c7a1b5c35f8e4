//! The certificate service for several hosts (`tandem sentry`), and the
//! sidecar's client of it. The service holds the CA folder; a sidecar
//! holds only the trust bundle, makes its own key, and sends a CSR with its
//! app id, namespace and a token over TLS (the service's certificate must
//! chain to the bundle and name `sentry.tandem.internal`). The service
//! decides the identity — the CSR contributes its public key and nothing
//! else — and signs a short-lived workload certificate. The protocol is
//! Dapr Sentry's `SignCertificate`.
//!
//! Tokens: with a token file the service signs only for callers that
//! present one of its lines; without one it signs for anyone who reaches
//! it, as Dapr's Sentry does in self-hosted mode (said loudly at start).

use crate::identity::{certs_from_pem, peer_spiffe_id, pem_of, sign_csr, spiffe_id};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tandem_proto::sentry::v1::{
    SignCertificateRequest, SignCertificateResponse, ca_client::CaClient, ca_server,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// The name a certificate service's certificate carries.
pub const SERVER_NAME: &str = "sentry.tandem.internal";

pub struct Service {
    pub dir: PathBuf,
    pub trust_domain: String,
    /// Accepted tokens; empty: every caller is accepted.
    pub tokens: Vec<String>,
    pub ttl: Duration,
}

/// Equal in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[tonic::async_trait]
impl ca_server::Ca for Service {
    async fn sign_certificate(
        &self,
        req: Request<SignCertificateRequest>,
    ) -> Result<Response<SignCertificateResponse>, Status> {
        let r = req.into_inner();
        if !self.tokens.is_empty() && !self.tokens.iter().any(|t| same(t, &r.token)) {
            tracing::warn!(app = %r.id, namespace = %r.namespace, "certificate refused: token not accepted");
            return Err(Status::permission_denied(format!(
                "the token sent for app `{}` is not accepted by this certificate service",
                r.id
            )));
        }
        if !valid_name(&r.id) {
            return Err(Status::invalid_argument(format!(
                "app id `{}` cannot be put in a certificate",
                r.id
            )));
        }
        let namespace = if r.namespace.is_empty() {
            "default".to_string()
        } else if valid_name(&r.namespace) {
            r.namespace.clone()
        } else {
            return Err(Status::invalid_argument(format!(
                "namespace `{}` cannot be put in a certificate",
                r.namespace
            )));
        };
        if !r.trust_domain.is_empty() && r.trust_domain != self.trust_domain {
            return Err(Status::permission_denied(format!(
                "this certificate service issues for trust domain `{}`, not `{}`",
                self.trust_domain, r.trust_domain
            )));
        }
        let csr = String::from_utf8(r.certificate_signing_request)
            .map_err(|_| Status::invalid_argument("the CSR must be PEM text"))?;
        let (dir, td, ttl) = (self.dir.clone(), self.trust_domain.clone(), self.ttl);
        let (id, ns) = (r.id.clone(), namespace.clone());
        let chain = tokio::task::spawn_blocking(move || sign_csr(&dir, &csr, &td, &ns, &id, ttl))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                if e.starts_with("the certificate signing request") {
                    Status::invalid_argument(e)
                } else {
                    tracing::error!(error = %e, "cannot sign");
                    Status::internal(e)
                }
            })?;
        let valid_until = std::time::SystemTime::now() + self.ttl;
        tracing::info!(id = %spiffe_id(&self.trust_domain, &namespace, &r.id), ttl = ?self.ttl, "workload certificate signed");
        Ok(Response::new(SignCertificateResponse {
            workload_certificate: pem_of(&chain).into_bytes(),
            trust_chain_certificates: chain[1..]
                .iter()
                .map(|c| pem_of(std::slice::from_ref(c)).into_bytes())
                .collect(),
            valid_until: Some(prost_types::Timestamp::from(valid_until)),
            jwt: None,
        }))
    }
}

/// Serves the certificate service over TLS until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let grpc = ca_server::CaServer::new(service);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let grpc = grpc.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => return,
                };
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let mut grpc = grpc.clone();
                    async move {
                        let req = req.map(|b| {
                            b.map_err(|e| Status::internal(e.to_string()))
                                .boxed_unsync()
                        });
                        tonic::codegen::Service::call(&mut grpc, req).await
                    }
                });
            if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// A sidecar's way to its certificate service.
#[derive(Clone)]
pub struct Client {
    address: String,
    roots: Arc<rustls::RootCertStore>,
    tls: tokio_rustls::TlsConnector,
    token: String,
}

impl Client {
    /// `anchors`: the trust bundle (PEM); `token`: what proves this
    /// sidecar may have the identity it asks for ("" for none).
    pub fn new(address: &str, anchors: &[u8], token: String) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs_from_pem(anchors).map_err(|e| format!("trust anchors: {e}"))? {
            roots.add(c).map_err(|e| format!("trust anchors: {e}"))?;
        }
        let roots = Arc::new(roots);
        let provider = crate::identity::mesh_provider();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            address: address.to_string(),
            roots,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            token,
        })
    }

    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.roots.clone()
    }

    /// Asks for `csr` to be signed as app `app_id`; the chain, leaf first,
    /// checked to name the identity asked for.
    pub async fn sign(
        &self,
        csr: &str,
        trust_domain: &str,
        namespace: &str,
        app_id: &str,
    ) -> Result<Vec<CertificateDer<'static>>, String> {
        let failed = |e: String| format!("certificate service at {}: {e}", self.address);
        let (address, tls) = (self.address.clone(), self.tls.clone());
        let channel = tonic::transport::Endpoint::from_static("http://sentry.tandem.internal")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_with_connector(tower::service_fn(move |_| {
                let (address, tls) = (address.clone(), tls.clone());
                async move {
                    let tcp = tokio::net::TcpStream::connect(address.as_str()).await?;
                    let name = ServerName::try_from(SERVER_NAME).expect("a DNS name");
                    let stream = tls.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| failed(crate::app_channel::error_chain(&e)))?;
        let answer = CaClient::new(channel)
            .sign_certificate(SignCertificateRequest {
                id: app_id.to_string(),
                token: self.token.clone(),
                trust_domain: trust_domain.to_string(),
                namespace: namespace.to_string(),
                certificate_signing_request: csr.as_bytes().to_vec(),
                token_validator: 0,
            })
            .await
            .map_err(|s| failed(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let chain = certs_from_pem(&answer.workload_certificate)
            .map_err(|e| failed(format!("workload certificate: {e}")))?;
        let want = spiffe_id(trust_domain, namespace, app_id);
        match peer_spiffe_id(&chain[0]) {
            Some(got) if got == want => Ok(chain),
            got => Err(failed(format!(
                "signed a certificate for {got:?}, not {want}"
            ))),
        }
    }
}
