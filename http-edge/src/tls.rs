//! TLS for every annals listener and client: the server side from a
//! certificate chain and a key in PEM files, the client side trusting the
//! Mozilla roots (`webpki-roots`) and, when given, a private CA's PEM
//! certificates besides.
//!
//! Every configuration names its crypto provider (`ring`) explicitly:
//! rustls otherwise looks for a process-wide default, and a process whose
//! dependencies enable more than one provider has none, which panics at
//! the first handshake. [`install_default_provider`] sets the default as
//! well, for libraries that ask for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {} is not valid PEM: {detail}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{what} {} holds no {expected}", path.display())]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the certificate {} and the key {} do not make a TLS configuration: {source}", cert.display(), key.display())]
    Server {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("the CA certificate in {} cannot be trusted: {source}", path.display())]
    Ca {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Config(rustls::Error),
}

/// The one crypto provider of every annals TLS configuration.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring())
}

/// Makes [`provider`] the process-wide default, unless one is set already.
pub fn install_default_provider() {
    // An error means a default is installed already: that one stays.
    let _ = ring().install_default();
}

#[expect(
    deprecated,
    reason = "ring lacks post-quantum key exchange, but aws-lc-rs, the provider that has it, \
              builds C with cmake; reqwest and sqlx use ring too"
)]
fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The server side: the certificate chain in `cert` (the server's own
/// certificate first, then any intermediates) and its private key in
/// `key` (PKCS#8, PKCS#1 or SEC1), offering HTTP/1.1 by ALPN.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates("certificate file", cert)?;
    let bytes = read("key file", key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "key file",
            path: key.to_owned(),
            expected: "private key",
        },
        e => TlsError::Pem {
            what: "key file",
            path: key.to_owned(),
            detail: e.to_string(),
        },
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|source| TlsError::Server {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side (HTTP/1.1): verification on, trusting the Mozilla
/// roots and the CA certificates of `extra_ca` (a PEM file) when given.
pub fn client_config(extra_ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in certificates("CA file", path)? {
            roots.add(cert).map_err(|source| TlsError::Ca {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Every certificate of the PEM file `path`; at least one.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The certificate a TLS client refused, found anywhere in `error`'s
/// chain (an HTTP client wraps it in I/O errors), as rustls says it: a
/// refusal that no retry will change, unlike a server not up yet.
pub fn refused_certificate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let refusal = |e: &(dyn std::error::Error + 'static)| match e.downcast_ref::<rustls::Error>() {
        Some(e @ rustls::Error::InvalidCertificate(_)) => Some(e.to_string()),
        _ => None,
    };
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(found) = refusal(e) {
            return Some(found);
        }
        // `io::Error::source` skips the error an `io::Error` wraps (which
        // may be another `io::Error`): step into it instead.
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}
