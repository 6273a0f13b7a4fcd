//! rustls server settings: certificate files, or a self-signed certificate for local use.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;
use crate::config::TlsConfig;

/// A TLS acceptor offering h2 and HTTP/1.1.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, Error> {
    let (certs, key) = match config {
        TlsConfig::Files { cert, key } => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|err| Error::Tls(format!("{}: {err}", cert.display())))?;
            if certs.is_empty() {
                return Err(Error::Tls(format!(
                    "{}: no certificate in the file",
                    cert.display()
                )));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|err| Error::Tls(format!("{}: {err}", key.display())))?;
            (certs, key)
        }
        TlsConfig::SelfSigned => {
            let generated =
                rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                    .map_err(|err| Error::Tls(format!("cannot generate a certificate: {err}")))?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            ));
            (vec![generated.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::Tls(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| Error::Tls(format!("certificate and key do not fit: {err}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
