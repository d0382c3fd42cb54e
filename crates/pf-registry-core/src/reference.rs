//! Image references: `file://`, `oci://`, `s3://`, `hf://`, `ipfs://`, each
//! optionally pinned to a manifest digest with `@sha256:<hex>`.
//!
//! Parsing is strict and [`Display`](std::fmt::Display) gives back a string
//! that parses to the same value.

use std::fmt;
use std::str::FromStr;

use pf_digest::Digest;

use crate::error::RegistryError;

const MAX_REF_LEN: usize = 4096;

/// Where an image lives, by backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Location {
    /// A directory: absolute (`file:///abs`) or relative (`file://./rel`, `file://../rel`).
    File {
        /// The path as written (absolute or starting with `.`).
        path: String,
    },
    /// An OCI distribution registry.
    Oci {
        /// `host` or `host:port`.
        registry: String,
        /// Repository path, lowercase components.
        repository: String,
        /// Tag; `None` means `latest` when pushing or pulling by tag.
        tag: Option<String>,
    },
    /// S3-compatible object storage.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix (no leading or trailing `/`; may be empty).
        prefix: String,
        /// Tag; `None` is the default manifest.
        tag: Option<String>,
    },
    /// A Hugging Face Hub repository, spelled as `huggingface_hub`'s
    /// `HfFileSystem` spells it: `hf://owner/repo` (model),
    /// `hf://datasets/owner/repo`, `hf://spaces/owner/repo`.
    Hf {
        /// Model, dataset or Space.
        repo_type: HfRepoType,
        /// `owner/name`.
        repo_id: String,
        /// Branch, tag or commit id; `None` means `main`.
        revision: Option<String>,
    },
    /// IPFS: a root CID to pull, or `None` to push a new root.
    Ipfs {
        /// The root CID.
        cid: Option<String>,
    },
}

/// The kind of a Hugging Face Hub repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum HfRepoType {
    /// A model repository: `hf://owner/repo`.
    #[default]
    Model,
    /// A dataset repository: `hf://datasets/owner/repo`.
    Dataset,
    /// A Space: `hf://spaces/owner/repo`.
    Space,
}

impl HfRepoType {
    /// The Hub API's name (`model`, `dataset`, `space`).
    pub fn as_str(self) -> &'static str {
        match self {
            HfRepoType::Model => "model",
            HfRepoType::Dataset => "dataset",
            HfRepoType::Space => "space",
        }
    }

    /// Parses the Hub API's name (`model`, `dataset`, `space`).
    pub fn from_name(name: &str) -> Option<HfRepoType> {
        match name {
            "model" => Some(HfRepoType::Model),
            "dataset" => Some(HfRepoType::Dataset),
            "space" => Some(HfRepoType::Space),
            _ => None,
        }
    }

    /// The path prefix in references and Hub URLs: `""`, `datasets/`, `spaces/`.
    pub fn url_prefix(self) -> &'static str {
        match self {
            HfRepoType::Model => "",
            HfRepoType::Dataset => "datasets/",
            HfRepoType::Space => "spaces/",
        }
    }
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Where the image lives.
    pub location: Location,
    /// Optional manifest digest pin: pulls fail unless the manifest matches.
    pub digest: Option<Digest>,
}

fn bad(input: &str, reason: impl Into<String>) -> RegistryError {
    let mut shown: String = input.chars().take(120).collect();
    if input.chars().count() > 120 {
        shown.push('…');
    }
    RegistryError::BadReference {
        input: shown,
        reason: reason.into(),
    }
}

/// OCI tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// OCI repository grammar: `/`-separated lowercase components
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_valid_oci_repository(r: &str) -> bool {
    !r.is_empty() && r.len() <= 255 && r.split('/').all(is_valid_oci_component)
}

fn is_valid_oci_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        // separator run: ".", "_", "__", or "-+"
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_lower_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, Some(port)),
        _ => (h, None),
    };
    if let Some(p) = port {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|c| c.is_ascii_digit())
            || p.parse::<u16>().is_err()
        {
            return false;
        }
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return !inner.is_empty() && inner.bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn is_valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
}

fn is_valid_key_component(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && c.len() <= 255
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_valid_hf_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 96
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !n.contains("..")
        && !n.ends_with(".git")
}

