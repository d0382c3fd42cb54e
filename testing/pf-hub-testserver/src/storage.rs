//! Repositories, commits and file trees (in memory; LFS bytes live in
//! [`crate::lfs::ObjectStore`]), git-compatible blob ids, and the
//! `.gitattributes` rules the Hub applies on preupload.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use ring::digest;

use crate::util::{git_blob_oid, is_commit_id, now_iso, sha1_hex};

/// Repository type, as in `repo_type=` of the official client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepoType {
    /// `model` (URL prefix "").
    Model,
    /// `dataset` (URL prefix "datasets/").
    Dataset,
    /// `space` (URL prefix "spaces/").
    Space,
}

/// (type, name, URL prefix of web and git URLs).
const TYPES: [(RepoType, &str, &str); 3] = [
    (RepoType::Model, "model", ""),
    (RepoType::Dataset, "dataset", "datasets/"),
    (RepoType::Space, "space", "spaces/"),
];

impl RepoType {
    /// Parses `model`, `dataset` or `space`.
    pub fn parse(s: &str) -> Option<Self> {
        TYPES.iter().find(|t| t.1 == s).map(|t| t.0)
    }
    pub(crate) fn from_plural(s: &str) -> Option<Self> {
        s.strip_suffix('s').and_then(Self::parse)
    }
    /// `model`, `dataset` or `space`.
    pub fn as_str(self) -> &'static str {
        TYPES[self as usize].1
    }
    /// The prefix of web and git URLs: "", "datasets/" or "spaces/".
    pub fn url_prefix(self) -> &'static str {
        TYPES[self as usize].2
    }
}

/// Extensions the Hub's initial `.gitattributes` routes through LFS.
const LFS_EXTS: &str = "7z arrow bin bz2 ckpt ftz gz h5 joblib mlmodel model msgpack npy npz onnx \
    ot parquet pb pickle pkl pt pth rar safetensors tar tflite tgz wasm xz zip zst";

/// The `.gitattributes` the Hub puts into the first commit of a new repo.
pub(crate) fn default_gitattributes() -> String {
    let pats = LFS_EXTS.split_whitespace().map(|e| format!("*.{e}"));
    let extra = ["*.lfs.*", "*.tar.*", "saved_model/**/*", "*tfevents*"].map(String::from);
    pats.chain(extra)
        .map(|p| format!("{p} filter=lfs diff=lfs merge=lfs -text\n"))
        .collect()
}

/// File content at a commit: inline bytes, or an LFS pointer.
#[derive(Clone, Debug)]
pub(crate) enum Content {
    Regular(Bytes),
    Lfs { oid: String, size: u64 },
}

impl Content {
    pub fn size(&self) -> u64 {
        match self {
            Content::Regular(b) => b.len() as u64,
            Content::Lfs { size, .. } => *size,
        }
    }
    /// The git blob id (of the pointer file for LFS files).
    pub fn git_oid(&self) -> String {
        match self {
            Content::Regular(b) => git_blob_oid(b),
            Content::Lfs { oid, size } => git_blob_oid(lfs_pointer(oid, *size).as_bytes()),
        }
    }
    /// The oid `preupload` reports and the client compares to skip unchanged files.
    pub fn remote_oid(&self) -> String {
        match self {
            Content::Regular(b) => git_blob_oid(b),
            Content::Lfs { oid, .. } => oid.clone(),
        }
    }
}

/// The git-lfs pointer file text.
pub(crate) fn lfs_pointer(oid: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n")
}

/// A path's content and the index of the commit that last changed it.
#[derive(Clone, Debug)]
pub(crate) struct FileRec {
    pub content: Content,
    pub last_commit: usize,
}

pub(crate) type Files = BTreeMap<String, FileRec>;

pub(crate) struct Commit {
    pub id: String,
    pub title: String,
    pub message: String,
    pub author: String,
    pub date: String,
    /// The commit it was made on (index into `Repo::commits`).
    pub parent: Option<usize>,
    pub files: Arc<Files>,
}

pub(crate) struct Repo {
    pub kind: RepoType,
    pub id: String,
    pub private: bool,
    pub created_at: String,
    pub commits: Vec<Commit>,
    pub branches: BTreeMap<String, usize>,
    pub tags: BTreeMap<String, usize>,
    /// LFS objects uploaded to this repository (oid -> size). LFS storage
    /// is per repository on the Hub: other repos' objects do not count.
    pub lfs: HashMap<String, u64>,
}

