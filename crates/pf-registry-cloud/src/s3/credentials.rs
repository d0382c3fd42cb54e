//! AWS shared configuration: the profile the AWS CLI would use, read from the
//! shared credentials file and the config file.
//!
//! Order (as the AWS CLI): the `AWS_*` credential environment variables (and
//! the `s3.*` options) win; then the profile named by `AWS_PROFILE` (else
//! `default`) in `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`,
//! `[name]` sections) and `AWS_CONFIG_FILE` (default `~/.aws/config`,
//! `[profile name]` / `[default]` sections), the credentials file winning for a
//! key set in both; then web identity and instance metadata, which
//! object_store's builder does when no credential was given.
//!
//! From a profile pf takes `aws_access_key_id` + `aws_secret_access_key`
//! (+ `aws_session_token`), `credential_process` (run without a shell, its
//! JSON `Version: 1` output parsed, run again once its `Expiration` passes),
//! `region` and `endpoint_url`. `role_arn` / `source_profile` (STS
//! AssumeRole) and `sso_*` are not supported: a profile using them is an
//! error naming the profile and file, never a silent fallback.
//!
//! Errors name the files looked at and the profile; secret values never
//! appear in errors, logs or `Debug` output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::aws::{AwsCredential, AwsCredentialProvider};
use object_store::{CredentialProvider, StaticCredentialProvider};
use pf_registry_core::{RegistryError, Result};

/// Sections of an INI file: section name -> key -> value.
pub(super) type Ini = BTreeMap<String, BTreeMap<String, String>>;

/// Parses the AWS flavour of INI: `[section]` headers, `key = value` lines,
/// `#` / `;` comment lines, and indented `sub = value` lines under a key with
/// an empty value (stored as `key.sub`). Keys outside any section are
/// ignored. Malformed lines are errors naming the line number (never its
/// text, which may hold a secret).
pub(super) fn parse_ini(text: &str) -> std::result::Result<Ini, String> {
    let mut out = Ini::new();
    let mut section: Option<String> = None;
    let mut parent: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') {
            let name = trimmed
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .ok_or_else(|| format!("line {}: unterminated section header", n + 1))?;
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            section = Some(name);
            parent = None;
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(format!("line {}: expected `key = value`", n + 1));
        };
        let (key, value) = (key.trim(), value.trim());
        let Some(sec) = &section else { continue };
        let indented = line.len() != trimmed.len();
        let key = match (&parent, indented) {
            (Some(p), true) => format!("{p}.{key}"),
            _ => {
                parent = value.is_empty().then(|| key.to_string());
                key.to_string()
            }
        };
        out.entry(sec.clone())
            .or_default()
            .insert(key, value.to_string());
    }
    Ok(out)
}

/// What a profile contributes to the S3 client.
#[derive(Default)]
pub(super) struct ProfileSettings {
    /// `region` of the profile.
    pub(super) region: Option<String>,
    /// `endpoint_url` of the profile.
    pub(super) endpoint: Option<String>,
    /// Credentials of the profile (static or `credential_process`).
    pub(super) credentials: Option<AwsCredentialProvider>,
}

impl std::fmt::Debug for ProfileSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileSettings")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where a profile's keys came from, for messages.
struct Origin {
    profile: String,
    credentials_file: PathBuf,
    config_file: PathBuf,
}

impl Origin {
    fn looked(&self) -> String {
        format!(
            "AWS profile `{}` (looked in {} and {})",
            self.profile,
            self.credentials_file.display(),
            self.config_file.display()
        )
    }
}

fn file_path(env: &dyn Fn(&str) -> Option<String>, var: &str, default: &str) -> Option<PathBuf> {
    env(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(default))
        })
}

fn read_ini(path: &Path, registry: &str) -> Result<Option<Ini>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_ini(&text)
            .map(Some)
            .map_err(|e| unauthorized(registry, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RegistryError::io(format!("reading {}", path.display()), e)),
    }
}

fn unauthorized(registry: &str, detail: String) -> RegistryError {
    RegistryError::Unauthorized {
        registry: registry.to_string(),
        detail,
    }
}

