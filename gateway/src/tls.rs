//! HTTPS on the public listener, through rustls (never OpenSSL): the certificate chain and key come
//! from PEM files (`[listen.tls]`), are checked at start-up with a clear error, and are re-read when
//! either file changes — a renewed certificate (cert-manager, certbot) is served without a restart,
//! and a broken renewal is refused while the old pair stays in service. An optional client CA turns
//! on client-certificate authentication (mTLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert, RootCertStore, WebPkiClientVerifier};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::TlsSection;

/// The serving certificate, swapped in place when its files change.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    stamp: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl CertStore {
    /// Loads the pair, or says what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let stamp = (modified(cert), modified(key));
        let current = certified_key(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(current),
            stamp: std::sync::Mutex::new(stamp),
        }))
    }

    /// Re-reads the pair if either file changed. `Ok(true)`: a new pair is in service; an error
    /// leaves the old one serving (it is retried when the files change again).
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = (modified(&self.cert), modified(&self.key));
        {
            let mut stamp = self
                .stamp
                .lock()
                .map_err(|_| anyhow!("certificate stamp lock poisoned"))?;
            if *stamp == now {
                return Ok(false);
            }
            *stamp = now;
        }
        self.current.store(Arc::new(certified_key(&self.cert, &self.key)?));
        Ok(true)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn provider() -> anyhow::Result<Arc<CryptoProvider>> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| anyhow!("no rustls crypto provider installed"))
}

fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let (Some(cert_s), Some(key_s)) = (cert.to_str(), key.to_str()) else {
        return Err(anyhow!("TLS file paths must be UTF-8"));
    };
    let (chain, key_der) = pingora::tls::load_certs_and_key_files(cert_s, key_s)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("reading {} and {}", cert.display(), key.display()))?
        .ok_or_else(|| {
            anyhow!(
                "{} must hold a PEM certificate chain and {} a PEM private key (PKCS#8, PKCS#1 or SEC1)",
                cert.display(),
                key.display()
            )
        })?;
    let chain = chain.into_iter().map(|c| c.into_owned()).collect();
    let key_der = key_der.clone_key();
    let certified = CertifiedKey::from_der(chain, key_der, provider()?.as_ref())
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    Ok(certified)
}

/// The public listener's TLS settings (HTTP/2 offered by ALPN beside HTTP/1.1).
/// What the listener's certificate files would refuse at start: `listen.tls` (certificate and key)
/// and `listen.tls.client_ca`, one line each. Reads the files; validation of the configuration does not.
pub fn file_problems(section: &TlsSection) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = CertStore::load(&section.cert, &section.key) {
        problems.push(format!("listen.tls: {e:#}"));
    }
    if let Some(ca) = &section.client_ca
        && let Err(e) = client_roots(ca)
    {
        problems.push(format!("listen.tls.client_ca: {e:#}"));
    }
    problems
}

pub fn settings(section: &TlsSection, store: Arc<CertStore>) -> anyhow::Result<TlsSettings> {
    // Empty paths: the resolver supplies the certificate.
    let mut settings = TlsSettings::intermediate("", "").map_err(|e| anyhow!("{e}"))?;
    settings.set_cert_resolver(store);
    settings.enable_h2();
    if let Some(ca) = &section.client_ca {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots(ca)?), provider()?)
            .build()
            .map_err(|e| anyhow!("listen.tls.client_ca {}: {e}", ca.display()))?;
        settings.set_client_cert_verifier(verifier);
    }
    Ok(settings)
}

/// The CA certificates clients' certificates must chain to.
pub fn client_roots(ca: &Path) -> anyhow::Result<RootCertStore> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("{}: unreadable PEM", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{}: a certificate is invalid", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(anyhow!("{}: no PEM certificate in it", ca.display()));
    }
    Ok(roots)
}
