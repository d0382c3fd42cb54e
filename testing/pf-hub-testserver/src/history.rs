//! A branch's history: `GET /api/{type}s/{id}/commits/{rev}` (newest
//! first, as `list_repo_commits` reads it) and
//! `POST /api/{type}s/{id}/super-squash/{branch}` (`super_squash_history`):
//! the branch becomes one commit holding its current files; commits no
//! branch or tag reaches any more stop resolving, and LFS objects no
//! reachable commit names stop counting as the repository's storage.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::auth::Caller;
use crate::routes::json_body;
use crate::storage::{Content, Repo};
use crate::util::{ok_json, HubError, HubResult};
use crate::Shared;

/// `GET .../commits/{rev}`: the history of `rev`, newest first (a commit
/// id no branch or tag reaches any more does not resolve).
pub(crate) fn commits(repo: &Repo, rev: &str) -> HubResult {
    let tip = repo
        .resolve(rev)
        .ok_or_else(|| HubError::revision_not_found(rev))?;
    let items: Vec<Value> = repo
        .ancestry(tip)
        .into_iter()
        .filter_map(|i| repo.commits.get(i))
        .map(|c| {
            let authors: Vec<Value> = (!c.author.is_empty())
                .then(|| json!({"user": c.author}))
                .into_iter()
                .collect();
            json!({"id": c.id, "title": c.title, "message": c.message,
                   "authors": authors, "date": c.date})
        })
        .collect();
    ok_json(json!(items))
}

/// `POST .../super-squash/{branch}` `{"message"}`: one commit, no parent,
/// the branch's files. Tags keep what they point at.
pub(crate) fn super_squash(
    sh: &Shared,
    caller: Caller,
    repo: &mut Repo,
    branch: &str,
    body: &[u8],
) -> HubResult {
    let branch = branch.strip_prefix("refs/heads/").unwrap_or(branch);
    let Some(&tip) = repo.branches.get(branch) else {
        return Err(match repo.resolve(branch) {
            Some(_) => HubError::bad(format!("{branch} is not a branch")),
            None => HubError::revision_not_found(branch),
        });
    };
    let req = if body.is_empty() {
        json!({})
    } else {
        json_body(body)?
    };
    let default = format!("Super-squash branch '{branch}'");
    let title = req["message"].as_str().unwrap_or(&default);
    let idx = repo.commits.len();
    let mut files = (*repo.commits[tip].files).clone();
    for f in files.values_mut() {
        f.last_commit = idx;
    }
    let (author, seq) = (
        caller.map_or("", |t| t.user.as_str()),
        sh.seq.fetch_add(1, Ordering::Relaxed),
    );
    let c = repo.make_commit(None, files, title, "", author, seq);
    let oid = c.id.clone();
    repo.commits.push(c);
    repo.branches.insert(branch.to_string(), idx);
    let live: HashSet<String> = repo
        .reachable()
        .into_iter()
        .filter_map(|i| repo.commits.get(i))
        .flat_map(|c| c.files.values())
        .filter_map(|f| match &f.content {
            Content::Lfs { oid, .. } => Some(oid.clone()),
            Content::Regular(_) => None,
        })
        .collect();
    repo.lfs.retain(|oid, _| live.contains(oid));
    sh.stats().commits += 1;
    ok_json(json!({"commitId": oid}))
}
