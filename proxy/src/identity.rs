//! Workload identity for mTLS between sidecars. A trust root and an issuer
//! live in a CA folder (`tandem ca init`, or made on first use): `ca.crt`
//! (the trust bundle), `issuer.crt`, `issuer.key`. Every sidecar holds a
//! short-lived certificate for `spiffe://<trust-domain>/ns/<namespace>/<app-id>`,
//! with the DNS name `<app-id>.<namespace>.tandem.internal` so the standard
//! WebPKI check of a server name is also the check of the peer's app id,
//! and renews it long before it expires. TLS 1.3 only.
//!
//! Where the certificate comes from (`Source`): in single-host mode the
//! sidecar signs it itself with the folder's issuer; across hosts it
//! sends a CSR to `tandem sentry` (`crate::sentry`), which holds the
//! folder, and keeps only the trust bundle. The private key never leaves
//! the sidecar either way.

use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const CA_FILE: &str = "ca.crt";
const ISSUER_CERT: &str = "issuer.crt";
const ISSUER_KEY: &str = "issuer.key";
const ROOT_KEY: &str = "ca.key";
pub const WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long workload certificates live: `TANDEM_WORKLOAD_CERT_TTL` (a
/// duration such as `90s`, for rotation drills), else 24 h as in Dapr.
pub fn workload_ttl() -> Duration {
    std::env::var("TANDEM_WORKLOAD_CERT_TTL")
        .ok()
        .and_then(|v| tandem_config::parse_duration(&v).ok())
        .filter(|d| *d >= Duration::from_secs(1))
        .unwrap_or(WORKLOAD_TTL)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn issuer_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tandem");
    dn.push(DnType::CommonName, "tandem issuer");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// Creates the CA folder (root and issuer) unless it already holds one.
/// Returns whether it made a new one. Sidecars starting together (a run
/// file) must end up with the same CA: one of them makes it, under a lock
/// file, and the others wait for it.
pub fn init_ca(dir: &Path) -> Result<bool, String> {
    let complete = || dir.join(CA_FILE).exists() && dir.join(ISSUER_KEY).exists();
    if complete() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock = dir.join(".init.lock");
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
    {
        Ok(_) => {
            // Another process may have made it and released the lock
            // between the check above and taking the lock: look again,
            // or its CA would be overwritten under sidecars already using
            // it (found by this module's race test under CI load).
            let made = if complete() {
                Ok(false)
            } else {
                make_ca(dir).map(|()| true)
            };
            let _ = std::fs::remove_file(&lock);
            made
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while !complete() {
                if std::time::Instant::now() > end {
                    return Err(format!(
                        "{} is being created by another process, or a crash left {}: remove it and retry",
                        dir.display(),
                        lock.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(false)
        }
        Err(e) => Err(format!("{}: {e}", lock.display())),
    }
}

fn make_ca(dir: &Path) -> Result<(), String> {
    let root_key = KeyPair::generate().map_err(err)?;
    let mut root = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tandem");
    dn.push(DnType::CommonName, "tandem root");
    root.distinguished_name = dn;
    root.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.not_before = time_now() - time::Duration::minutes(15);
    root.not_after = time_now() + time::Duration::days(365);
    let root_cert = root.self_signed(&root_key).map_err(err)?;
    let root_issuer = Issuer::new(root, &root_key);
    let issuer_key = KeyPair::generate().map_err(err)?;
    let mut ip = issuer_params();
    ip.not_before = time_now() - time::Duration::minutes(15);
    ip.not_after = time_now() + time::Duration::days(365);
    let issuer_cert = ip.signed_by(&issuer_key, &root_issuer).map_err(err)?;
    // Each file appears whole (written aside, then renamed).
    let write = |name: &str, text: String| {
        let (path, tmp) = (dir.join(name), dir.join(format!(".{name}.tmp")));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write(ROOT_KEY, root_key.serialize_pem())?;
    write(ISSUER_KEY, issuer_key.serialize_pem())?;
    write(ISSUER_CERT, issuer_cert.pem())?;
    // Written last: its presence means the folder is complete.
    write(CA_FILE, root_cert.pem())?;
    Ok(())
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

pub fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

/// The DNS name a workload certificate carries for its app.
pub fn dns_name(app_id: &str, namespace: &str) -> String {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    format!("{app_id}.{ns}.tandem.internal")
}

pub fn spiffe_id(trust_domain: &str, namespace: &str, app_id: &str) -> String {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    format!("spiffe://{trust_domain}/ns/{ns}/{app_id}")
}

/// This sidecar's identity: the trust bundle and a renewable certificate,
/// both replaceable while connections use them (handshakes read the
/// current ones).
pub struct Identity {
    pub spiffe_id: String,
    source: Source,
    trust_domain: String,
    app_id: String,
    namespace: String,
    /// Peers' certificates are checked against the current trust bundle.
    verifiers: ArcSwap<Verifiers>,
    /// What the CA folder held when last read (bundle, issuer): a change
    /// reloads the bundle and renews the certificate.
    seen: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
    current: ArcSwap<CertifiedKey>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// WebPKI verifiers of one trust bundle, for both sides of a handshake.
struct Verifiers {
    server: Arc<rustls::client::WebPkiServerVerifier>,
    client: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl Verifiers {
    fn new(
        roots: rustls::RootCertStore,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, String> {
        let roots = Arc::new(roots);
        Ok(Self {
            server: rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots.clone(),
                provider.clone(),
            )
            .build()
            .map_err(err)?,
            client: rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots,
                provider.clone(),
            )
            .build()
            .map_err(err)?,
        })
    }
}

fn roots_of(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_from_pem(pem)? {
        roots.add(c).map_err(|e| format!("trust bundle: {e}"))?;
    }
    Ok(roots)
}

/// The folder's trust bundle and issuer certificate, as bytes.
fn folder_state(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join(CA_FILE)).unwrap_or_default(),
        std::fs::read(dir.join(ISSUER_CERT)).unwrap_or_default(),
    )
}

/// Where workload certificates come from.
pub enum Source {
    /// Signed here with the issuer in this CA folder.
    Local(PathBuf),
    /// Signed by a certificate service from a CSR.
    Sentry(crate::sentry::Client),
}

impl Identity {
    /// Loads the CA folder (making one if `create` and there is none) and
    /// issues this sidecar's certificate.
    pub fn new(
        dir: &Path,
        create: bool,
        trust_domain: &str,
        namespace: &str,
        app_id: &str,
    ) -> Result<Arc<Self>, String> {
        if create {
            init_ca(dir)?;
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&dir.join(CA_FILE))? {
            roots.add(c).map_err(|e| format!("trust bundle: {e}"))?;
        }
        let seen = folder_state(dir);
        let provider = mesh_provider();
        let key = KeyPair::generate().map_err(err)?;
        let chain = sign(dir, &key, trust_domain, namespace, app_id, workload_ttl())?;
        Ok(Arc::new(Self {
            spiffe_id: spiffe_id(trust_domain, namespace, app_id),
            source: Source::Local(dir.to_path_buf()),
            trust_domain: trust_domain.to_string(),
            app_id: app_id.to_string(),
            namespace: namespace.to_string(),
            verifiers: ArcSwap::from_pointee(Verifiers::new(roots, &provider)?),
            seen: std::sync::Mutex::new(seen),
            current: ArcSwap::from_pointee(certified(chain, &key, &provider)?),
            provider,
        }))
    }

    /// An identity whose certificates `sentry` signs; `anchors` is the
    /// trust bundle (PEM) that peers' certificates and the sentry's own
    /// must chain to.
    pub async fn from_sentry(
        sentry: crate::sentry::Client,
        trust_domain: &str,
        namespace: &str,
        app_id: &str,
    ) -> Result<Arc<Self>, String> {
        let provider = mesh_provider();
        let key = KeyPair::generate().map_err(err)?;
        let chain = sentry
            .sign(&csr(&key)?, trust_domain, namespace, app_id)
            .await?;
        Ok(Arc::new(Self {
            spiffe_id: spiffe_id(trust_domain, namespace, app_id),
            verifiers: ArcSwap::from_pointee(Verifiers::new((*sentry.roots()).clone(), &provider)?),
            seen: Default::default(),
            source: Source::Sentry(sentry),
            trust_domain: trust_domain.to_string(),
            app_id: app_id.to_string(),
            namespace: namespace.to_string(),
            current: ArcSwap::from_pointee(certified(chain, &key, &provider)?),
            provider,
        }))
    }

    /// A new key and certificate, swapped in for new handshakes.
    async fn renew(&self) -> Result<(), String> {
        let key = KeyPair::generate().map_err(err)?;
        let (td, ns, app) = (&self.trust_domain, &self.namespace, &self.app_id);
        let chain = match &self.source {
            Source::Local(dir) => sign(dir, &key, td, ns, app, workload_ttl())?,
            Source::Sentry(sentry) => sentry.sign(&csr(&key)?, td, ns, app).await?,
        };
        self.current
            .store(Arc::new(certified(chain, &key, &self.provider)?));
        Ok(())
    }

    /// Renews the certificate halfway through its life, for as long as the
    /// identity is in use; connections already open keep theirs. A renewal
    /// that fails (the certificate service away) is tried again every few
    /// seconds while the current certificate lasts.
    pub fn renew_in_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = weak.upgrade().map_or(Duration::ZERO, |me| me.renew_after());
            loop {
                tokio::time::sleep(wait).await;
                let Some(me) = weak.upgrade() else { return };
                match me.renew().await {
                    Ok(()) => {
                        tracing::info!(id = %me.spiffe_id, "workload certificate renewed");
                        wait = me.renew_after();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "workload certificate not renewed; trying again");
                        wait = me.renew_after().min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    /// Reads the CA folder again (local certificates only): a changed trust
    /// bundle replaces the one handshakes check peers against, and a changed
    /// bundle or issuer renews this sidecar's certificate at once. Whether
    /// anything changed.
    pub async fn reload_trust(&self) -> Result<bool, String> {
        let Source::Local(dir) = &self.source else {
            return Ok(false);
        };
        let now = folder_state(dir);
        if *self.seen.lock().expect("trust state") == now {
            return Ok(false);
        }
        let roots = roots_of(&now.0)?;
        if roots.is_empty() {
            return Err(format!(
                "{} holds no certificate",
                dir.join(CA_FILE).display()
            ));
        }
        self.verifiers
            .store(Arc::new(Verifiers::new(roots, &self.provider)?));
        self.renew().await?;
        *self.seen.lock().expect("trust state") = now;
        Ok(true)
    }

    /// Re-reads the CA folder every second while the identity is in use
    /// (trust bundles rotate; a rotation must not need a restart).
    pub fn watch_trust(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(me) = weak.upgrade() else { return };
                match me.reload_trust().await {
                    Ok(true) => {
                        tracing::info!(id = %me.spiffe_id, "trust bundle reloaded and workload certificate renewed")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "the CA folder changed but cannot be used; the current trust bundle stays")
                    }
                }
            }
        });
    }

    /// Half the current certificate's remaining life.
    fn renew_after(&self) -> Duration {
        let left = self
            .expires()
            .map(|t| t - time_now())
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::ZERO);
        (left / 2).max(Duration::from_millis(500))
    }

    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(err)?
            .with_client_cert_verifier(Arc::new(LiveVerifier(self.clone())))
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        // Peers pool HTTP/1.1 connections for plain invocations and use
        // HTTP/2 for the rest.
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    pub fn client_config(self: &Arc<Self>) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LiveVerifier(self.clone())))
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// When the current certificate stops being valid.
    pub fn expires(&self) -> Option<time::OffsetDateTime> {
        let cert = self.current.load().cert.first()?.clone();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        Some(parsed.validity().not_after.to_datetime())
    }
}

/// The issuer of a CA folder: its certificate and key.
fn load_issuer(dir: &Path) -> Result<(KeyPair, Vec<CertificateDer<'static>>), String> {
    let path = dir.join(ISSUER_KEY);
    let pem = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (run `tandem ca init`)", path.display()))?;
    Ok((
        KeyPair::from_pem(&pem).map_err(err)?,
        pem_certs(&dir.join(ISSUER_CERT))?,
    ))
}

/// What every workload certificate says: the app's SPIFFE id and DNS
/// name, client and server use, `ttl` of life (15 min of clock skew
/// allowed before now, as Dapr does).
fn workload_params(
    trust_domain: &str,
    namespace: &str,
    app_id: &str,
    ttl: Duration,
) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(vec![dns_name(app_id, namespace)]).map_err(err)?;
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names.push(SanType::URI(
        spiffe_id(trust_domain, namespace, app_id)
            .try_into()
            .map_err(err)?,
    ));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = time_now() - time::Duration::minutes(15);
    p.not_after = time_now() + time::Duration::milliseconds(ttl.as_millis() as i64);
    Ok(p)
}

/// A workload certificate for `key`, signed by the folder's issuer: the
/// chain leaf first, then the issuer.
fn sign(
    dir: &Path,
    key: &KeyPair,
    trust_domain: &str,
    namespace: &str,
    app_id: &str,
    ttl: Duration,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let (issuer_key, issuer_chain) = load_issuer(dir)?;
    let issuer = Issuer::new(issuer_params(), &issuer_key);
    let cert = workload_params(trust_domain, namespace, app_id, ttl)?
        .signed_by(key, &issuer)
        .map_err(err)?;
    let mut chain = vec![cert.der().clone()];
    chain.extend(issuer_chain);
    Ok(chain)
}

/// The certificate service's side: signs the public key of a PEM CSR for
/// the identity the service decided on — nothing else in the CSR counts.
pub fn sign_csr(
    dir: &Path,
    csr_pem: &str,
    trust_domain: &str,
    namespace: &str,
    app_id: &str,
    ttl: Duration,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| format!("the certificate signing request is not valid: {e}"))?;
    csr.params = workload_params(trust_domain, namespace, app_id, ttl)?;
    let (issuer_key, issuer_chain) = load_issuer(dir)?;
    let issuer = Issuer::new(issuer_params(), &issuer_key);
    let cert = csr.signed_by(&issuer).map_err(err)?;
    let mut chain = vec![cert.der().clone()];
    chain.extend(issuer_chain);
    Ok(chain)
}

