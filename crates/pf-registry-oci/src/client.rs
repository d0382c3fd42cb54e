//! HTTP client for one registry: scheme selection (HTTPS by default, plain
//! HTTP only for loopback or `insecure`), authentication (Basic, Bearer token
//! flow with per-scope caching) and status → typed error mapping.

use pf_registry_core::http::{self, Class, Classify, Failure};
use pf_registry_core::{Config, RegistryError, Result};
use reqwest::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::{
    may_send_credentials, may_send_to_realm, parse_challenge, Challenge, Credentials,
};

pub use pf_registry_core::http::is_loopback_host as is_loopback;

/// Authenticated client for one registry host.
pub struct Client {
    http: reqwest::Client,
    host: String,
    allow_http: bool,
    base: tokio::sync::OnceCell<String>,
    creds: Credentials,
    basic: Mutex<bool>,
    tokens: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .field("allow_http", &self.allow_http)
            .field("creds", &self.creds)
            .finish()
    }
}

/// A request body that can be rebuilt for a retry after an auth challenge.
pub type BodyFn<'a> = &'a (dyn Fn() -> Option<reqwest::Body> + Send + Sync);

impl Client {
    /// A client for `host` configured from `config` (CA file, timeout, insecure).
    pub fn new(host: &str, config: &Config) -> Result<Client> {
        let http = http::client(config, &format!("oci {host}"))?;
        Ok(Client {
            http,
            host: host.to_string(),
            allow_http: config.insecure || is_loopback(host),
            base: tokio::sync::OnceCell::new(),
            creds: Credentials::resolve(host),
            basic: Mutex::new(false),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The registry host (no credentials).
    pub fn host(&self) -> &str {
        &self.host
    }

    fn backend(&self) -> String {
        format!("oci {}", self.host)
    }

    /// `https://host`, or `http://host` when HTTPS cannot connect and plain
    /// HTTP is allowed (loopback or insecure).
    pub async fn base(&self) -> Result<String> {
        self.base
            .get_or_try_init(|| async {
                let https = format!("https://{}", self.host);
                match self.http.get(format!("{https}/v2/")).send().await {
                    Ok(_) => Ok(https),
                    Err(e) if self.allow_http && (e.is_connect() || e.is_request()) => {
                        tracing::debug!(host = %self.host, "HTTPS failed, using plain HTTP (loopback/insecure)");
                        Ok(format!("http://{}", self.host))
                    }
                    Err(e) => Err(self.transport_error(e)),
                }
            })
            .await
            .cloned()
    }

    fn transport_error(&self, e: reqwest::Error) -> RegistryError {
        http::send_error(self.backend(), "request", e)
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        if let Some(t) = self.tokens.lock().ok().and_then(|m| m.get(scope).cloned()) {
            return Some(format!("Bearer {t}"));
        }
        if let Some(t) = &self.creds.token {
            return Some(format!("Bearer {t}"));
        }
        let basic = self.basic.lock().map(|b| *b).unwrap_or(false);
        match (&self.creds.username, &self.creds.password) {
            (Some(u), p) if basic => {
                use base64::Engine as _;
                let raw = format!("{u}:{}", p.as_deref().unwrap_or(""));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
            _ => None,
        }
    }

    /// Sends a request to `path` (absolute URL or path under the base),
    /// answering auth challenges for `scope` once. Non-2xx becomes a typed error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        headers: HeaderMap,
        body: BodyFn<'_>,
    ) -> Result<Response> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base().await?)
        };
        // Credentials go only to the registry host itself (see
        // `may_send_credentials`); a request elsewhere goes anonymous and
        // does not answer auth challenges.
        let credentialed = may_send_credentials(&url, &self.host);
        let mut answered = !credentialed;
        loop {
            let mut rb: RequestBuilder = self
                .http
                .request(method.clone(), &url)
                .headers(headers.clone());
            if let Some(a) = self.auth_header(scope).filter(|_| credentialed) {
                rb = rb.header(AUTHORIZATION, a);
            }
            if let Some(b) = body() {
                rb = rb.body(b);
            }
            let resp = rb.send().await.map_err(|e| self.transport_error(e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !answered {
                answered = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                match challenge {
                    Some(Challenge::Basic) if self.creds.username.is_some() => {
                        if let Ok(mut b) = self.basic.lock() {
                            *b = true;
                        }
                        continue;
                    }
                    Some(Challenge::Bearer {
                        realm,
                        service,
                        scope: asked,
                    }) => {
                        let token = self
                            .fetch_token(&realm, service.as_deref(), scope, asked.as_deref())
                            .await?;
                        if let Ok(mut m) = self.tokens.lock() {
                            m.insert(scope.to_string(), token);
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            return self.check(resp).await;
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        asked: Option<&str>,
    ) -> Result<String> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            q.push(("service", s));
        }
        // One `scope` parameter per scope (a mount needs push here and pull there).
        for s in scope
            .split_whitespace()
            .chain(asked.unwrap_or("").split_whitespace())
        {
            if !q.contains(&("scope", s)) {
                q.push(("scope", s));
            }
        }
        let mut rb = self.http.get(realm).query(&q);
        if let (Some(u), p, true) = (
            &self.creds.username,
            &self.creds.password,
            may_send_to_realm(realm),
        ) {
            rb = rb.basic_auth(u, p.as_deref());
        }
        let resp = rb.send().await.map_err(|e| self.transport_error(e))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(self.unauthorized());
        }
        let resp = self.check(resp).await?;
        let v: serde_json::Value = resp.json().await.map_err(|e| {
            RegistryError::invalid(format!("token response from {}", self.host), e.to_string())
        })?;
        v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                RegistryError::invalid(
                    format!("token response from {}", self.host),
                    "no token field",
                )
            })
    }

    fn unauthorized(&self) -> RegistryError {
        let detail = if self.creds.is_empty() {
            "authentication required: set PF_OCI_USERNAME and PF_OCI_PASSWORD (or PF_OCI_TOKEN), or log in with docker"
        } else {
            "credentials rejected or insufficient for this repository"
        };
        RegistryError::Unauthorized {
            registry: self.host.clone(),
            detail: detail.into(),
        }
    }

    /// Maps a non-success response to a typed error (the shared HTTP
    /// classifier plus the registry's error codes).
    pub async fn check(&self, resp: Response) -> Result<Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let path = resp.url().path().to_string();
        Err(http::classify(&Failure::read(resp).await, &path, self))
    }
}

impl Classify for Client {
    fn backend(&self) -> String {
        Client::backend(self)
    }

    fn unauthorized(&self) -> RegistryError {
        Client::unauthorized(self)
    }

    /// The distribution spec's error code (`errors[0].code`).
    fn detail(&self, failure: &Failure) -> String {
        serde_json::from_str::<serde_json::Value>(&failure.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// `*_UNKNOWN` codes mean not found whatever the status (some
    /// registries answer 400 or 500 for an unknown blob).
    fn refine(&self, _: &Failure, code: &str) -> Option<Class> {
        matches!(code, "BLOB_UNKNOWN" | "MANIFEST_UNKNOWN" | "NAME_UNKNOWN")
            .then_some(Class::NotFound)
    }

    fn not_found(&self, path: &str, code: &str) -> RegistryError {
        RegistryError::not_found(format!("{path} on {} ({code})", self.host))
    }
}
