//! HTTPS on the public listener (rustls): a client that trusts the CA gets the API, plain HTTP on
//! that port gets nothing, a renewed certificate is served without a restart, a broken renewal is
//! refused while the old one keeps serving, and with `client_ca` only clients with a certificate
//! from that CA get in.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use support::{EDGE_MODEL, Edge, Gateway, ask};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "r1-hybrid test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf for `names` with common name `cn`: (certificate PEM, key PEM).
    fn issue(&self, names: &[&str], cn: &str) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn reqwest(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap()
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("r1-gw-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces `path` atomically, as cert-manager and certbot do.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The common name of the certificate the server presented.
fn served_cn(response: &reqwest::Response) -> String {
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    let der = info.peer_certificate().unwrap();
    // The CN is the only printable run we put in the subject that starts with "r1-".
    let text = String::from_utf8_lossy(der);
    let start = text.rfind("r1-leaf-").unwrap();
    text[start..start + "r1-leaf-N".len()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_serves_the_api_and_a_renewed_certificate_without_a_restart() {
    let ca = Ca::new();
    let dir = temp_dir("serve");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let (pem, key_pem) = ca.issue(&["localhost", "127.0.0.1"], "r1-leaf-1");
    write_atomic(&cert, &pem);
    write_atomic(&key, &key_pem);

    let edge = Edge::start(EDGE_MODEL);
    // A new client per probe: a full handshake (no pooled connection, no session resumption), so
    // the certificate in service is the one presented.
    let client = || {
        reqwest::Client::builder()
            .add_root_certificate(ca.reqwest())
            .tls_built_in_root_certs(false)
            .tls_info(true)
            .build()
            .unwrap()
    };
    let listen = format!("tls = {{ cert = \"{}\", key = \"{}\" }}", cert.display(), key.display());
    let gw = Gateway::start_with(&[edge.addr], &[], &listen, "", client()).await;
    assert!(gw.public.starts_with("https://"));

    let r = gw.client.get(format!("{}/healthz", gw.public)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_cn(&r), "r1-leaf-1");
    let r = gw.chat(ask(EDGE_MODEL, "Hello!")).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string());

    // Plain HTTP on the TLS port gets no answer.
    let plain = gw.public.replace("https://", "http://");
    let r = reqwest::Client::new().get(format!("{plain}/healthz")).send().await;
    assert!(r.is_err() || r.unwrap().status() != 200);

    // A renewal: the new certificate is served within the reload interval, with no restart.
    let (pem, key_pem) = ca.issue(&["localhost", "127.0.0.1"], "r1-leaf-2");
    write_atomic(&key, &key_pem);
    write_atomic(&cert, &pem);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client().get(format!("{}/healthz", gw.public)).send().await;
        if let Ok(r) = r
            && served_cn(&r) == "r1-leaf-2"
        {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        gw.metric("r1_tls_certificate_reloads_total{outcome=\"applied\"}").await,
        1.0
    );

    // A broken renewal is refused and counted; the last good certificate keeps serving.
    let refused = gw.metric("r1_tls_certificate_reloads_total{outcome=\"refused\"}").await;
    write_atomic(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.metric("r1_tls_certificate_reloads_total{outcome=\"refused\"}").await <= refused {
        assert!(Instant::now() < deadline, "the broken renewal was not noticed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = client().get(format!("{}/healthz", gw.public)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_cn(&r), "r1-leaf-2");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_client_ca_only_clients_holding_its_certificates_get_in() {
    let ca = Ca::new();
    let clients_ca = Ca::new();
    let dir = temp_dir("mtls");
    let (cert, key, client_ca) = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("clients.pem"));
    let (pem, key_pem) = ca.issue(&["127.0.0.1"], "r1-leaf-1");
    write_atomic(&cert, &pem);
    write_atomic(&key, &key_pem);
    write_atomic(&client_ca, &clients_ca.cert.pem());

    let (client_pem, client_key) = clients_ca.issue(&["client.example"], "r1-leaf-c");
    let identity = reqwest::Identity::from_pem(format!("{client_pem}{client_key}").as_bytes()).unwrap();
    let with_identity = reqwest::Client::builder()
        .add_root_certificate(ca.reqwest())
        .tls_built_in_root_certs(false)
        .identity(identity)
        .build()
        .unwrap();
    let listen = format!(
        "tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}",
        cert.display(),
        key.display(),
        client_ca.display()
    );
    let edge = Edge::start(EDGE_MODEL);
    let gw = Gateway::start_with(&[edge.addr], &[], &listen, "", with_identity).await;
    let r = gw.client.get(format!("{}/healthz", gw.public)).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let anonymous = reqwest::Client::builder()
        .add_root_certificate(ca.reqwest())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let r = anonymous.get(format!("{}/healthz", gw.public)).send().await;
    assert!(r.is_err(), "a client without a certificate is refused in the handshake");
    gw.stop();
}

#[test]
fn bad_tls_files_are_reported_by_check_config() {
    let dir = temp_dir("check");
    let cert = dir.join("missing.crt");
    let text = format!(
        "[listen]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert.display(),
        dir.join("missing.key").display()
    );
    // Validation reads no files; the start-up check (`--check-config` runs it too) does.
    let config = r1_gateway::config::GatewayConfig::parse(&text).unwrap();
    let error = r1_gateway::server::preflight(&config).join("\n");
    assert!(
        error.contains("listen.tls:") && error.contains("missing.crt"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_can_be_reached_over_tls() {
    // The upstream here is another gateway serving HTTPS (a test CA the system does not trust, so
    // the check of its certificate is off: `verify = false`); behind it, the model stand-in.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let model = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(2, "tls "))
        .await
        .unwrap();
    let ca = Ca::new();
    let dir = temp_dir("upstream");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let (pem, key_pem) = ca.issue(&["localhost", "127.0.0.1"], "r1-leaf-1");
    write_atomic(&cert, &pem);
    write_atomic(&key, &key_pem);
    let listen = format!("tls = {{ cert = \"{}\", key = \"{}\" }}", cert.display(), key.display());
    let client = reqwest::Client::builder()
        .add_root_certificate(ca.reqwest())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let inner = Gateway::start_with(&[], &[model.addr()], &listen, "", client).await;
    let inner_addr: std::net::SocketAddr = inner.public.trim_start_matches("https://").parse().unwrap();

    let outer = Gateway::start_full(
        &[],
        &[inner_addr],
        "",
        "",
        "tls = { sni = \"localhost\", verify = false }",
        reqwest::Client::new(),
    )
    .await;
    let r = outer.chat(ask(support::CENTER_MODEL, "Hello over TLS")).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "tls tls ");
    assert_eq!(model.stats().snapshot().received, 1);
    outer.stop();
    inner.stop();
    model.shutdown().await.unwrap();
}
