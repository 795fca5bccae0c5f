//! rustls client configuration: which roots to trust, and an optional client
//! certificate.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::BuildError;

/// Which certificate authorities a TLS connection trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Roots {
    /// The Mozilla roots bundled in the binary (`webpki-roots`).
    #[default]
    WebPki,
    /// The platform's certificate store.
    Native,
    /// Only the CA certificates added with
    /// [`HyperTransportBuilder::add_root_pem`](crate::HyperTransportBuilder::add_root_pem).
    None,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TlsOptions {
    pub(crate) roots: Roots,
    pub(crate) extra_roots: Vec<PathBuf>,
    pub(crate) identity: Option<(PathBuf, PathBuf)>,
}

impl TlsOptions {
    pub(crate) fn client_config(&self) -> Result<ClientConfig, BuildError> {
        let mut store = RootCertStore::empty();
        match self.roots {
            Roots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Roots::Native => {
                let found = rustls_native_certs::load_native_certs();
                if found.certs.is_empty() {
                    return Err(BuildError::new(format!(
                        "no platform root certificates could be loaded: {:?}",
                        found.errors
                    )));
                }
                store.add_parsable_certificates(found.certs);
            }
            Roots::None => {}
        }
        for path in &self.extra_roots {
            for cert in read_certs(path)? {
                store.add(cert).map_err(|e| {
                    BuildError::new(format!("CA certificate in {}: {e}", path.display()))
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::new(format!("TLS set-up: {e}")))?
            .with_root_certificates(store);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    BuildError::new(format!("private key in {}: {e}", key.display()))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| BuildError::new(format!("client certificate: {e}")))
            }
        }
    }
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| BuildError::new(format!("certificates in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(BuildError::new(format!(
            "no PEM certificate found in {}",
            path.display()
        )));
    }
    Ok(certs)
}