/// A PEM CSR for `key` (its subject and names are the service's to decide).
fn csr(key: &KeyPair) -> Result<String, String> {
    CertificateParams::default()
        .serialize_request(key)
        .and_then(|r| r.pem())
        .map_err(err)
}

/// The server side of a certificate service: a certificate for
/// `server_name` from the folder's issuer, no client certificate asked.
pub fn service_server_config(
    dir: &Path,
    server_name: &str,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = mesh_provider();
    let key = KeyPair::generate().map_err(err)?;
    let (issuer_key, issuer_chain) = load_issuer(dir)?;
    let issuer = Issuer::new(issuer_params(), &issuer_key);
    let mut p = CertificateParams::new(vec![server_name.to_string()]).map_err(err)?;
    p.not_before = time_now() - time::Duration::minutes(15);
    p.not_after = time_now() + time::Duration::days(365);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).map_err(err)?;
    let mut chain = vec![cert.der().clone()];
    chain.extend(issuer_chain);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified(
            chain, &key, &provider,
        )?)));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: &KeyPair,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<CertifiedKey, String> {
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(err)?;
    Ok(CertifiedKey::new(chain, signing))
}

/// PEM text of certificates (the trust bundle a sidecar is given).
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(err)?;
    if certs.is_empty() {
        return Err("no PEM certificate".into());
    }
    Ok(certs)
}

