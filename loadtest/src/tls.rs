//! SIPp's TLS transports (`-t l1`, `-t ln`): what the TCP connections of
//! [`crate::stream`] run rustls with. As SIPp:
//! - the certificate and key come from `-tls_cert` / `-tls_key` (default
//!   `cacert.pem` / `cakey.pem`);
//! - without `-tls_ca` no certificate is verified: a caller accepts any
//!   server's, a callee asks for none;
//! - with `-tls_ca` both sides verify the peer's certificate against that
//!   CA, and a callee requires one from each caller;
//! - `-tls_crl` adds the CA's revocation list to that check (the whole
//!   chain is checked; it needs `-tls_ca`);
//! - `-tls_version` pins the protocol version (1.2; also 1.3, which SIPp
//!   3.6 does not offer). rustls has no TLS 1.0 or 1.1, so those are
//!   refused with the reason.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};

/// The configurations the threads' TLS connections are made with.
#[derive(Debug)]
pub struct TlsSetup {
    /// For connections this side opens.
    pub client: Arc<rustls::ClientConfig>,
    /// For connections it accepts; `None` when no certificate loaded (a
    /// caller that only connects): an accepted connection is closed.
    pub server: Option<Arc<rustls::ServerConfig>>,
}

/// Where the certificate, its key, the CA to verify peers against and
/// its revocation list are.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: Option<&'a Path>,
    pub crl: Option<&'a Path>,
}

/// The protocol versions `-tls_version` allows: SIPp's value (a number;
/// 0, the default, negotiates).
pub fn versions(
    value: Option<&str>,
) -> Result<&'static [&'static SupportedProtocolVersion], String> {
    static TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    let Some(v) = value else {
        return Ok(rustls::DEFAULT_VERSIONS);
    };
    // A number, as SIPp reads it: in tenths, so 1.2 and 1.20 are one.
    let tenths = v
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && ((x * 10.0).round() - x * 10.0).abs() < 1e-6)
        .map(|x| (x * 10.0).round() as i64);
    match tenths {
        Some(0) => Ok(rustls::DEFAULT_VERSIONS),
        Some(12) => Ok(&TLS12),
        Some(13) => Ok(&TLS13),
        Some(10 | 11) => Err(format!(
            "-tls_version {v}: TLS 1.0 and 1.1 are not implemented by rustls (sbc-load offers 1.2 and 1.3)"
        )),
        _ => Err(format!(
            "-tls_version {v}: expected 1.2 or 1.3 (or 0: negotiate)"
        )),
    }
}

impl TlsSetup {
    /// Loads the files; `listens`: this side accepts connections (a
    /// callee), so its certificate and key must load. A caller without
    /// them connects with no client certificate.
    pub fn load(
        files: Files<'_>,
        listens: bool,
        versions: &'static [&'static SupportedProtocolVersion],
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = match identity(files) {
            Ok(id) => Some(id),
            Err(e) if listens => return Err(e),
            Err(_) => None,
        };
        let roots = match files.ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(ca, "-tls_ca")? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("-tls_ca {}: {e}", ca.display()))?;
                }
                Some(Arc::new(roots))
            }
            None => None,
        };
        let crls = match (files.crl, &roots) {
            (Some(crl), Some(_)) => revocations(crl)?,
            (Some(crl), None) => {
                return Err(format!(
                    "-tls_crl {}: give -tls_ca too (the CA whose revocation list it is)",
                    crl.display()
                ));
            }
            (None, _) => Vec::new(),
        };
        let server = match &identity {
            Some((chain, key)) => {
                let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                    .with_protocol_versions(versions)
                    .map_err(|e| format!("TLS: {e}"))?;
                let builder = match &roots {
                    // As SIPp: with a CA, callers must present a
                    // certificate it signed.
                    Some(roots) => builder.with_client_cert_verifier(
                        WebPkiClientVerifier::builder_with_provider(
                            Arc::clone(roots),
                            Arc::clone(&provider),
                        )
                        .with_crls(crls.clone())
                        .build()
                        .map_err(|e| format!("-tls_ca: {e}"))?,
                    ),
                    None => builder.with_no_client_auth(),
                };
                Some(Arc::new(
                    builder
                        .with_single_cert(chain.clone(), key.clone_key())
                        .map_err(|e| {
                            format!(
                                "-tls_cert {} / -tls_key {}: {e}",
                                files.cert.display(),
                                files.key.display()
                            )
                        })?,
                ))
            }
            None => None,
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match roots {
            Some(roots) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        roots,
                        Arc::clone(&provider),
                    )
                    .with_crls(crls)
                    .build()
                    .map_err(|e| format!("-tls_ca: {e}"))?,
                ))),
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

/// The revocation lists of a PEM file (at least one).
fn revocations(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("-tls_crl {}: {e}", path.display()))?;
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("-tls_crl {}: not a PEM revocation list", path.display()))?;
    if crls.is_empty() {
        return Err(format!(
            "-tls_crl {}: no revocation list in it",
            path.display()
        ));
    }
    Ok(crls)
}