impl Repo {
    /// A new repository whose `main` holds the Hub's initial `.gitattributes`.
    pub fn new(kind: RepoType, id: String, private: bool, author: &str, seq: u64) -> Repo {
        let mut repo = Repo {
            kind,
            id,
            private,
            created_at: now_iso(),
            commits: Vec::new(),
            branches: BTreeMap::new(),
            tags: BTreeMap::new(),
            lfs: HashMap::new(),
        };
        let mut files = Files::new();
        let attrs = Content::Regular(Bytes::from(default_gitattributes()));
        files.insert(
            ".gitattributes".into(),
            FileRec {
                content: attrs,
                last_commit: 0,
            },
        );
        let c = repo.make_commit(None, files, "initial commit", "", author, seq);
        repo.commits.push(c);
        repo.branches.insert("main".into(), 0);
        repo
    }

    /// Builds (does not store) a commit on top of `parent`.
    pub fn make_commit(
        &self,
        parent: Option<usize>,
        files: Files,
        title: &str,
        message: &str,
        author: &str,
        seq: u64,
    ) -> Commit {
        let date = now_iso();
        let parent_id = parent
            .and_then(|p| self.commits.get(p))
            .map(|c| c.id.as_str())
            .unwrap_or("");
        let text = format!(
            "tree {}\nparent {parent_id}\nauthor {author} {date}\nseq {seq}\n\n{title}\n\n\
             {message}",
            dir_oid(&files, "")
        );
        Commit {
            id: sha1_hex(text.as_bytes()),
            title: title.into(),
            message: message.into(),
            author: author.into(),
            date,
            parent,
            files: Arc::new(files),
        }
    }

    /// Resolves a branch, tag, `refs/heads/..`, `refs/tags/..` or commit id.
    pub fn resolve(&self, rev: &str) -> Option<usize> {
        let found = match (
            rev.strip_prefix("refs/heads/"),
            rev.strip_prefix("refs/tags/"),
        ) {
            (Some(b), _) => self.branches.get(b),
            (_, Some(t)) => self.tags.get(t),
            _ => self.branches.get(rev).or_else(|| self.tags.get(rev)),
        };
        found.copied().or_else(|| {
            if !is_commit_id(rev) {
                return None;
            }
            // Only commits a branch or tag still reaches (a super-squash
            // drops the rest).
            let i = self.commits.iter().position(|c| c.id == rev)?;
            self.reachable().contains(&i).then_some(i)
        })
    }

    /// Indexes of the commits reachable from `tip` through parents, `tip`
    /// first.
    pub fn ancestry(&self, tip: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut next = Some(tip);
        while let Some(i) = next {
            out.push(i);
            next = self.commits.get(i).and_then(|c| c.parent);
        }
        out
    }

    /// Commits a branch or tag reaches.
    pub fn reachable(&self) -> std::collections::HashSet<usize> {
        self.branches
            .values()
            .chain(self.tags.values())
            .flat_map(|&tip| self.ancestry(tip))
            .collect()
    }

    /// The regular file `path` at commit `idx` as text, if any.
    pub fn text_at(&self, idx: usize, path: &str) -> Option<String> {
        match &self.commits.get(idx)?.files.get(path)?.content {
            Content::Regular(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Content::Lfs { .. } => None,
        }
    }
}

/// A tree listing entry.
pub(crate) enum Node<'a> {
    File(&'a str, &'a FileRec),
    Dir {
        path: String,
        oid: String,
        last_commit: usize,
    },
}

impl Node<'_> {
    pub fn path(&self) -> &str {
        match self {
            Node::File(p, _) => p,
            Node::Dir { path, .. } => path,
        }
    }
}

/// A content hash for the directory `dir` ("" = root). Not git's tree id,
/// but it changes exactly when something below `dir` changes.
pub(crate) fn dir_oid(files: &Files, dir: &str) -> String {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut c = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    for (p, f) in files.range(prefix.clone()..) {
        let Some(rel) = p.strip_prefix(&prefix) else {
            break;
        };
        c.update(format!("{rel} {}\n", f.content.git_oid()).as_bytes());
    }
    hex::encode(c.finish())
}

/// Lists `dir` ("" = root) at a commit, sorted by path; `None` if `dir` is
/// not a directory there.
pub(crate) fn list_tree<'a>(files: &'a Files, dir: &str, recursive: bool) -> Option<Vec<Node<'a>>> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out = Vec::new();
    let mut dirs: BTreeMap<String, usize> = BTreeMap::new();
    for (p, f) in files.range(prefix.clone()..) {
        let Some(rel) = p.strip_prefix(&prefix) else {
            break;
        };
        let parts: Vec<&str> = rel.split('/').collect();
        let mut acc = prefix.clone();
        for (i, seg) in parts[..parts.len() - 1].iter().enumerate() {
            acc.push_str(seg);
            if recursive || i == 0 {
                let lc = dirs.entry(acc.clone()).or_insert(0);
                *lc = (*lc).max(f.last_commit);
            }
            acc.push('/');
        }
        if recursive || parts.len() == 1 {
            out.push(Node::File(p.as_str(), f));
        }
    }
    if !dir.is_empty() && out.is_empty() && dirs.is_empty() {
        return None;
    }
    for (path, last_commit) in dirs {
        let oid = dir_oid(files, &path);
        out.push(Node::Dir {
            path,
            oid,
            last_commit,
        });
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Some(out)
}

