//! SIPp's TLS transports (`-t l1`, `-t ln`): what the TCP connections of
//! [`crate::stream`] run rustls with. As SIPp: the certificate and key
//! come from `-tls_cert` / `-tls_key` (default `cacert.pem` /
//! `cakey.pem`); a caller accepts any server certificate unless
//! `-tls_ca` names the CA to verify it against.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The configurations the threads' TLS connections are made with.
#[derive(Debug)]
pub struct TlsSetup {
    /// For connections this side opens.
    pub client: Arc<rustls::ClientConfig>,
    /// For connections it accepts; `None` when no certificate loaded (a
    /// caller that only connects): an accepted connection is closed.
    pub server: Option<Arc<rustls::ServerConfig>>,
}

/// Where the certificate, its key and the CA to verify peers against are.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: Option<&'a Path>,
}

impl TlsSetup {
    /// Loads the files; `listens`: this side accepts connections (a
    /// callee), so its certificate and key must load. A caller without
    /// them connects with no client certificate.
    pub fn load(files: Files<'_>, listens: bool) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = match identity(files) {
            Ok(id) => Some(id),
            Err(e) if listens => return Err(e),
            Err(_) => None,
        };
        let server = match &identity {
            Some((chain, key)) => Some(Arc::new(
                rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS: {e}"))?
                    .with_no_client_auth()
                    .with_single_cert(chain.clone(), key.clone_key())
                    .map_err(|e| {
                        format!(
                            "-tls_cert {} / -tls_key {}: {e}",
                            files.cert.display(),
                            files.key.display()
                        )
                    })?,
            )),
            None => None,
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match files.ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(ca, "-tls_ca")? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("-tls_ca {}: {e}", ca.display()))?;
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(Arc::clone(&provider)))),
        };
        let client = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("-tls_cert {}: {e}", files.cert.display()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(TlsSetup {
            client: Arc::new(client),
            server,
        })
    }

    /// A connection this side opens to `peer`; the server's name for it
    /// is its address (SIPp connects to addresses, not names).
    pub fn connect(&self, peer: std::net::IpAddr) -> Option<rustls::Connection> {
        rustls::ClientConnection::new(Arc::clone(&self.client), ServerName::from(peer))
            .ok()
            .map(|c| unbounded(rustls::Connection::Client(c)))
    }

    /// A connection accepted; `None` when this side has no certificate.
    pub fn accept(&self) -> Option<rustls::Connection> {
        let config = self.server.as_ref()?;
        rustls::ServerConnection::new(Arc::clone(config))
            .ok()
            .map(|c| unbounded(rustls::Connection::Server(c)))
    }
}

/// The session takes all the output it is given (as a plain
/// connection's queue does): rustls's default 64 KiB limit would leave
/// output that no socket event moves (before the handshake ends, a write
/// poll would fire again and again with nothing to write).
fn unbounded(mut c: rustls::Connection) -> rustls::Connection {
    c.set_buffer_limit(None);
    c
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificate chain and key of `-tls_cert` / `-tls_key`.
fn identity(files: Files<'_>) -> Result<Identity, String> {
    let chain = certificates(files.cert, "-tls_cert")?;
    let pem =
        std::fs::read(files.key).map_err(|e| format!("-tls_key {}: {e}", files.key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| format!("-tls_key {}: no private key in PEM", files.key.display()))?;
    Ok((chain, key))
}

/// The certificates of a PEM file (at least one).
fn certificates(path: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{option} {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{option} {}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{option} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// SIPp's default: the server's certificate is not checked (a load test
/// talks to the system under test, often with a self-signed one); the
/// handshake's signatures still are, with the certificate's key.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