/// `-tls_ca`: the server's certificate chain is verified (signed by the
/// CA, in its validity, not revoked when `-tls_crl` is given) but not the
/// name in it, as SIPp's OpenSSL check does: a load test connects to an
/// address, often not the one the certificate names.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn certs(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/examples/certs")
            .join(name)
    }

    /// A callee with `cert` and a caller with `client_cert` (or none);
    /// both verify against the test CA (and its revocation list) when
    /// `ca` (`crl`).
    fn pair(
        cert: &str,
        client_cert: Option<&str>,
        ca: bool,
        crl: bool,
        versions: &'static [&'static SupportedProtocolVersion],
    ) -> (TlsSetup, TlsSetup) {
        let (ca_file, crl_file) = (certs("ca.crt"), certs("ca.crl"));
        let side = |name: &str, listens: bool| {
            let (c, k) = (certs(&format!("{name}.crt")), certs(&format!("{name}.key")));
            let files = Files {
                cert: &c,
                key: &k,
                ca: ca.then_some(ca_file.as_path()),
                crl: crl.then_some(crl_file.as_path()),
            };
            TlsSetup::load(files, listens, versions).unwrap()
        };
        (
            side(cert, true),
            side(client_cert.unwrap_or("no-such"), false),
        )
    }

    /// A handshake where both sides verify the other against the test CA
    /// (and its revocation list when `crl`): the callee presents `cert`,
    /// the caller sbc-client's.
    fn mutual(cert: &str, crl: bool) -> Result<rustls::ProtocolVersion, rustls::Error> {
        let (callee, caller) = pair(
            cert,
            Some("sbc-client"),
            true,
            crl,
            rustls::DEFAULT_VERSIONS,
        );
        handshake(&callee, &caller)
    }

    /// Runs the handshake in memory: the version agreed, or the first
    /// error either side saw.
    fn handshake(
        callee: &TlsSetup,
        caller: &TlsSetup,
    ) -> Result<rustls::ProtocolVersion, rustls::Error> {
        let mut server = callee.accept().unwrap();
        let mut client = caller.connect("127.0.0.1".parse().unwrap()).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets()?;
            }
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(client.protocol_version().unwrap());
            }
        }
        panic!("the handshake did not end");
    }

    #[test]
    fn without_a_ca_nothing_is_verified() {
        // The revoked certificate is not looked at, and the caller needs
        // no certificate.
        let (callee, caller) = pair("revoked", None, false, false, rustls::DEFAULT_VERSIONS);
        assert_eq!(
            handshake(&callee, &caller),
            Ok(rustls::ProtocolVersion::TLSv1_3)
        );
    }

    #[test]
    fn with_a_ca_the_callee_requires_a_certificate_it_signed() {
        let (callee, caller) = pair("localhost", None, true, false, rustls::DEFAULT_VERSIONS);
        assert!(matches!(
            handshake(&callee, &caller),
            Err(rustls::Error::NoCertificatesPresented)
        ));
        assert!(mutual("localhost", false).is_ok());
    }

    #[test]
    fn a_revoked_certificate_fails_only_with_the_revocation_list() {
        assert!(mutual("revoked", false).is_ok());
        let outcome = mutual("revoked", true);
        assert!(
            matches!(
                outcome,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Revoked
                ))
            ),
            "{:?}",
            outcome
        );
        // A certificate the list does not name still passes.
        assert!(mutual("localhost", true).is_ok());
    }

    #[test]
    fn the_chain_is_verified_not_the_name() {
        // itsp.crt names itsp.example, not the address connected to: as
        // SIPp, accepted when the CA signed it.
        assert!(mutual("itsp", false).is_ok());
        // A certificate the CA did not sign (the CA's own, self-signed,
        // offered as a server's: not a CA-issued end entity) is refused.
        let outcome = mutual("ca", false);
        assert!(
            matches!(outcome, Err(rustls::Error::InvalidCertificate(_))),
            "{:?}",
            outcome
        );
    }

    #[test]
    fn a_revocation_list_needs_its_ca() {
        let (c, k, crl) = (
            certs("localhost.crt"),
            certs("localhost.key"),
            certs("ca.crl"),
        );
        let files = Files {
            cert: &c,
            key: &k,
            ca: None,
            crl: Some(&crl),
        };
        let e = TlsSetup::load(files, true, rustls::DEFAULT_VERSIONS).unwrap_err();
        assert!(e.contains("-tls_crl") && e.contains("-tls_ca"), "{e}");
        let files = Files {
            crl: Some(&c),
            ca: Some(&c),
            ..files
        };
        let e = TlsSetup::load(files, true, rustls::DEFAULT_VERSIONS).unwrap_err();
        assert!(e.contains("revocation list"), "{e}");
    }

    #[test]
    fn tls_version_pins_the_protocol() {
        assert_eq!(versions(None).unwrap(), rustls::DEFAULT_VERSIONS);
        assert_eq!(versions(Some("0")).unwrap(), rustls::DEFAULT_VERSIONS);
        let (callee, caller) = pair(
            "localhost",
            None,
            false,
            false,
            versions(Some("1.2")).unwrap(),
        );
        assert_eq!(
            handshake(&callee, &caller),
            Ok(rustls::ProtocolVersion::TLSv1_2)
        );
        let (callee, caller) = pair(
            "localhost",
            None,
            false,
            false,
            versions(Some("1.3")).unwrap(),
        );
        assert_eq!(
            handshake(&callee, &caller),
            Ok(rustls::ProtocolVersion::TLSv1_3)
        );
        // A 1.2-only caller and a 1.3-only callee find no version.
        let (callee, _) = pair(
            "localhost",
            None,
            false,
            false,
            versions(Some("1.3")).unwrap(),
        );
        let (_, caller) = pair(
            "localhost",
            None,
            false,
            false,
            versions(Some("1.2")).unwrap(),
        );
        assert!(handshake(&callee, &caller).is_err());
        for bad in ["1.0", "1.1"] {
            let e = versions(Some(bad)).unwrap_err();
            assert!(e.contains("not implemented by rustls"), "{e}");
        }
        assert!(
            versions(Some("tls13"))
                .unwrap_err()
                .contains("expected 1.2 or 1.3")
        );
    }
}