/// Glob match with git semantics: `*` and `?` stop at `/`, `**/` spans
/// directories, a trailing `**` matches everything.
fn wild(p: &[u8], s: &[u8]) -> bool {
    if let Some(rest) = p.strip_prefix(b"**/") {
        return wild(rest, s)
            || s.iter()
                .enumerate()
                .any(|(i, &c)| c == b'/' && wild(rest, &s[i + 1..]));
    }
    if let Some(rest) = p.strip_prefix(b"**") {
        return (0..=s.len()).any(|i| wild(rest, &s[i..]));
    }
    match (p.first(), s.first()) {
        (None, _) => s.is_empty(),
        (Some(b'*'), _) => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != b'/')
            .any(|i| wild(&p[1..], &s[i..])),
        (Some(b'?'), Some(&c)) if c != b'/' => wild(&p[1..], &s[1..]),
        (Some(&a), Some(&b)) if a == b => wild(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Whether a `.gitattributes` pattern matches `path`: patterns with a `/`
/// are anchored at the root, others match the file name.
fn pattern_matches(pat: &str, path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let (p, s) = match pat.contains('/') {
        true => (pat.trim_start_matches('/'), path),
        false => (pat, name),
    };
    wild(p.as_bytes(), s.as_bytes())
}

/// Whether `.gitattributes` text routes `path` through LFS (last match wins).
pub(crate) fn is_lfs_path(gitattributes: &str, path: &str) -> bool {
    let mut lfs = false;
    for line in gitattributes.lines().map(str::trim) {
        let mut it = line.split_whitespace();
        let Some(pat) = it.next().filter(|p| !p.starts_with('#')) else {
            continue;
        };
        let attrs: Vec<&str> = it.collect();
        if attrs.iter().any(|a| a.contains("filter")) && pattern_matches(pat, path) {
            lfs = attrs.contains(&"filter=lfs");
        }
    }
    lfs
}

/// The Hub's binary test on a preupload sample (first 512 bytes): a NUL
/// byte, or more than 10% control characters.
pub(crate) fn looks_binary(sample: &[u8]) -> bool {
    let ctrl = sample
        .iter()
        .filter(|&&b| b < 0x20 && !b"\t\n\r\x0c\x1b\x08".contains(&b))
        .count();
    sample.contains(&0) || ctrl * 10 > sample.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitattributes_rules() {
        let a = &default_gitattributes();
        assert!(is_lfs_path(a, "w/model.safetensors"));
        assert!(is_lfs_path(a, "x.tar.gz"));
        assert!(is_lfs_path(a, "saved_model/a/b.txt"));
        assert!(is_lfs_path(a, "runs/events.out.tfevents.1"));
        assert!(!is_lfs_path(a, "config.json"));
        assert!(!is_lfs_path(a, "bin/readme.txt"));
        assert!(!is_lfs_path(&format!("{a}*.bin -filter\n"), "a.bin"));
    }

    #[test]
    fn tree_listing() {
        let rec = |s: &'static str, c| FileRec {
            content: Content::Regular(Bytes::from_static(s.as_bytes())),
            last_commit: c,
        };
        let mut files = Files::new();
        files.insert("a.txt".into(), rec("a", 0));
        files.insert("d/b.txt".into(), rec("b", 1));
        files.insert("d/e/c.txt".into(), rec("c", 2));
        files.insert("d-x".into(), rec("x", 0));
        let paths = |v: Vec<Node>| v.iter().map(|n| n.path().to_string()).collect::<Vec<_>>();
        let top = list_tree(&files, "", false).expect("root");
        assert_eq!(paths(top), ["a.txt", "d", "d-x"]);
        let all = list_tree(&files, "", true).expect("root");
        assert_eq!(all.len(), 6);
        let d = list_tree(&files, "d", false).expect("d");
        assert_eq!(paths(d), ["d/b.txt", "d/e"]);
        assert!(list_tree(&files, "nope", true).is_none());
        assert!(looks_binary(b"ab\0c") && !looks_binary(b"plain text\n"));
    }
}
