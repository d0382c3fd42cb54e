//! The one reqwest client builder and the mapping of a request that got no
//! response.

use std::time::Duration;

use crate::config::Config;
use crate::error::{RegistryError, Result};

/// Upper bound on the connect timeout (shorter when `Config.timeout` is).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Installs rustls's `ring` crypto provider as the process default, once.
///
/// reqwest (feature `rustls-no-provider`) and object_store build their
/// rustls configs from the process default, so this runs before any client
/// is built; the build then needs no aws-lc-rs (a C library). Idempotent: a
/// provider installed earlier (by this or by an embedder) is kept.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed; that one is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HTTP client every network backend uses: rustls with the system roots
/// plus `config.ca_file`; a connect timeout of at most [`CONNECT_TIMEOUT`];
/// `config.timeout` as an IDLE timeout per read (a large blob streams as long
/// as bytes keep flowing); pooled connections; a `pf-registry/<version>`
/// user agent. `backend` names the caller in errors (`oci host`, `hf`).
///
/// The loopback rule is the caller's: check URLs with
/// [`check_plain_http`](super::check_plain_http) before sending.
pub fn client(config: &Config, backend: &str) -> Result<reqwest::Client> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .tls_backend_rustls()
        .read_timeout(config.timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(config.timeout))
        .pool_max_idle_per_host(16)
        .user_agent(concat!("pf-registry/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &config.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| RegistryError::io(format!("reading CA file {}", ca.display()), e))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            RegistryError::invalid(format!("CA file {}", ca.display()), e.to_string())
        })?;
        b = b.tls_certs_merge([cert]);
    }
    b.build().map_err(|e| {
        RegistryError::permanent(backend, "building the HTTP client failed").with_source(e)
    })
}

/// A request to `what` that got no (complete) response: a transport error
/// keeping `e` as its source. Timeouts, connection failures and broken
/// bodies are retryable; anything else (a malformed URL, a redirect loop) is
/// not. The message never carries the URL (it may carry a query token).
pub fn send_error(backend: impl Into<String>, what: &str, e: reqwest::Error) -> RegistryError {
    let e = e.without_url();
    let message = format!("{what}: {e}");
    let retryable =
        e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() || e.is_decode();
    let err = if retryable {
        RegistryError::transient(backend, message)
    } else {
        RegistryError::permanent(backend, message)
    };
    err.with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Config {
            ca_file: Some(dir.path().join("missing.pem")),
            ..Config::default()
        };
        let e = client(&missing, "t").unwrap_err();
        assert!(matches!(e, RegistryError::Io { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert!(client(&Config::default(), "t").is_ok());
    }

    #[tokio::test]
    async fn connection_refused_is_retryable_and_keeps_its_source() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let http = client(&Config::default(), "t").unwrap();
        let e = http
            .get(format!("http://127.0.0.1:{port}/x?token=secret"))
            .send()
            .await
            .unwrap_err();
        let err = send_error("t", "GET x", e);
        assert!(err.is_retryable(), "{err}");
        assert!(std::error::Error::source(&err).is_some());
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
