//! rustls server settings: certificate files, or a self-signed certificate for local use.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::TlsConfig;
use crate::error::TlsError;

/// A TLS acceptor offering h2 and HTTP/1.1.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let (certs, key) = match config {
        TlsConfig::Files { cert, key } => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|source| TlsError::Pem {
                    path: cert.clone(),
                    source,
                })?;
            if certs.is_empty() {
                return Err(TlsError::NoCertificate(cert.clone()));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
                path: key.clone(),
                source,
            })?;
            (certs, key)
        }
        TlsConfig::SelfSigned => {
            let generated =
                rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                    .map_err(TlsError::Generate)?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            ));
            (vec![generated.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Settings)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Settings)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
