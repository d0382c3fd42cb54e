//! Tokens, users and the Hub's per-repository access rules.
//!
//! - A request without `Authorization` is anonymous; an unknown Bearer token
//!   is `401 Invalid credentials in Authorization header` everywhere.
//! - Read: public repos, or repos in a namespace the token's user owns (its
//!   user name or one of its orgs). An unreadable repo is answered exactly
//!   like a missing one: `401` (anonymous) or `404` (authenticated), both with
//!   `X-Error-Code: RepoNotFound`, as the Hub does.
//! - Write: a write token whose user owns the namespace; otherwise `403`
//!   (`401` when anonymous).

use std::fmt;

use axum::http::{HeaderMap, StatusCode};

use crate::storage::Repo;
use crate::util::HubError;

/// An access token and the identity behind it.
#[derive(Clone)]
pub struct Token {
    /// The secret sent as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// The user name (its own namespace).
    pub user: String,
    /// Organisations the user belongs to (namespaces it may read and write).
    pub orgs: Vec<String>,
    /// `write` role (else `read`).
    pub write: bool,
}

impl Token {
    /// A write token for `user`.
    pub fn write(secret: impl Into<String>, user: impl Into<String>) -> Token {
        Token {
            secret: secret.into(),
            user: user.into(),
            orgs: Vec::new(),
            write: true,
        }
    }
    /// A read-only token for `user`.
    pub fn read(secret: impl Into<String>, user: impl Into<String>) -> Token {
        Token {
            write: false,
            ..Token::write(secret, user)
        }
    }
    /// Adds an organisation membership.
    pub fn org(mut self, org: impl Into<String>) -> Token {
        self.orgs.push(org.into());
        self
    }
    /// Whether the token's user owns `namespace`.
    pub(crate) fn owns(&self, namespace: &str) -> bool {
        self.user == namespace || self.orgs.iter().any(|o| o == namespace)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"<redacted>")
            .field("user", &self.user)
            .field("orgs", &self.orgs)
            .field("write", &self.write)
            .finish()
    }
}

/// The caller: `None` when anonymous.
pub(crate) type Caller<'a> = Option<&'a Token>;

/// Identifies the caller from `Authorization: Bearer <token>`.
pub(crate) fn identify<'a>(
    tokens: &'a [Token],
    headers: &HeaderMap,
) -> Result<Caller<'a>, HubError> {
    let Some(h) = headers.get("authorization") else {
        return Ok(None);
    };
    let secret = h
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match secret.and_then(|s| tokens.iter().find(|t| t.secret == s)) {
        Some(t) => Ok(Some(t)),
        None => Err(invalid_credentials()),
    }
}

/// The Hub's answer to an unknown token.
pub(crate) fn invalid_credentials() -> HubError {
    let msg = "Invalid credentials in Authorization header";
    HubError::new(StatusCode::UNAUTHORIZED, msg)
}

fn namespace(repo_id: &str) -> &str {
    repo_id.split('/').next().unwrap_or(repo_id)
}

/// What the Hub answers for a repository that is missing or hidden.
pub(crate) fn repo_not_found(caller: Caller) -> HubError {
    let status = if caller.is_some() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::UNAUTHORIZED
    };
    HubError::coded(status, "RepoNotFound", "Repository not found")
}

/// The repository if it exists and the caller may read it.
pub(crate) fn readable<'r>(caller: Caller, repo: Option<&'r Repo>) -> Result<&'r Repo, HubError> {
    match repo {
        Some(r) if !r.private || caller.is_some_and(|t| t.owns(namespace(&r.id))) => Ok(r),
        _ => Err(repo_not_found(caller)),
    }
}

/// Checks that the caller may write to `repo_id` (in namespace terms).
pub(crate) fn check_write(caller: Caller, repo_id: &str) -> Result<(), HubError> {
    match caller {
        None => Err(HubError::new(
            StatusCode::UNAUTHORIZED,
            "You must be authenticated to write",
        )),
        Some(t) if !t.write => Err(HubError::new(
            StatusCode::FORBIDDEN,
            "Your token has a read-only role: you don't have the rights to write to this repo",
        )),
        Some(t) if !t.owns(namespace(repo_id)) => Err(HubError::new(
            StatusCode::FORBIDDEN,
            format!("You don't have the rights to write to {repo_id}"),
        )),
        Some(_) => Ok(()),
    }
}

/// Looks the repository up for writing: hidden repos stay hidden.
pub(crate) fn writable<'r>(
    caller: Caller,
    repo: Option<&'r mut Repo>,
) -> Result<&'r mut Repo, HubError> {
    let repo = match repo {
        Some(r) if readable(caller, Some(&*r)).is_ok() => r,
        _ => return Err(repo_not_found(caller)),
    };
    check_write(caller, &repo.id)?;
    Ok(repo)
}