/// Reads the profile for `registry` (e.g. `s3://bucket`, used in messages).
/// `env` looks up environment variables (`AWS_PROFILE`,
/// `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, `HOME`).
/// `want_credentials` is false when the environment or options already gave
/// credentials (the profile then only adds region and endpoint). A profile
/// named by `AWS_PROFILE` must exist; a missing `default` one is no error.
pub(super) fn profile_settings(
    registry: &str,
    env: &dyn Fn(&str) -> Option<String>,
    want_credentials: bool,
) -> Result<ProfileSettings> {
    let named = env("AWS_PROFILE").filter(|p| !p.trim().is_empty());
    let profile = named.clone().unwrap_or_else(|| "default".into());
    let (Some(credentials_file), Some(config_file)) = (
        file_path(env, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
        file_path(env, "AWS_CONFIG_FILE", ".aws/config"),
    ) else {
        return match named {
            Some(p) => Err(unauthorized(
                registry,
                format!("AWS_PROFILE `{p}` is set but HOME is not, so there is no ~/.aws/credentials or ~/.aws/config to read it from"),
            )),
            None => Ok(ProfileSettings::default()),
        };
    };
    let origin = Origin {
        profile: profile.clone(),
        credentials_file,
        config_file,
    };
    let creds = read_ini(&origin.credentials_file, registry)?;
    let conf = read_ini(&origin.config_file, registry)?;
    let from_creds = creds.as_ref().and_then(|i| i.get(&profile));
    let conf_section = if profile == "default" {
        conf.as_ref()
            .and_then(|i| i.get("default").or_else(|| i.get("profile default")))
    } else {
        conf.as_ref()
            .and_then(|i| i.get(&format!("profile {profile}")))
    };
    if from_creds.is_none() && conf_section.is_none() {
        return match named {
            Some(_) => Err(unauthorized(
                registry,
                format!("{}: no such profile (set by AWS_PROFILE)", origin.looked()),
            )),
            None => Ok(ProfileSettings::default()),
        };
    }
    // The credentials file wins for a key set in both.
    let mut keys: BTreeMap<&str, (&str, &Path)> = BTreeMap::new();
    for (section, path) in [
        (conf_section, &origin.config_file),
        (from_creds, &origin.credentials_file),
    ] {
        for (k, v) in section.into_iter().flatten() {
            keys.insert(k.as_str(), (v.as_str(), path.as_path()));
        }
    }
    let get = |k: &str| {
        keys.get(k)
            .map(|(v, _)| v.to_string())
            .filter(|v| !v.is_empty())
    };
    let mut out = ProfileSettings {
        region: get("region"),
        endpoint: get("endpoint_url"),
        credentials: None,
    };
    if !want_credentials {
        return Ok(out);
    }
    let where_key = |k: &str| {
        keys.get(k)
            .map(|(_, p)| p.display().to_string())
            .unwrap_or_default()
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(key_id), Some(secret_key)) => {
            let credential = AwsCredential {
                key_id,
                secret_key,
                token: get("aws_session_token"),
            };
            out.credentials = Some(Arc::new(StaticCredentialProvider::new(credential)));
            return Ok(out);
        }
        (Some(_), None) | (None, Some(_)) => {
            let (has, lacks) = if get("aws_access_key_id").is_some() {
                ("aws_access_key_id", "aws_secret_access_key")
            } else {
                ("aws_secret_access_key", "aws_access_key_id")
            };
            return Err(unauthorized(
                registry,
                format!(
                    "{}: has {has} (in {}) but no {lacks}",
                    origin.looked(),
                    where_key(has)
                ),
            ));
        }
        (None, None) => {}
    }
    for k in ["role_arn", "source_profile", "sso_session", "sso_start_url"] {
        if get(k).is_some() {
            return Err(unauthorized(
                registry,
                format!(
                    "{}: uses `{k}` (in {}), which pf does not support (it needs AWS STS / SSO); \
                     export temporary credentials (e.g. `aws configure export-credentials \
                     --format env`) or use credential_process",
                    origin.looked(),
                    where_key(k)
                ),
            ));
        }
    }
    if let Some(command) = get("credential_process") {
        let context = format!(
            "credential_process of {} (in {})",
            origin.looked(),
            where_key("credential_process")
        );
        let argv = split_command(&command)
            .map_err(|e| unauthorized(registry, format!("{context}: {e}")))?;
        let provider = ProcessProvider {
            argv,
            context,
            registry: registry.to_string(),
            cache: tokio::sync::Mutex::new(None),
        };
        // Run once now so a broken command is a clear error before any transfer.
        let first = provider.run()?;
        *provider
            .cache
            .try_lock()
            .map_err(|_| unauthorized(registry, "credential cache busy".into()))? = Some(first);
        out.credentials = Some(Arc::new(provider));
    }
    Ok(out)
}

