//! Calls that leave the mesh: one pooled HTTP/1 + HTTP/2 client for plain
//! `http://` targets and streams, and HTTPS clients (one pool per TLS
//! configuration: the system's roots plus an endpoint's own).

use super::*;

/// An HTTP/2 client whose request bodies stream (gRPC proxying).
pub(super) type StreamClient = Client<HttpConnector, ProxyBody>;

/// A pooled, multiplexed HTTP/2 client for the internal leg.
pub(super) fn h2_client<B>() -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Sends a gRPC call, body streaming both ways, to `authority` (an app's
/// gRPC port or a peer's internal port).
pub(super) async fn stream_to(
    client: &StreamClient,
    authority: &str,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, String> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = format!("http://{authority}{path}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    parts.version = http::Version::HTTP_2;
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::TE, HeaderValue::from_static("trailers"));
    let resp = client
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|e| crate::app_channel::error_chain(&e))?;
    Ok(resp.map(boxed))
}

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>;

/// TLS to a service outside the mesh (an HTTPEndpoint's `clientTLS`), as
/// PEM text. The default trusts the system's roots and presents nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutsideTls {
    /// Trusted besides the system's roots.
    pub root_ca: Option<String>,
    /// A client certificate (chain) and its key, for services that ask.
    pub certificate: Option<String>,
    pub private_key: Option<String>,
}

impl OutsideTls {
    /// A pooled HTTP/1 and HTTP/2 client that verifies servers against the
    /// system's roots and `root_ca`; `https_only` refuses `http://` URLs,
    /// else both schemes work (bindings, which take any URL).
    pub fn client(&self, https_only: bool) -> Result<HttpsClient, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let builder =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(self.client_config()?);
        let connector = if https_only {
            builder.https_only()
        } else {
            builder.https_or_http()
        }
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
        Ok(Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector))
    }

    /// The rustls configuration itself (for clients built elsewhere, such
    /// as the trace exporter's gRPC channel).
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        self.client_config()
    }

    pub(super) fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        static SYSTEM: std::sync::OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> =
            std::sync::OnceLock::new();
        let system = SYSTEM.get_or_init(|| rustls_native_certs::load_native_certs().certs);
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(system.iter().cloned());
        if let Some(pem) = &self.root_ca {
            for c in crate::identity::certs_from_pem(pem.as_bytes())
                .map_err(|e| format!("clientTLS rootCA: {e}"))?
            {
                roots.add(c).map_err(|e| format!("clientTLS rootCA: {e}"))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
        match (&self.certificate, &self.private_key) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
                let chain = crate::identity::certs_from_pem(cert.as_bytes())
                    .map_err(|e| format!("clientTLS certificate: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|e| format!("clientTLS privateKey: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("clientTLS certificate and privateKey: {e}"))
            }
            _ => Err("clientTLS needs both certificate and privateKey, or neither".into()),
        }
    }
}
