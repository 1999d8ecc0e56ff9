//! TLS settings the shards use for SIP over TLS (RFC 3261 §26.2, RFC 5630
//! on how SIP uses it): the SBC's own certificate for its TLS listeners,
//! and per trunk the authority its certificate must chain to, the name it
//! must carry, the client certificate the SBC presents to it (mutual TLS),
//! and whether the trunk itself must present one when it connects.
//!
//! Built once per configuration (at start and on every reload) by the
//! control plane and published through an `ArcSwap`: a connection takes
//! the settings current when it is accepted or opened and keeps them, so a
//! reload (new certificates) never drops an established connection.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
pub use rustls;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// A certificate chain (leaf first) and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// One trunk's TLS settings.
#[derive(Debug)]
pub struct TrunkTls {
    /// Where the SBC connects to the trunk over TLS, and the name (DNS
    /// name or IP address) its certificate must carry there; `None` when
    /// it does not connect (the trunk only connects to the SBC).
    pub connect: Option<(SocketAddr, ServerName<'static>)>,
    /// The trunk's source networks (its connections to the SBC).
    pub sources: Vec<IpNet>,
    /// Authorities the trunk's certificate must chain to.
    pub ca: Vec<CertificateDer<'static>>,
    /// The certificate the SBC presents when it connects (mutual TLS).
    pub client_identity: Option<Identity>,
    /// The trunk's own connections to the SBC must present a certificate
    /// that chains to `ca` (mutual TLS the other way).
    pub verify_client: bool,
}

/// Why TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The SBC's certificate or key (`sip.tls`).
    #[error("{0}")]
    Server(String),
    /// Trunk number `index` of the list given.
    #[error("{message}")]
    Trunk { index: usize, message: String },
}

/// The settings a shard's TLS connections start from.
#[derive(Debug, Default)]
pub struct TlsSetup {
    /// For connections to the TLS listeners.
    server: Option<Arc<ServerConfig>>,
    /// For connections from sources that must present a certificate, most
    /// specific network first.
    verified_sources: Vec<(IpNet, Arc<ServerConfig>)>,
    /// For connections the SBC opens, by the peer's address.
    clients: HashMap<SocketAddr, (ServerName<'static>, Arc<ClientConfig>)>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for cert in ca {
        store
            .add(cert.clone())
            .map_err(|e| format!("the CA certificate cannot be used: {e}"))?;
    }
    if store.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    Ok(Arc::new(store))
}

fn server_config(
    identity: &Identity,
    client_ca: Option<&[CertificateDer<'static>]>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|e| format!("cannot verify client certificates: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| format!("the certificate and key cannot be used: {e}"))?;
    Ok(Arc::new(config))
}

fn client_config(trunk: &TrunkTls) -> Result<Arc<ClientConfig>, String> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(&trunk.ca)?, provider())
        .build()
        .map_err(|e| format!("cannot verify the trunk's certificate: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_webpki_verifier(verifier);
    let config = match &trunk.client_identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| format!("the client certificate and key cannot be used: {e}"))?,
    };
    Ok(Arc::new(config))
}

impl TlsSetup {
    /// Builds the settings: `server` is the SBC's certificate (needed when
    /// it has a TLS listener), `trunks` the trunks with TLS settings.
    /// Errors say which part is wrong.
    pub fn new(server: Option<&Identity>, trunks: &[TrunkTls]) -> Result<TlsSetup, TlsError> {
        let mut setup = TlsSetup::default();
        if let Some(identity) = server {
            setup.server = Some(server_config(identity, None).map_err(TlsError::Server)?);
        }
        for (index, trunk) in trunks.iter().enumerate() {
            let fail = |message: String| TlsError::Trunk { index, message };
            if let Some((address, name)) = &trunk.connect {
                let client = client_config(trunk).map_err(fail)?;
                setup.clients.insert(*address, (name.clone(), client));
            }
            if trunk.verify_client {
                let Some(identity) = server else {
                    return Err(fail(
                        "verify_client needs the SBC's own certificate (sip.tls)".into(),
                    ));
                };
                let config = server_config(identity, Some(&trunk.ca)).map_err(fail)?;
                for net in &trunk.sources {
                    setup.verified_sources.push((*net, Arc::clone(&config)));
                }
            }
        }
        setup
            .verified_sources
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(setup)
    }

    /// Whether the SBC can accept TLS connections (it has a certificate).
    pub fn serves(&self) -> bool {
        self.server.is_some()
    }

    /// The server side of a connection accepted from `remote`: one that
    /// demands a client certificate when `remote` belongs to a trunk that
    /// must present one. `None` without a certificate of the SBC's own.
    pub(crate) fn accept(&self, remote: IpAddr) -> Option<ServerConnection> {
        let remote = sbc_core::net::canonical(remote);
        let config = self
            .verified_sources
            .iter()
            .find(|(net, _)| net.contains(&remote))
            .map(|(_, c)| c)
            .or(self.server.as_ref())?;
        ServerConnection::new(Arc::clone(config)).ok()
    }

    /// The client side of a connection the SBC opens to `remote`: only to
    /// trunks with TLS settings (the SBC knows no other authority).
    pub(crate) fn connect(&self, remote: SocketAddr) -> Option<ClientConnection> {
        let (name, config) = self.clients.get(&remote)?;
        ClientConnection::new(Arc::clone(config), name.clone()).ok()
    }
}
