//! The HTTP policy every network backend shares, written once.
//!
//! Always compiled: the loopback rule ([`is_loopback_host`],
//! [`is_loopback_url`], [`check_plain_http`]): plain `http://` is allowed only
//! to loopback hosts unless the user opts into `insecure`. The S3 backend
//! applies it to its own client.
//!
//! Behind cargo feature `http` (enabled by the OCI, HF and IPFS backends, off
//! in the file-only build, so that build has no HTTP stack):
//! - [`client`]: the one reqwest client builder: rustls, `Config.ca_file`
//!   trusted, a connect timeout and an IDLE read timeout (`Config.timeout`;
//!   never a whole-request timeout, so a multi-GiB stream is not cut off
//!   while bytes keep flowing).
//! - [`Failure`] + [`classify`]: one mapping from status, headers and body to
//!   [`RegistryError`] (with `Retry-After`), where a
//!   backend adds only what is its own through [`Classify`] (OCI error codes,
//!   Hub error headers, IPFS RPC messages).
//! - [`send_error`]: a request that got no response, as a transport error
//!   that keeps its source.

use std::net::IpAddr;

use crate::error::{RegistryError, Result};

#[cfg(feature = "http")]
mod classify;
#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
pub use classify::{classify, Class, Classify, Failure, MAX_ERROR_BODY};
#[cfg(feature = "http")]
pub use client::{client, install_crypto_provider, send_error, CONNECT_TIMEOUT};

/// Whether `host` (`name`, `name:port`, `ip`, `ip:port`, `[v6]:port`) is loopback:
/// `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let h = if let Some(inner) = host.strip_prefix('[') {
        inner.split(']').next().unwrap_or("")
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or("")
    } else {
        host
    };
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether the host of `url` (`scheme://[user@]host[:port]/...`) is loopback.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    is_loopback_host(host)
}

/// Whether plain `http://` to `url` is refused: it is `http://`, not to a
/// loopback host, and `insecure` is off. HTTPS URLs are always allowed.
pub fn plain_http_refused(url: &str, insecure: bool) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        && !insecure
        && !is_loopback_url(url)
}

/// `Ok` unless [`plain_http_refused`]; the error names the setting `what`
/// (e.g. `HF_ENDPOINT`), never the URL (it may carry credentials).
pub fn check_plain_http(what: &str, url: &str, insecure: bool) -> Result<()> {
    if plain_http_refused(url, insecure) {
        return Err(RegistryError::invalid(
            what,
            "plain http:// is only allowed for loopback hosts or with --insecure",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_urls() {
        for h in [
            "127.0.0.1:5000",
            "localhost",
            "LOCALHOST:80",
            "[::1]:5000",
            "::1",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "registry.example.com",
            "10.0.0.1:5000",
            "example.com:5000",
            "127.example.com",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
        assert!(is_loopback_url("http://127.0.0.1:9000/x"));
        assert!(is_loopback_url("http://user:pw@localhost:9000"));
        assert!(!is_loopback_url("http://localhost.evil.com"));
        assert!(!is_loopback_url("http://127.0.0.1@evil.com/"));
        assert!(!is_loopback_url("https://s3.amazonaws.com"));
    }

    #[test]
    fn plain_http_only_to_loopback_or_insecure() {
        assert!(!plain_http_refused("https://example.com", false));
        assert!(!plain_http_refused("http://127.0.0.1:5001", false));
        assert!(!plain_http_refused("HTTP://localhost", false));
        assert!(plain_http_refused("http://example.com", false));
        assert!(plain_http_refused("Http://example.com", false));
        assert!(!plain_http_refused("http://example.com", true));
        let e = check_plain_http("IPFS_API", "http://u:secret@example.com", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("IPFS_API") && !e.contains("secret"), "{e}");
    }
}
