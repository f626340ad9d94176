//! TLS for every link mailfleet serves or dials, with one stack: rustls on
//! ring, certificates and keys in PEM files, and errors that name the file
//! and the reason.
//!
//! - A server ([`ServerTls`]: LMTP's STARTTLS, the account API's HTTPS) has
//!   a certificate chain and its key, and with `client_ca_file` requires a
//!   client certificate that CA signed (mutual TLS).
//! - A client ([`ClientTls`]: the `mailfleet account` CLI, the directory's
//!   `ldaps://`, the notifier's STARTTLS) trusts `ca_file`, or without it
//!   the system's roots, and verifies the server's name. With `cert_file`
//!   and `key_file` it shows its own certificate.
//!
//! Nothing here turns verification off: a test uses its own CA
//! (`ops/certs`).

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    crypto::{ring, CryptoProvider},
    server::WebPkiClientVerifier,
    ClientConfig, RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

pub use tokio_rustls::{client::TlsStream as ClientStream, server::TlsStream as ServerStream};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A server's side: `[<section>.tls]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM: the certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CAs whose client certificates are accepted. Set, every
    /// client must show one (mutual TLS); unset, none is asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// A client's side: what it trusts, and what it shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM: the CAs trusted to sign the server's certificate. Unset: the
    /// system's roots (`/etc/ssl/certs`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM: this client's certificate chain, for a server that asks for one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM: its key. Goes with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Why TLS could not be set up. Each names the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: no PEM {what} in it")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: bad PEM {what}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{path}: a CA certificate rustls refuses: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("{cert} with {key}: not a usable certificate and key: {reason}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{0} is set without {1}: a client certificate needs both")]
    HalfIdentity(&'static str, &'static str),
    #[error("no trusted CA: ca_file is unset and the system has no root certificates")]
    NoRoots,
    #[error("{0:?}: not a host name or IP address to verify a certificate against")]
    ServerName(String),
}

/// The crypto provider of every config built here: ring, as ldap3's and
/// lettre's TLS use it (one provider in the binary, and no aws-lc C build).
/// rustls deprecates it only because ring has no post-quantum key
/// exchange; X25519 and the NIST curves remain the key exchanges offered.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: path.to_path_buf(),
            what: "private key",
        },
        e => TlsError::Pem {
            path: path.to_path_buf(),
            what: "private key",
            reason: e.to_string(),
        },
    })
}

/// A root store of the CAs in `path`.
fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The system's roots; those it cannot parse are skipped, as every TLS
/// client does.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(roots)
}

impl ServerTls {
    /// The rustls config, every file read and checked now, so that a bad
    /// file stops the service at start rather than at the first client.
    pub fn config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = certificates(&self.cert_file)?;
        let key = private_key(&self.key_file)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots_from(ca)?),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Identity {
                cert: self.cert_file.clone(),
                key: self.key_file.clone(),
                reason: e.to_string(),
            })?;
        Ok(Arc::new(config))
    }

    /// An acceptor for tokio streams.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(self.config()?))
    }
}

impl ClientTls {
    /// The rustls config: the server's certificate is verified against
    /// `ca_file` (or the system's roots) and the name dialled.
    pub fn config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = match &self.ca_file {
            Some(ca) => roots_from(ca)?,
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| TlsError::Identity {
                    cert: cert.clone(),
                    key: key.clone(),
                    reason: e.to_string(),
                })?,
            (Some(_), None) => return Err(TlsError::HalfIdentity("cert_file", "key_file")),
            (None, Some(_)) => return Err(TlsError::HalfIdentity("key_file", "cert_file")),
        };
        Ok(Arc::new(config))
    }

    /// A connector for tokio streams.
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        Ok(TlsConnector::from(self.config()?))
    }
}

/// The name a server's certificate must carry: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// A failed handshake's reason, as rustls gives it (for example "invalid
/// peer certificate: UnknownIssuer"), for logs and error messages.
pub struct Reason<'a>(pub &'a io::Error);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .0
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(tls) => write!(f, "{tls}"),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests;
