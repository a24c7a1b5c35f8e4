//! The caller's side: `Invoker` resolves an app to its sidecars, reaches one
//! (happy eyeballs over its addresses) and sends the request, streamed, on
//! the pooled connection; one resend when nothing went out; gRPC proxying;
//! calls outside the mesh.

use super::*;

pub struct Invoker {
    pub(super) peers: PeerPool,
    pub(super) balancer: crate::balance::Balancer,
    /// HTTP/1 and HTTP/2 to services outside the mesh (full URLs,
    /// HTTPEndpoints).
    pub(super) outside: Client<HttpConnector, ProxyBody>,
    /// HTTPS to services outside the mesh, one pool per TLS configuration.
    pub(super) outside_tls: std::sync::Mutex<std::collections::HashMap<OutsideTls, HttpsClient>>,
    pub(super) streams: StreamClient,
    /// Peer addresses that could not be connected to lately.
    pub(super) unreachable: Unreachable,
    /// Name resolution as it is now (a reload may swap it).
    pub(super) resolver: arc_swap::ArcSwap<Resolver>,
    pub(super) app_id: String,
    pub(super) namespace: String,
}

impl Invoker {
    /// `tls`: the client side of this sidecar's mTLS identity, if it has
    /// one (`--enable-mtls`).
    pub fn new(
        resolver: Arc<Resolver>,
        app_id: String,
        namespace: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        Self {
            peers: PeerPool {
                tls_h1: tls.as_ref().map(|tls| {
                    let mut h1 = rustls::ClientConfig::clone(tls);
                    h1.alpn_protocols = vec![b"http/1.1".to_vec()];
                    tokio_rustls::TlsConnector::from(Arc::new(h1))
                }),
                tls: tls.map(tokio_rustls::TlsConnector::from),
                metrics: None,
                conns: Default::default(),
                last_sweep: Default::default(),
            },
            streams: h2_client(),
            balancer: Default::default(),
            outside: {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(Duration::from_secs(5)));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build(connector)
            },
            outside_tls: Default::default(),
            unreachable: Default::default(),
            resolver: arc_swap::ArcSwap::new(resolver),
            app_id,
            namespace,
        }
    }

    /// Replaces name resolution (a reload changed `nameResolution`).
    pub fn set_resolver(&self, resolver: Arc<Resolver>) {
        self.resolver.store(resolver);
    }

    pub fn resolver(&self) -> Arc<Resolver> {
        self.resolver.load_full()
    }

    /// Counts this invoker's mTLS handshakes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::Metrics>) -> Self {
        self.peers.metrics = Some(metrics);
        self
    }

    /// Sends `req` (path relative to the service) to a service outside the
    /// mesh at `base` (`http://host:port[/prefix]`).
    pub async fn external(
        &self,
        base: &str,
        mut req: Request<ProxyBody>,
        tls: Option<&OutsideTls>,
    ) -> Result<Response<ProxyBody>, InvokeError> {
        let https = if base.starts_with("https://") {
            Some(
                self.https_client(tls.cloned().unwrap_or_default())
                    .map_err(|reason| InvokeError::External {
                        base: base.into(),
                        reason,
                    })?,
            )
        } else {
            None
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let uri: Uri = format!("{}{path}", base.trim_end_matches('/'))
            .parse()
            .map_err(|e: http::uri::InvalidUri| InvokeError::External {
                base: base.into(),
                reason: e.to_string(),
            })?;
        *req.uri_mut() = uri;
        strip_hop_by_hop(req.headers_mut());
        let sent = match https {
            Some(client) => client.request(req).await,
            // HTTP/2 with prior knowledge (a gRPC client, say) stays HTTP/2.
            None if req.version() == http::Version::HTTP_2 => self.streams.request(req).await,
            None => self.outside.request(req).await,
        };
        let mut resp = sent.map_err(|e| InvokeError::External {
            base: base.into(),
            reason: crate::app_channel::error_chain(&e),
        })?;
        strip_connection_headers(resp.headers_mut());
        Ok(resp.map(boxed))
    }

    /// The pooled HTTPS client for one TLS configuration (made on first use).
    pub(super) fn https_client(&self, tls: OutsideTls) -> Result<HttpsClient, String> {
        let mut clients = self.outside_tls.lock().expect("https clients");
        if let Some(c) = clients.get(&tls) {
            return Ok(c.clone());
        }
        let client = tls.client(true)?;
        clients.insert(tls, client.clone());
        Ok(client)
    }

    /// A peer of `target` and a ready connection to it. Nothing is sent
    /// until a connection is ready, so when the chosen address cannot be
    /// reached the others are tried in turn (happy eyeballs, RFC 8305: the
    /// next address starts when one fails or after `NEXT_ADDRESS_AFTER`
    /// without an answer; the first connection made wins). An instance
    /// heard with an IPv4 and an IPv6 address (mDNS) is reached on either,
    /// and one dead address is not a failure of the app for its breaker.
    /// When every address failed, the resolver is asked afresh and the
    /// addresses it did not give before are tried too.
    pub(super) async fn reach(
        &self,
        target: &str,
        h: &mut HeaderMap,
        h1: bool,
    ) -> Result<(Peer, PeerSender), InvokeError> {
        use futures_util::StreamExt;
        let (app, namespace) = self.split(target);
        let mut tried: Vec<std::net::SocketAddr> = Vec::new();
        let mut failures: Vec<(std::net::SocketAddr, String)> = Vec::new();
        for round in 0..2 {
            let addrs = self.addresses(target, h).await?;
            let first = self.balancer.pick(&addrs);
            let mut order: Vec<_> = happy_order(&addrs, first)
                .into_iter()
                .filter(|a| !tried.contains(a))
                .collect();
            self.unreachable.demote(&mut order);
            order.truncate(MAX_ADDRESSES_TRIED);
            // An idle pooled connection to the first address: no racing.
            if let Some(&address) = order.first() {
                let peer = Peer {
                    app_id: app.to_string(),
                    namespace: namespace.to_string(),
                    address,
                };
                if let Some(sender) = self.peers.pooled(&peer, h1) {
                    return Ok((peer, sender));
                }
            }
            let mut pending = order.into_iter().peekable();
            let attempt = |address: std::net::SocketAddr| {
                let peer = Peer {
                    app_id: app.to_string(),
                    namespace: namespace.to_string(),
                    address,
                };
                async move {
                    let got = self.peers.sender(&peer, h1).await;
                    (peer, got)
                }
            };
            // The first address at once; the next one when an attempt
            // fails, or `NEXT_ADDRESS_AFTER` after the last one started.
            let mut attempts: futures_util::stream::FuturesUnordered<_> = pending
                .next()
                .map(|a| {
                    tried.push(a);
                    attempt(a)
                })
                .into_iter()
                .collect();
            let next_after = tokio::time::sleep(NEXT_ADDRESS_AFTER);
            tokio::pin!(next_after);
            loop {
                tokio::select! {
                    Some((peer, got)) = attempts.next(), if !attempts.is_empty() => match got {
                        Ok(sender) => {
                            self.unreachable.forget(peer.address);
                            return Ok((peer, sender));
                        }
                        Err(reason) => {
                            self.unreachable.note(peer.address);
                            tracing::debug!(peer = %peer.address, error = %reason, "cannot reach this address of the peer");
                            failures.push((peer.address, reason));
                            next_after.as_mut().reset(tokio::time::Instant::now());
                        }
                    },
                    _ = &mut next_after, if pending.peek().is_some() => {
                        let a = pending.next().expect("peeked");
                        tried.push(a);
                        attempts.push(attempt(a));
                        next_after.as_mut().reset(tokio::time::Instant::now() + NEXT_ADDRESS_AFTER);
                    },
                    else => break,
                }
            }
            if round == 0 {
                // Perhaps a stale answer (a peer that moved): ask again.
                self.resolver.load().forget(app, namespace);
            }
        }
        let address = tried.first().map(|a| a.to_string()).unwrap_or_default();
        Err(InvokeError::PeerUnreachable {
            app: target.into(),
            address,
            reason: match failures.as_slice() {
                [] => String::new(),
                [(_, reason)] => reason.clone(),
                all => format!(
                    "no address answered ({})",
                    all.iter()
                        .map(|(a, r)| format!("{a}: {r}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
        })
    }

    /// The app (`id`, or `id.namespace` outside this sidecar's namespace)
    /// whose sidecar lives at `ip`, as name resolution knows it.
    pub async fn owner(&self, ip: std::net::IpAddr) -> Option<String> {
        let (id, ns) = self.resolver.load_full().owner(ip).await?;
        Some(if ns.is_empty() || ns == self.namespace {
            id
        } else {
            format!("{id}.{ns}")
        })
    }

    /// Whether `target` (`id` or `id.namespace`) is an app the resolver
    /// can find.
    pub async fn knows(&self, target: &str) -> bool {
        let (app, ns) = self.split(target);
        self.resolver
            .load_full()
            .resolve(app, ns)
            .await
            .is_ok_and(|found| !found.is_empty())
    }

    pub(super) fn split<'t>(&'t self, target: &'t str) -> (&'t str, &'t str) {
        match target.split_once('.') {
            Some((a, ns)) => (a, ns),
            None => (target, self.namespace.as_str()),
        }
    }

    /// The addresses of `target`'s (`id` or `id.namespace`) sidecars, and
    /// the internal headers that tell the peer who calls whom.
    pub(super) async fn addresses(
        &self,
        target: &str,
        h: &mut HeaderMap,
    ) -> Result<Vec<std::net::SocketAddr>, InvokeError> {
        let (app, namespace) = self.split(target);
        let addrs = self
            .resolver
            .load_full()
            .resolve(app, namespace)
            .await
            .map_err(|reason| InvokeError::Resolve {
                app: target.to_string(),
                reason,
            })?;
        if addrs.is_empty() {
            return Err(InvokeError::NotFound(target.to_string()));
        }
        h.insert(CALLEE, header_value(app));
        h.insert(CALLER, header_value(&self.app_id));
        if !self.namespace.is_empty() {
            h.insert(CALLER_NAMESPACE, header_value(&self.namespace));
        }
        Ok(addrs)
    }

    /// Proxies a gRPC call (any service, streaming included) to app
    /// `target`'s gRPC server through its sidecar.
    pub async fn grpc_remote(
        &self,
        target: &str,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, InvokeError> {
        let (peer, sender) = self.reach(target, req.headers_mut(), false).await?;
        req.headers_mut()
            .insert(GRPC_PROXY, HeaderValue::from_static("1"));
        strip_hop_by_hop(req.headers_mut());
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
        let in_flight = self.balancer.start(peer.address);
        let resp = self
            .peers
            .send(sender, &peer, req)
            .await
            .map_err(|f| match f {
                SendFailure::NotSent(_, reason) => InvokeError::PeerUnreachable {
                    app: target.into(),
                    address: peer.address.to_string(),
                    reason,
                },
                SendFailure::Failed(reason) => InvokeError::PeerFailed {
                    app: target.into(),
                    address: peer.address.to_string(),
                    reason,
                },
            })?;
        in_flight.done();
        Ok(resp.map(boxed))
    }

    /// Proxies a gRPC call to this sidecar's own app, which must speak gRPC.
    pub async fn grpc_local(
        &self,
        app: &AppChannel,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, InvokeError> {
        if app.grpc_channel().is_none() {
            return Err(InvokeError::NotGrpc(self.app_id.clone()));
        }
        let h = req.headers_mut();
        h.remove("dapr-api-token");
        if let Some(token) = &app.config().api_token {
            h.insert("dapr-api-token", header_value(token));
        }
        let authority = format!("{}:{}", app.config().address, app.config().port);
        stream_to(&self.streams, &authority, req)
            .await
            .map_err(|reason| {
                InvokeError::App(AppChannelError::Unreachable {
                    address: authority.clone(),
                    reason,
                })
            })
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Sends `req` to the one sidecar of app `target` at `address` (the
    /// host actor placement chose), not to whichever instance balancing
    /// would pick; nothing is resolved and nothing is sent twice.
    pub async fn to_address(
        &self,
        target: &str,
        address: std::net::SocketAddr,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, InvokeError> {
        strip_hop_by_hop(req.headers_mut());
        let (app, namespace) = self.split(target);
        let h = req.headers_mut();
        h.insert(CALLEE, header_value(app));
        h.insert(CALLER, header_value(&self.app_id));
        if !self.namespace.is_empty() {
            h.insert(CALLER_NAMESPACE, header_value(&self.namespace));
        }
        let peer = Peer {
            app_id: app.to_string(),
            namespace: namespace.to_string(),
            address,
        };
        let h1 = !wants_trailers(req.headers());
        let unreachable = |reason| InvokeError::PeerUnreachable {
            app: target.into(),
            address: address.to_string(),
            reason,
        };
        let sender = match self.peers.pooled(&peer, h1) {
            Some(s) => s,
            None => self.peers.sender(&peer, h1).await.map_err(unreachable)?,
        };
        match self.peers.send(sender, &peer, req).await {
            Ok(resp) => Ok(resp.map(boxed)),
            Err(SendFailure::NotSent(_, reason)) => Err(unreachable(reason)),
            Err(SendFailure::Failed(reason)) => Err(InvokeError::PeerFailed {
                app: target.into(),
                address: address.to_string(),
                reason,
            }),
        }
    }

    /// Sends `req` (path relative to the target app) to app `target`
    /// (`id` or `id.namespace`) through its sidecar, its body streamed.
    /// When the connection fails before the request went out (a peer that
    /// just died, say), the resolver is asked again and the request goes
    /// once more, as Dapr does for an unavailable peer; once it went out,
    /// the failure is the caller's to judge (`PeerFailed`).
    pub async fn remote(
        &self,
        target: &str,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, InvokeError> {
        strip_hop_by_hop(req.headers_mut());
        // An idempotent request without a body can be rebuilt and sent again
        // even after it went out on a connection that turned out dead (a
        // peer killed since the last call).
        let rebuild = (is_idempotent(req.method())
            && http_body::Body::size_hint(req.body()).exact() == Some(0))
        .then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            )
        });
        let mut tried_again = false;
        loop {
            // Trailers (gRPC by address in transparent mode, a client that
            // asks for them) need HTTP/2 between the sidecars.
            let h1 = !wants_trailers(req.headers());
            let (peer, sender) = self.reach(target, req.headers_mut(), h1).await?;
            let in_flight = self.balancer.start(peer.address);
            let failed = |reason| InvokeError::PeerFailed {
                app: target.into(),
                address: peer.address.to_string(),
                reason,
            };
            match self.peers.send(sender, &peer, req).await {
                Ok(resp) => {
                    in_flight.done();
                    return Ok(resp.map(boxed));
                }
                Err(SendFailure::NotSent(back, reason)) if !tried_again => {
                    tracing::debug!(peer = %peer.address, error = %reason, "peer connection failed before sending; resolving again");
                    let (app, ns) = self.split(target);
                    self.resolver.load().forget(app, ns);
                    tried_again = true;
                    req = *back;
                }
                Err(SendFailure::NotSent(_, reason)) => {
                    return Err(InvokeError::PeerUnreachable {
                        app: target.into(),
                        address: peer.address.to_string(),
                        reason,
                    });
                }
                Err(SendFailure::Failed(reason)) => match &rebuild {
                    Some((method, uri, headers)) if !tried_again => {
                        tracing::debug!(peer = %peer.address, error = %reason, "peer connection failed; resolving again");
                        let (app, ns) = self.split(target);
                        self.resolver.load().forget(app, ns);
                        tried_again = true;
                        req = Request::new(full(Bytes::new()));
                        *req.method_mut() = method.clone();
                        *req.uri_mut() = uri.clone();
                        *req.headers_mut() = headers.clone();
                    }
                    _ => return Err(failed(reason)),
                },
            }
        }
    }
}

/// Whether an answer to this request may carry trailers: the client said
/// it takes them (`TE: trailers`) or speaks gRPC.
fn wants_trailers(h: &HeaderMap) -> bool {
    h.get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        || h.get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
