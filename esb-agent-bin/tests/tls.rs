//! The agent over TLS with client certificates (mTLS), reached by the `remote` backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use esb_agent::{BearerAuth, ServeOptions, TlsFiles};
use esb_runtime::remote::{RemoteConfig, RemoteRuntime, RemoteTls};
use esb_runtime::{Error, Runtime};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::{TOKEN, TestAgent};

/// A CA able to sign certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    /// A certificate and key for these names, as PEM.
    fn issue(&self, names: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }
}

fn write(dir: &Path, name: &str, pem: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn mtls_agent_accepts_only_clients_with_a_certificate_of_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("esb test CA");
    let (server_cert, server_key) = ca.issue(&["localhost", "127.0.0.1"]);
    let mut options = ServeOptions::new(BearerAuth::token(TOKEN));
    options.tls = Some(TlsFiles {
        cert: write(dir.path(), "server.pem", &server_cert),
        key: write(dir.path(), "server.key", &server_key),
        client_ca: Some(write(dir.path(), "ca.pem", &ca.pem())),
    });
    let agent = TestAgent::start_with(options).await;
    let url = format!("https://127.0.0.1:{}", agent.addr.port());
    let config = |identity: Option<(Vec<u8>, Vec<u8>)>| {
        let mut config = RemoteConfig::new(url.clone()).token(TOKEN).tls({
            let mut tls = RemoteTls::default().ca_pem(ca.pem());
            tls.identity = identity;
            tls
        });
        config.attempts = 1;
        config
    };

    let remote = RemoteRuntime::connect(config(Some(ca.issue(&["gateway"]))))
        .await
        .unwrap();
    assert!(remote.list().await.unwrap().is_empty());

    let err = RemoteRuntime::connect(config(None)).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(_)),
        "no client certificate: {err:?}"
    );

    let rogue = Ca::new("someone else");
    let err = RemoteRuntime::connect(config(Some(rogue.issue(&["gateway"]))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(_)),
        "foreign client certificate: {err:?}"
    );

    let mut plain =
        RemoteConfig::new(format!("http://127.0.0.1:{}", agent.addr.port())).token(TOKEN);
    plain.attempts = 1;
    assert!(
        RemoteRuntime::connect(plain).await.is_err(),
        "plain HTTP/2 to a TLS port"
    );
}

#[tokio::test]
async fn unreadable_tls_files_are_named_in_the_error() {
    let files = TlsFiles {
        cert: "/nonexistent/esb/server.pem".into(),
        key: "/nonexistent/esb/server.key".into(),
        client_ca: None,
    };
    let err = files.load().unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/esb/server.pem"),
        "{err}"
    );
}
