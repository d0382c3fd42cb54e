//! `s3://` settings: the `s3.*` options and `AWS_*` environment variables
//! turned into a configured object_store client and the transport's tunables.

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::{BackoffConfig, Certificate, ClientOptions, RetryConfig};
use pf_registry_core::{Config, ImageRef, RegistryError, Result};

const MIB: u64 = 1 << 20;
/// S3's minimum part size (all parts but the last).
pub(super) const MIN_PART: u64 = 5 * MIB;

/// Every option key the `s3://` backend takes (see the module docs).
pub const OPTIONS: &[&str] = &[
    "s3.endpoint",
    "s3.region",
    "s3.access_key_id",
    "s3.secret_access_key",
    "s3.session_token",
    "s3.virtual_hosted",
    "s3.conditional_put",
    "s3.part_size_mib",
    "s3.multipart_threshold_mib",
    "s3.upload_parallelism",
    "s3.memory_budget_mib",
    "s3.head_threshold",
];

/// Tunables read from `Config.options` (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// `s3.conditional_put`: `Some` when given, `None` to probe the store
    /// at the first commit (see `probe`).
    pub(super) conditional_put: Option<bool>,
    pub(super) part_size: u64,
    pub(super) multipart_threshold: u64,
    pub(super) upload_parallelism: usize,
    pub(super) head_threshold: usize,
}

fn opt_u64(config: &Config, key: &str, default: u64) -> Result<u64> {
    match config.option(key) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| RegistryError::BadReference {
            input: format!("{key}={v}"),
            reason: "expected a non-negative integer".into(),
        }),
    }
}

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

use pf_registry_core::http::is_loopback_url as is_loopback_endpoint;

/// `endpoint` without any `user:pass@` part, for messages.
fn redact_endpoint(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority
                .rsplit_once('@')
                .map(|(_, h)| h)
                .unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => endpoint
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(endpoint)
            .to_string(),
    }
}

/// What [`S3Config::from_config`] makes of a reference and its [`Config`].
pub(super) struct S3Config {
    /// The configured client (credentials inside: never printed).
    pub(super) store: AmazonS3,
    /// The transport's tunables.
    pub(super) settings: Settings,
    /// The upload memory budget in KiB units.
    pub(super) memory_units: u32,
}

