//! Registry credentials (env, `~/.docker/config.json`, credential helpers)
//! and the `WWW-Authenticate` challenge parser. Secrets never reach Debug.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Credentials for one registry.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Username for Basic auth / token requests.
    pub username: Option<String>,
    /// Password (secret).
    pub password: Option<String>,
    /// A ready bearer token (secret), used as-is.
    pub token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credentials {
    /// Whether any credential is set.
    pub fn is_empty(&self) -> bool {
        self.username.is_none() && self.password.is_none() && self.token.is_none()
    }

    /// Resolves credentials for `host`: `PF_OCI_USERNAME`/`PF_OCI_PASSWORD`/
    /// `PF_OCI_TOKEN`, else `$DOCKER_CONFIG/config.json` (or
    /// `~/.docker/config.json`): `auths`, `credHelpers`, `credsStore`.
    pub fn resolve(host: &str) -> Credentials {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let c = Credentials {
            username: env("PF_OCI_USERNAME"),
            password: env("PF_OCI_PASSWORD"),
            token: env("PF_OCI_TOKEN"),
        };
        if !c.is_empty() {
            return c;
        }
        docker_config(host).unwrap_or_default()
    }
}

fn docker_config(host: &str) -> Option<Credentials> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker"))
        })?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let keys = [
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
    ];
    if let Some(helper) = v["credHelpers"][host].as_str() {
        return cred_helper(helper, host);
    }
    for k in &keys {
        let e = &v["auths"][k];
        if let Some(tok) = e["identitytoken"].as_str() {
            return Some(Credentials {
                username: Some("<token>".into()),
                password: Some(tok.to_string()),
                token: None,
            });
        }
        if let Some(a) = e["auth"].as_str() {
            let decoded = STANDARD.decode(a).ok()?;
            let s = String::from_utf8(decoded).ok()?;
            let (u, p) = s.split_once(':')?;
            return Some(Credentials {
                username: Some(u.into()),
                password: Some(p.into()),
                token: None,
            });
        }
    }
    if let Some(store) = v["credsStore"].as_str() {
        return cred_helper(store, host);
    }
    None
}

/// Runs `docker-credential-<name> get` with `host` on stdin.
fn cred_helper(name: &str, host: &str) -> Option<Credentials> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let mut child = Command::new(format!("docker-credential-{name}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(host.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Credentials {
        username: v["Username"].as_str().map(str::to_string),
        password: v["Secret"].as_str().map(str::to_string),
        token: None,
    })
}

/// Whether credentials for `registry_host` (Basic, or a Bearer token it
/// issued) may go with a request to `url`: only to the registry host itself
/// (same host and port; a server-chosen upload `Location` elsewhere gets
/// none) and never over plain HTTP unless that host is loopback.
pub fn may_send_credentials(url: &str, registry_host: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let Ok(own) = reqwest::Url::parse(&format!("{}://{registry_host}/", u.scheme())) else {
        return false;
    };
    let same = u.host() == own.host()
        && u.port_or_known_default() == own.port_or_known_default()
        && u.username().is_empty();
    same && secure_or_loopback(&u)
}

/// Whether a token request to the Bearer challenge's `realm` may carry the
/// user's credentials: HTTPS, or plain HTTP to a loopback host. A realm on
/// another host is fine (token services often are); plain HTTP elsewhere
/// is not, and gets an anonymous token request instead.
pub fn may_send_to_realm(realm: &str) -> bool {
    reqwest::Url::parse(realm).is_ok_and(|u| secure_or_loopback(&u))
}

fn secure_or_loopback(u: &reqwest::Url) -> bool {
    match u.scheme() {
        "https" => true,
        "http" => u.host_str().is_some_and(|h| {
            crate::client::is_loopback(h.trim_start_matches('[').trim_end_matches(']'))
        }),
        _ => false,
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm=..,service=..,scope=..`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name.
        service: Option<String>,
        /// Scope the registry asked for.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(rest);
            Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        }
        _ => None,
    }
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn credentials_go_only_to_the_registry_host_over_https_or_loopback() {
        let reg = "registry.example.com";
        assert!(may_send_credentials(
            "https://registry.example.com/v2/",
            reg
        ));
        assert!(may_send_credentials(
            "https://REGISTRY.example.com:443/v2/x",
            reg
        ));
        // Another host, another port, plain HTTP, userinfo tricks: no.
        for url in [
            "https://evil.example.com/v2/",
            "https://registry.example.com:8443/v2/",
            "http://registry.example.com/v2/",
            "https://registry.example.com@evil.example.com/",
            "https://user@registry.example.com/",
            "ftp://registry.example.com/",
            "not a url",
        ] {
            assert!(!may_send_credentials(url, reg), "{url}");
        }
        let lo = "127.0.0.1:5000";
        assert!(may_send_credentials("http://127.0.0.1:5000/v2/", lo));
        assert!(!may_send_credentials("http://127.0.0.1:5001/v2/", lo));
        assert!(may_send_credentials("http://[::1]:5000/v2/", "[::1]:5000"));
        assert!(may_send_credentials(
            "http://localhost:5000/v2/",
            "localhost:5000"
        ));
        // An explicit default port is the same authority.
        assert!(may_send_credentials(
            "https://r.example:443/v2/",
            "r.example"
        ));
        assert!(may_send_credentials(
            "https://r.example/v2/",
            "r.example:443"
        ));
        // Plain HTTP to a non-loopback registry (an --insecure one): never.
        assert!(!may_send_credentials(
            "http://10.0.0.5:5000/v2/",
            "10.0.0.5:5000"
        ));
    }

    #[test]
    fn realm_gets_credentials_only_over_https_or_loopback() {
        assert!(may_send_to_realm("https://auth.example.com/token"));
        assert!(may_send_to_realm("http://127.0.0.1:9999/token"));
        assert!(may_send_to_realm("http://localhost/token"));
        assert!(!may_send_to_realm("http://auth.example.com/token"));
        assert!(!may_send_to_realm("http://10.1.2.3/token"));
        assert!(!may_send_to_realm("file:///etc/passwd"));
        assert!(!may_send_to_realm("garbage"));
    }

    #[test]
    fn debug_redacts() {
        let c = Credentials {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            token: Some("tok123".into()),
        };
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("tok123"), "{d}");
    }
}