/// Certificates as PEM text, one block each.
pub fn pem_of(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_ref().to_vec())))
        .collect()
}

#[derive(Debug)]
struct Resolver(Arc<Identity>);

/// Checks peers with the identity's current trust bundle (WebPKI, the
/// same checks as a fixed bundle; only the bundle can change). Handshake
/// signatures do not depend on the bundle: both sides check them with the
/// provider's algorithms, as the WebPKI verifiers do.
#[derive(Debug)]
struct LiveVerifier(Arc<Identity>);

impl LiveVerifier {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl rustls::client::danger::ServerCertVerifier for LiveVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.0.verifiers.load().server.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes()
    }
}

impl rustls::server::danger::ClientCertVerifier for LiveVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // Hints are optional; the bundle behind them can change.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0
            .verifiers
            .load()
            .client
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes()
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id)
            .finish()
    }
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The SPIFFE id in a peer's certificate (its URI SAN), if any.
pub fn peer_spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
            Some(u.to_string())
        }
        _ => None,
    })
}

/// The server name to verify when calling `app_id` in `namespace`.
pub fn server_name(app_id: &str, namespace: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(dns_name(app_id, namespace)).map_err(err)
}

/// The one TLS provider of the mesh (aws-lc-rs), with the post-quantum
/// hybrid X25519MLKEM768 as the first key exchange on both sides and
/// classical X25519 as the fallback: every handshake between sidecars (and
/// with `tandem sentry`) is hybrid, as DESIGN asks. rustls' default keeps
/// the hybrid last unless a crate feature says otherwise.
pub fn mesh_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::kx_group;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::SECP384R1,
    ];
    Arc::new(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_read_back_an_identity() {
        let dir = std::env::temp_dir().join(format!("tandem-ca-{}", std::process::id()));
        assert!(init_ca(&dir).unwrap(), "made");
        assert!(!init_ca(&dir).unwrap(), "kept");
        let id = Identity::new(&dir, false, "public", "", "orders").unwrap();
        assert_eq!(id.spiffe_id, "spiffe://public/ns/default/orders");
        let leaf = id.current.load().cert[0].clone();
        assert_eq!(
            peer_spiffe_id(&leaf).as_deref(),
            Some("spiffe://public/ns/default/orders")
        );
        let left = id.expires().unwrap() - time_now();
        assert!(left > time::Duration::hours(23) && left <= time::Duration::hours(24));
        id.server_config().unwrap();
        id.client_config().unwrap();
        assert!(Identity::new(&dir.join("missing"), false, "public", "", "x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A handshake between two sidecars agrees on the post-quantum hybrid.
    #[test]
    fn mesh_handshakes_use_the_hybrid_key_exchange() {
        let dir = std::env::temp_dir().join(format!("tandem-ca-pq-{}", std::process::id()));
        init_ca(&dir).unwrap();
        let a = Identity::new(&dir, false, "public", "", "a").unwrap();
        let b = Identity::new(&dir, false, "public", "", "b").unwrap();
        let mut client = rustls::ClientConnection::new(
            a.client_config().unwrap(),
            server_name("b", "").unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(b.server_config().unwrap()).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!client.is_handshaking(), "handshake finished");
        for side in [
            client.negotiated_key_exchange_group(),
            server.negotiated_key_exchange_group(),
        ] {
            assert_eq!(
                side.map(|g| g.name()),
                Some(rustls::NamedGroup::X25519MLKEM768)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sidecars_starting_together_share_one_ca() {
        let dir = std::env::temp_dir().join(format!("tandem-ca-race-{}", std::process::id()));
        let made: Vec<bool> = (0..4)
            .map(|_| {
                let d = dir.clone();
                std::thread::spawn(move || init_ca(&d).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(made.iter().filter(|m| **m).count(), 1, "one made it");
        // The issuer and the root belong together: a certificate verifies.
        let id = Identity::new(&dir, false, "public", "", "a").unwrap();
        let leaf = id.current.load().cert.clone();
        id.verifiers
            .load()
            .client
            .verify_client_cert(&leaf[0], &leaf[1..], rustls::pki_types::UnixTime::now())
            .expect("chain verifies against the bundle");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
