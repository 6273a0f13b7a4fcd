//! The in-process VictoriaLogs over HTTPS, with a certificate of a CA made for the test
//! (include `support/mod.rs` as `victorialogs` beside it).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::victorialogs::{Io, VictoriaLogs, Wrap};

/// A server at `https://127.0.0.1:PORT` and the PEM of the CA that signed its certificate.
pub async fn start_tls() -> (VictoriaLogs, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "esb-logs test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let wrap: Wrap = Arc::new(move |stream| {
        let acceptor = acceptor.clone();
        Box::pin(async move {
            let tls = acceptor.accept(stream).await.ok()?;
            Some(Box::new(tls) as Box<dyn Io>)
        })
    });
    let server = VictoriaLogs::start_wrapped(false, "https", wrap).await;
    (server, ca.pem())
}