impl S3Config {
    /// Reads the options and environment for `bucket` of `reference`.
    pub(super) fn from_config(
        bucket: &str,
        reference: &ImageRef,
        config: &Config,
    ) -> Result<S3Config> {
        let opt = |k: &str| config.option(k).filter(|v| !v.trim().is_empty()).cloned();

        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // Credentials from options or the environment (static keys, or web
        // identity, which the AWS CLI also tries before the shared files)
        // win over the profile, which then only adds region and endpoint.
        let env_credentials = opt("s3.access_key_id").is_some()
            || env_first(&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]).is_some()
            || env_first(&["AWS_WEB_IDENTITY_TOKEN_FILE"]).is_some();
        let profile = super::credentials::profile_settings(
            &format!("s3://{bucket}"),
            &|k| std::env::var(k).ok(),
            !env_credentials,
        )?;
        let endpoint = opt("s3.endpoint")
            .or_else(|| env_first(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]))
            .or(profile.endpoint);
        if let Some(region) = opt("s3.region")
            .or_else(|| env_first(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
            .or(profile.region)
        {
            b = b.with_region(region);
        }
        if let Some(provider) = profile.credentials {
            b = b.with_credentials(provider);
        }
        if let Some(v) = opt("s3.access_key_id") {
            b = b.with_access_key_id(v);
        }
        if let Some(v) = opt("s3.secret_access_key") {
            b = b.with_secret_access_key(v);
        }
        if let Some(v) = opt("s3.session_token") {
            b = b.with_token(v);
        }

        // object_store's reqwest client takes rustls's process-default
        // provider: ring, installed by core (no aws-lc-rs in the build).
        pf_registry_core::http::install_crypto_provider();
        let mut client = ClientOptions::new()
            .with_timeout(config.timeout)
            .with_allow_http(false);
        if let Some(ep) = &endpoint {
            let plain_http = ep.to_ascii_lowercase().starts_with("http://");
            if plain_http && !(is_loopback_endpoint(ep) || config.insecure) {
                return Err(RegistryError::BadReference {
                    input: redact_endpoint(ep),
                    reason: "plain http:// S3 endpoints are only allowed for loopback hosts; \
                         use https:// or set the insecure option"
                        .into(),
                });
            }
            client = client.with_allow_http(plain_http);
            b = b.with_endpoint(ep.clone());
        }
        let virtual_hosted = config.flag("s3.virtual_hosted", endpoint.is_none());
        b = b.with_virtual_hosted_style_request(virtual_hosted);
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| RegistryError::io(format!("reading CA file {}", ca.display()), e))?;
            let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
                RegistryError::invalid(format!("CA file {}", ca.display()), e.to_string())
            })?;
            for c in certs {
                client = client.with_root_certificate(c);
            }
        }
        let conditional_put = match config.options.get("s3.conditional_put").map(String::as_str) {
            None | Some("auto") => None,
            Some(_) => Some(config.flag("s3.conditional_put", true)),
        };
        b = b
            .with_config(
                AmazonS3ConfigKey::ConditionalPut,
                if conditional_put == Some(false) {
                    "disabled"
                } else {
                    "etag"
                },
            )
            .with_client_options(client)
            // One retry layer: the engine's, with the caller's policy, so the
            // error reports every attempt. object_store retries nothing, and
            // its 5xx / 429 answers come back as [`ServerStatus`] (see
            // [`StatusConnector`]), which the transport maps to a retryable error.
            .with_http_connector(StatusConnector)
            .with_retry(RetryConfig {
                max_retries: 0,
                retry_timeout: config.timeout,
                backoff: BackoffConfig {
                    init_backoff: config.retry.initial_delay,
                    max_backoff: config.retry.max_delay,
                    base: 2.0,
                },
            });
        let store = b.build().map_err(|e| RegistryError::BadReference {
            input: reference.to_string(),
            // Builder errors name configuration problems, never credential values.
            reason: format!("cannot configure the S3 client: {e}"),
        })?;

        let budget_mib = opt_u64(config, "s3.memory_budget_mib", 128)?.max(16);
        let part_size = (opt_u64(config, "s3.part_size_mib", 8)? * MIB).max(MIN_PART);
        let settings = Settings {
            conditional_put,
            part_size,
            multipart_threshold: (opt_u64(config, "s3.multipart_threshold_mib", 16)? * MIB)
                .max(MIN_PART),
            upload_parallelism: (opt_u64(config, "s3.upload_parallelism", 4)? as usize)
                .clamp(1, 64),
            head_threshold: opt_u64(config, "s3.head_threshold", 64)? as usize,
        };
        let memory_units = u32::try_from(budget_mib * 1024).unwrap_or(u32::MAX >> 1);
        Ok(S3Config {
            store,
            settings,
            memory_units,
        })
    }
}

/// A 5xx or 429 answer from the store, as the typed source of the
/// object_store error the transport sees (the engine retries it).
#[derive(Debug)]
pub(super) struct ServerStatus {
    /// The HTTP status code.
    pub(super) status: u16,
}

impl std::fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server answered HTTP {}", self.status)
    }
}

impl std::error::Error for ServerStatus {}

/// A request that failed before an answer (connect, send, timeout or an
/// interrupted exchange), as the typed source of the object_store error the
/// transport sees (the engine retries it).
#[derive(Debug)]
pub(super) struct ConnectionFailure {
    source: HttpError,
}

impl std::fmt::Display for ConnectionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request failed ({:?})", self.source.kind())
    }
}

impl std::error::Error for ConnectionFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// object_store's reqwest client, with connection failures marked as
/// [`ConnectionFailure`] and 5xx and 429 answers turned into an
/// [`HttpError`] whose source is [`ServerStatus`]: object_store 0.12 keeps
/// the status of a failed request in a type it does not export.
#[derive(Debug)]
struct StatusConnector;

impl HttpConnector for StatusConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(StatusService(
            ReqwestConnector::default().connect(options)?,
        )))
    }
}

#[derive(Debug)]
struct StatusService(HttpClient);

#[async_trait::async_trait]
impl HttpService for StatusService {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let res = self.0.execute(req).await.map_err(|e| match e.kind() {
            // object_store's errors keep `HttpError` transparent (its source
            // chain skips it), so the kind is carried by a type of ours.
            kind @ (HttpErrorKind::Connect
            | HttpErrorKind::Request
            | HttpErrorKind::Timeout
            | HttpErrorKind::Interrupted) => HttpError::new(kind, ConnectionFailure { source: e }),
            _ => e,
        })?;
        let status = res.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(HttpError::new(
                HttpErrorKind::Unknown,
                ServerStatus {
                    status: status.as_u16(),
                },
            ));
        }
        Ok(res)
    }
}
