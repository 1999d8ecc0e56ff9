//! The TLS material a configuration names: PEM files read (relative to
//! the configuration file's folder) and turned into the shards'
//! [`TlsSetup`]. Done when the configuration is loaded, so `check-config`
//! and a reload catch a missing file or a key that does not fit its
//! certificate, and a reload publishes new certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sbc_core::net::Transport;
use sbc_dataplane::tls::{Identity, TlsError, TlsSetup, TrunkTls};

use super::error::Problem;
use super::file::ConfigFile;
use super::path::FieldPath;

/// `path` as written, or relative to `base` when it is relative.
fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn read(base: &Path, path: &str, field: &FieldPath) -> Result<Vec<u8>, Problem> {
    let full = resolve(base, path);
    std::fs::read(&full).map_err(|e| {
        Problem::new(
            field.clone(),
            format!("cannot read {}: {e}", full.display()),
        )
    })
}

fn certificates(
    base: &Path,
    path: &str,
    field: &FieldPath,
) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let pem = read(base, path, field)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::new(field.clone(), format!("{path}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(Problem::new(
            field.clone(),
            format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

fn private_key(
    base: &Path,
    path: &str,
    field: &FieldPath,
) -> Result<PrivateKeyDer<'static>, Problem> {
    let pem = read(base, path, field)?;
    // Never quote the file: it is a secret.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        Problem::new(
            field.clone(),
            format!("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"),
        )
    })
}

fn identity(
    base: &Path,
    certificate: &str,
    key: &str,
    path: &FieldPath,
) -> Result<Identity, Problem> {
    Ok(Identity {
        chain: certificates(base, certificate, &path.key("certificate"))?,
        key: private_key(base, key, &path.key("key"))?,
    })
}

/// Reads every PEM file the configuration names and builds the TLS
/// settings. A configuration without TLS gives empty settings.
pub fn build(file: &ConfigFile, base: &Path) -> Result<Arc<TlsSetup>, Problem> {
    let root = FieldPath::root();
    let server_path = root.key("sip").key("tls");
    let server = file
        .sip
        .tls
        .as_ref()
        .map(|t| identity(base, &t.certificate, &t.key, &server_path))
        .transpose()?;
    let mut trunks = Vec::new();
    let mut paths = Vec::new();
    for (i, trunk) in file.trunks.iter().enumerate() {
        let Some(tls) = &trunk.tls else {
            continue;
        };
        let path = root.key("trunks").index(i).key("tls");
        let address = trunk
            .address
            .map(|a| a.0)
            .filter(|_| trunk.transport.0 == Transport::Tls && trunk.host.is_none());
        // Where the SBC connects, and the name the trunk's certificate
        // must carry there (default: the address's IP).
        let connect = match address {
            None => None,
            Some(a) => Some((
                a,
                match &tls.server_name {
                    None => ServerName::IpAddress(a.ip().into()),
                    Some(name) => ServerName::try_from(name.clone()).map_err(|_| {
                        Problem::new(
                            path.key("server_name"),
                            format!("{name:?} is not a DNS name or IP address"),
                        )
                    })?,
                },
            )),
        };
        let client_identity = match (&tls.certificate, &tls.key) {
            (Some(c), Some(k)) => Some(identity(base, c, k, &path)?),
            _ => None,
        };
        trunks.push(TrunkTls {
            connect,
            sources: trunk.sources.iter().map(|n| n.0).collect(),
            ca: certificates(base, &tls.ca, &path.key("ca"))?,
            client_identity,
            verify_client: tls.verify_client,
        });
        paths.push(path);
    }
    TlsSetup::new(server.as_ref(), &trunks)
        .map(Arc::new)
        .map_err(|e| match e {
            TlsError::Server(message) => Problem::new(server_path, message),
            TlsError::Trunk { index, message } => {
                Problem::new(paths.get(index).cloned().unwrap_or_default(), message)
            }
        })
}