fn is_valid_revision(r: &str) -> bool {
    !r.is_empty() && r.len() <= 255 && r.split('/').all(is_valid_key_component)
}

fn is_valid_cid(c: &str) -> bool {
    (2..=256).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Splits `rest` into (`path`, `tag`) at a `:` that follows the last `/`.
fn split_tag(rest: &str) -> (&str, Option<&str>) {
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    }
}

impl ImageRef {
    /// Parses a reference string (see the module docs for the grammar).
    pub fn parse(input: &str) -> Result<ImageRef, RegistryError> {
        if input.len() > MAX_REF_LEN {
            return Err(bad(input, format!("longer than {MAX_REF_LEN} bytes")));
        }
        if input.bytes().any(|b| b.is_ascii_control()) {
            return Err(bad(input, "contains control characters"));
        }
        let (body, digest) = match input.rfind("@sha256:") {
            Some(i) => {
                let d = Digest::parse(&input[i + 1..]).map_err(|e| bad(input, e.to_string()))?;
                (&input[..i], Some(d))
            }
            None => (input, None),
        };
        let (scheme, rest) = body.split_once("://").ok_or_else(|| {
            bad(
                input,
                "missing scheme (file://, oci://, s3://, hf://, ipfs://)",
            )
        })?;
        let location = match scheme {
            "file" => {
                if rest.is_empty() {
                    return Err(bad(input, "empty path"));
                }
                if !(rest.starts_with('/') || rest.starts_with('.')) {
                    return Err(bad(
                        input,
                        "file paths must be absolute (file:///abs) or start with '.' (file://./rel)",
                    ));
                }
                Location::File {
                    path: rest.to_string(),
                }
            }
            "oci" => {
                let (registry, path) = rest
                    .split_once('/')
                    .ok_or_else(|| bad(input, "expected oci://host[:port]/repository[:tag]"))?;
                if !is_valid_host(registry) {
                    return Err(bad(input, format!("invalid registry host {registry:?}")));
                }
                let (repository, tag) = split_tag(path);
                if !is_valid_oci_repository(repository) {
                    return Err(bad(
                        input,
                        "invalid repository: lowercase letters, digits and separators . _ __ - only",
                    ));
                }
                if let Some(t) = tag {
                    if !is_valid_tag(t) {
                        return Err(bad(input, format!("invalid tag {t:?}")));
                    }
                }
                Location::Oci {
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                    tag: tag.map(str::to_string),
                }
            }
            "s3" => {
                let (path, tag) = split_tag(rest);
                let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
                if !is_valid_bucket(bucket) {
                    return Err(bad(input, format!("invalid bucket name {bucket:?}")));
                }
                if !prefix.is_empty() && !prefix.split('/').all(is_valid_key_component) {
                    return Err(bad(
                        input,
                        "invalid prefix: components of [A-Za-z0-9._-], no empty, '.' or '..' components",
                    ));
                }
                if let Some(t) = tag {
                    if !is_valid_tag(t) {
                        return Err(bad(input, format!("invalid tag {t:?}")));
                    }
                }
                Location::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                    tag: tag.map(str::to_string),
                }
            }
            "hf" => {
                let (path, revision) = match rest.split_once('@') {
                    Some((r, rev)) => (r, Some(rev)),
                    None => (rest, None),
                };
                let (repo_type, repo_id) = match path.split_once('/') {
                    // `datasets/` and `spaces/` always name the type (as in
                    // HfFileSystem), never an owner.
                    Some(("datasets", r)) => (HfRepoType::Dataset, r),
                    Some(("spaces", r)) => (HfRepoType::Space, r),
                    _ => (HfRepoType::Model, path),
                };
                let valid_repo = repo_id
                    .split_once('/')
                    .is_some_and(|(o, n)| is_valid_hf_name(o) && is_valid_hf_name(n));
                if !valid_repo {
                    return Err(bad(
                        input,
                        "expected hf://owner/repo (model), hf://datasets/owner/repo or \
                         hf://spaces/owner/repo, each optionally @revision",
                    ));
                }
                if let Some(r) = revision {
                    if !is_valid_revision(r) {
                        return Err(bad(input, format!("invalid revision {r:?}")));
                    }
                }
                Location::Hf {
                    repo_type,
                    repo_id: repo_id.to_string(),
                    revision: revision.map(str::to_string),
                }
            }
            "ipfs" => {
                if rest.is_empty() {
                    Location::Ipfs { cid: None }
                } else if is_valid_cid(rest) {
                    Location::Ipfs {
                        cid: Some(rest.to_string()),
                    }
                } else {
                    return Err(bad(input, "invalid CID (expected ipfs://<cid> or ipfs://)"));
                }
            }
            other => {
                return Err(bad(
                    input,
                    format!("unknown scheme {other:?} (expected file, oci, s3, hf or ipfs)"),
                ))
            }
        };
        Ok(ImageRef { location, digest })
    }

    /// The scheme name (`file`, `oci`, `s3`, `hf`, `ipfs`).
    pub fn scheme(&self) -> &'static str {
        match self.location {
            Location::File { .. } => "file",
            Location::Oci { .. } => "oci",
            Location::S3 { .. } => "s3",
            Location::Hf { .. } => "hf",
            Location::Ipfs { .. } => "ipfs",
        }
    }

    /// The repository this reference names, without tag, revision or
    /// digest: the scope in which its versions share blobs (one IPFS node
    /// is one scope). Never holds credentials.
    pub fn repository_key(&self) -> String {
        match &self.location {
            Location::File { path } => format!("file://{path}"),
            Location::Oci {
                registry,
                repository,
                ..
            } => format!("oci://{registry}/{repository}"),
            Location::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
            Location::Hf {
                repo_type, repo_id, ..
            } => format!("hf://{}{repo_id}", repo_type.url_prefix()),
            Location::Ipfs { .. } => "ipfs://".into(),
        }
    }

    /// This reference pinned to `digest`.
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            location: self.location.clone(),
            digest: Some(digest),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { path } => write!(f, "file://{path}"),
            Location::Oci {
                registry,
                repository,
                tag,
            } => {
                write!(f, "oci://{registry}/{repository}")?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                Ok(())
            }
            Location::S3 {
                bucket,
                prefix,
                tag,
            } => {
                write!(f, "s3://{bucket}")?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}")?;
                }
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                Ok(())
            }
            Location::Hf {
                repo_type,
                repo_id,
                revision,
            } => {
                write!(f, "hf://{}{repo_id}", repo_type.url_prefix())?;
                if let Some(r) = revision {
                    write!(f, "@{r}")?;
                }
                Ok(())
            }
            Location::Ipfs { cid } => write!(f, "ipfs://{}", cid.as_deref().unwrap_or("")),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn repository_keys_drop_tags_revisions_and_digests() {
        let key = |r: &str| ImageRef::parse(r).unwrap().repository_key();
        assert_eq!(key("oci://h:5000/a/b:v1"), key("oci://h:5000/a/b:v2"));
        assert_eq!(key("oci://h:5000/a/b:v1"), "oci://h:5000/a/b");
        assert_ne!(key("oci://h:5000/a/b"), key("oci://h:5000/a/c"));
        assert_eq!(key("s3://bkt/pre:t1"), "s3://bkt/pre");
        assert_eq!(key("hf://datasets/o/r@main"), "hf://datasets/o/r");
        assert_eq!(key("file:///x/y"), "file:///x/y");
    }

    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn examples_parse() {
        let d = Digest::of(b"m");
        assert_eq!(
            ok("file:///abs/path/repo").location,
            Location::File {
                path: "/abs/path/repo".into()
            }
        );
        assert_eq!(
            ok("file://./rel/path").location,
            Location::File {
                path: "./rel/path".into()
            }
        );
        assert_eq!(
            ok("oci://localhost:5000/team/img:v1").location,
            Location::Oci {
                registry: "localhost:5000".into(),
                repository: "team/img".into(),
                tag: Some("v1".into())
            }
        );
        let pinned = ok(&format!("oci://ghcr.io/a/b@{d}"));
        assert_eq!(pinned.digest, Some(d));
        assert_eq!(
            ok("s3://bucket/some/prefix:t1").location,
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into(),
                tag: Some("t1".into())
            }
        );
        assert_eq!(
            ok("hf://owner/repo@main").location,
            Location::Hf {
                repo_type: HfRepoType::Model,
                repo_id: "owner/repo".into(),
                revision: Some("main".into())
            }
        );
        // HfFileSystem's spelling of datasets and Spaces.
        for (s, t) in [
            ("hf://datasets/owner/repo", HfRepoType::Dataset),
            ("hf://spaces/owner/repo@v1", HfRepoType::Space),
        ] {
            match ok(s).location {
                Location::Hf { repo_type, .. } => assert_eq!(repo_type, t, "{s}"),
                other => panic!("{s}: {other:?}"),
            }
        }
        assert_eq!(
            ok("hf://datasets/owner/repo@v2").to_string(),
            "hf://datasets/owner/repo@v2"
        );
        let hf_pinned = ok(&format!("hf://owner/repo@v2@{d}"));
        assert_eq!(hf_pinned.digest, Some(d));
        assert_eq!(ok("ipfs://").location, Location::Ipfs { cid: None });
        assert_eq!(
            ok("ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi").scheme(),
            "ipfs"
        );
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "oci://",
            "oci://host",
            "oci://host/UPPER",
            "oci://host/repo:bad tag",
            "oci://host:99999/repo",
            "oci://ho st/repo",
            "s3://B/x",
            "s3://bucket/../x",
            "s3://bucket//x",
            "hf://owner",
            "hf://datasets/a/b/c",
            "hf://spaces/",
            "hf://datasets/repo",
            "hf://../x",
            "hf://o/r@../x",
            "ipfs://not-a-cid!",
            "ftp://x/y",
            "file://relative/no/dot",
            "file://",
            "oci://host/repo@sha256:abc",
            "oci://host/repo\n",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?} should be rejected");
        }
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}"
    }

    fn arb_ref() -> impl Strategy<Value = ImageRef> {
        let tag = proptest::option::of("[A-Za-z0-9_][A-Za-z0-9._-]{0,20}");
        let digest = proptest::option::of(any::<[u8; 32]>().prop_map(Digest::from_bytes));
        let loc = prop_oneof![
            proptest::collection::vec("[A-Za-z0-9_. -]{1,8}", 1..4).prop_map(|parts| {
                Location::File {
                    path: format!("/{}", parts.join("/")),
                }
            }),
            (
                "[a-z0-9]{1,10}(\\.[a-z0-9]{1,6}){0,2}",
                proptest::option::of(1u16..),
                proptest::collection::vec(component(), 1..4),
                tag.clone()
            )
                .prop_map(|(h, p, r, tag)| Location::Oci {
                    registry: match p {
                        Some(p) => format!("{h}:{p}"),
                        None => h,
                    },
                    repository: r.join("/"),
                    tag
                }),
            (
                "[a-z0-9][a-z0-9-]{1,20}[a-z0-9]",
                proptest::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,8}", 0..3),
                tag
            )
                .prop_map(|(b, p, tag)| Location::S3 {
                    bucket: b,
                    prefix: p.join("/"),
                    tag
                }),
            (
                prop_oneof![
                    Just(HfRepoType::Model),
                    Just(HfRepoType::Dataset),
                    Just(HfRepoType::Space)
                ],
                "[A-Za-z0-9][A-Za-z0-9_-]{0,10}",
                "[A-Za-z0-9][A-Za-z0-9_-]{0,10}",
                proptest::option::of("[A-Za-z0-9_-]{1,10}(/[A-Za-z0-9_-]{1,10})?")
            )
                .prop_filter("type prefixes are not owners", |(_, o, _, _)| {
                    o != "datasets" && o != "spaces"
                })
                .prop_map(|(repo_type, o, n, revision)| Location::Hf {
                    repo_type,
                    repo_id: format!("{o}/{n}"),
                    revision
                }),
            proptest::option::of("b[a-z2-7]{20,60}").prop_map(|cid| Location::Ipfs { cid }),
        ];
        (loc, digest).prop_map(|(location, digest)| ImageRef { location, digest })
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(r in arb_ref()) {
            let s = r.to_string();
            let back = ImageRef::parse(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            prop_assert_eq!(back, r);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,100}") {
            if let Ok(r) = ImageRef::parse(&s) {
                // Whatever parses must re-display to something that parses the same.
                prop_assert_eq!(ImageRef::parse(&r.to_string()).ok(), Some(r));
            }
        }
    }
}