/// Splits a `credential_process` command line as a POSIX shell would split
/// words (single and double quotes, backslash escapes), without running a
/// shell.
pub(super) fn split_command(command: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    if words.is_empty() {
        return Err("empty command".into());
    }
    Ok(words)
}

/// Credentials from a `credential_process`, cached until their `Expiration`
/// (less a minute), then fetched again by running the process.
struct ProcessProvider {
    argv: Vec<String>,
    context: String,
    registry: String,
    cache: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl std::fmt::Debug for ProcessProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessProvider")
            .field("program", &self.argv.first())
            .finish_non_exhaustive()
    }
}

/// Margin before `Expiration` at which the process runs again.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

impl ProcessProvider {
    /// Runs the process (stderr goes to pf's stderr) and parses its output.
    fn run(&self) -> Result<(Arc<AwsCredential>, Option<SystemTime>)> {
        run_process(&self.argv, &self.context, &self.registry)
    }
}

fn run_process(
    argv: &[String],
    context: &str,
    registry: &str,
) -> Result<(Arc<AwsCredential>, Option<SystemTime>)> {
    let fail = |why: String| unauthorized(registry, format!("{context}: {why}"));
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| fail(format!("cannot run {:?}: {e}", argv[0])))?;
    if !out.status.success() {
        return Err(fail(format!("exited with {}", out.status)));
    }
    parse_process_output(&out.stdout).map_err(fail)
}

#[async_trait::async_trait]
impl CredentialProvider for ProcessProvider {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cache = self.cache.lock().await;
        if let Some((cred, expires)) = cache.as_ref() {
            let fresh = expires.is_none_or(|t| SystemTime::now() + REFRESH_MARGIN < t);
            if fresh {
                return Ok(cred.clone());
            }
        }
        let (argv, context, registry) = (
            self.argv.clone(),
            self.context.clone(),
            self.registry.clone(),
        );
        let generic = |e: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
            store: "S3",
            source: e,
        };
        let fresh = tokio::task::spawn_blocking(move || run_process(&argv, &context, &registry))
            .await
            .map_err(|e| generic(Box::new(e)))?
            .map_err(|e| generic(Box::new(e)))?;
        let cred = fresh.0.clone();
        *cache = Some(fresh);
        Ok(cred)
    }
}

/// Parses `credential_process` output (JSON, `Version: 1`). Messages name
/// missing or mistyped fields, never values.
pub(super) fn parse_process_output(
    stdout: &[u8],
) -> std::result::Result<(Arc<AwsCredential>, Option<SystemTime>), String> {
    let v: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "its output is not JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if v.get("Version").and_then(|x| x.as_u64()) != Some(1) {
        return Err("its output lacks `\"Version\": 1`".into());
    }
    let field = |k: &str| -> std::result::Result<Option<String>, String> {
        match v.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{k}` in its output is not a string")),
        }
    };
    let need = |k: &str| {
        field(k)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("its output has no `{k}`"))
    };
    let credential = AwsCredential {
        key_id: need("AccessKeyId")?,
        secret_key: need("SecretAccessKey")?,
        token: field("SessionToken")?,
    };
    let expires = match field("Expiration")? {
        None => None,
        Some(t) => {
            Some(parse_rfc3339(&t).ok_or("`Expiration` in its output is not an RFC 3339 time")?)
        }
    };
    Ok((Arc::new(credential), expires))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub(super) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
