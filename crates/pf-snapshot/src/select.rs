//! Choosing part of an fs tree by path: [`select`] (what `pf pull
//! --include` restores), [`find`] (what `pf cat` reads) and [`list`] (what
//! `pf ls` prints). Pure functions of the tree; nothing is fetched here.
//!
//! A path names an entry of the tree as the tree spells it: relative,
//! `/`-separated, no empty, `.` or `..` component (one trailing `/` is
//! allowed and ignored). A path names the entry itself and, for a
//! directory, everything under it. Paths are checked like tree paths, so
//! `../x` or `/etc` is refused before anything is looked up.

use std::collections::HashSet;

use pf_registry_core::manifest::{validate_relative_path, EntryKind, FsEntry, FsTree};
use pf_registry_core::{RegistryError, Result};

/// Checks a path given by a user (a `--include`, a `pf cat` or `pf ls`
/// argument) and returns it without its trailing `/`. A path that is not a
/// valid tree path is [`RegistryError::BadReference`] (exit 1): it names a
/// part of an image, as a reference names the image.
pub fn tree_path(path: &str) -> Result<&str> {
    let p = path.strip_suffix('/').unwrap_or(path);
    validate_relative_path(p).map_err(|reason| RegistryError::BadReference {
        input: path.to_string(),
        reason: format!("not a path in an image's fs tree: {reason}"),
    })?;
    Ok(p)
}

/// Whether `path` is `prefix` or lies under it.
fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The part of `tree` the paths in `include` name: every entry equal to or
/// under one of them, plus the entries of their ancestor directories (so
/// modes of the parents are kept), in tree order; packs only those the kept
/// files read. Every include must name at least one entry, otherwise
/// [`RegistryError::BadReference`] naming it (as for an invalid path).
/// Symlinks are kept as recorded: the restore checks them as usual.
pub fn select(tree: &FsTree, include: &[&str]) -> Result<FsTree> {
    let include = include
        .iter()
        .map(|p| tree_path(p))
        .collect::<Result<Vec<_>>>()?;
    if let Some(missing) = include
        .iter()
        .find(|inc| !tree.entries.iter().any(|e| is_under(&e.path, inc)))
    {
        return Err(RegistryError::BadReference {
            input: (*missing).to_string(),
            reason: "names nothing in the image's fs tree".into(),
        });
    }
    let selected = |p: &str| include.iter().any(|inc| is_under(p, inc));
    let mut ancestors: HashSet<&str> = HashSet::new();
    for e in tree.entries.iter().filter(|e| selected(&e.path)) {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !ancestors.insert(parent) {
                break;
            }
            p = parent;
        }
    }
    let entries: Vec<FsEntry> = tree
        .entries
        .iter()
        .filter(|e| selected(&e.path) || ancestors.contains(e.path.as_str()))
        .cloned()
        .collect();
    if tree.is_v2() {
        // Chunk-table indices stay valid: the table and packs are kept
        // whole; a restore fetches only the packs its entries' parts use.
        return Ok(FsTree {
            entries,
            packs: tree.packs.clone(),
            chunk_table: tree.chunk_table.clone(),
        });
    }
    let packs_read: HashSet<_> = entries
        .iter()
        .filter(|e| e.offset.is_some())
        .filter_map(|e| e.blob)
        .collect();
    let packs = tree
        .packs
        .iter()
        .filter(|p| packs_read.contains(&p.blob))
        .cloned()
        .collect();
    Ok(FsTree {
        entries,
        packs,
        chunk_table: vec![],
    })
}

/// The entry of `tree` at `path`: [`RegistryError::NotFound`] (exit 2) if
/// there is none, [`RegistryError::BadReference`] if `path` is invalid.
pub fn find<'t>(tree: &'t FsTree, path: &str) -> Result<&'t FsEntry> {
    let p = tree_path(path)?;
    tree.entries
        .iter()
        .find(|e| e.path == p)
        .ok_or_else(|| RegistryError::not_found(format!("{p:?} in the image's fs tree")))
}

/// The entries of `tree` at or under `prefix` (all of them for `None`),
/// sorted by path. A prefix naming nothing is [`RegistryError::NotFound`];
/// an invalid one [`RegistryError::BadReference`].
pub fn list<'t>(tree: &'t FsTree, prefix: Option<&str>) -> Result<Vec<&'t FsEntry>> {
    let p = prefix.map(tree_path).transpose()?;
    let mut out: Vec<&FsEntry> = tree
        .entries
        .iter()
        .filter(|e| match p {
            Some(p) => is_under(&e.path, p),
            None => true,
        })
        .collect();
    if let (Some(p), true) = (p, out.is_empty()) {
        return Err(RegistryError::not_found(format!(
            "{p:?} in the image's fs tree"
        )));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The name `pf ls` prints for an entry kind.
pub fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_digest::Digest;
    use pf_registry_core::manifest::Chunk;
    use proptest::prelude::*;

    fn entry(path: &str, kind: EntryKind) -> FsEntry {
        FsEntry {
            path: path.into(),
            kind,
            mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
            size: 0,
            blob: None,
            chunks: vec![],
            target: (kind == EntryKind::Symlink).then(|| "x".into()),
            offset: None,
            parts: vec![],
        }
    }

    fn sample() -> FsTree {
        let pack = Digest::of(b"pack");
        let other = Digest::of(b"other pack");
        let mut a = entry("docs/a.txt", EntryKind::File);
        (a.size, a.blob, a.offset) = (2, Some(pack), Some(0));
        let mut b = entry("src/b.rs", EntryKind::File);
        (b.size, b.blob, b.offset) = (3, Some(other), Some(0));
        FsTree {
            entries: vec![
                entry("docs", EntryKind::Dir),
                a,
                entry("docs/sub", EntryKind::Dir),
                entry("docs/sub/link", EntryKind::Symlink),
                entry("docsx", EntryKind::File),
                entry("src", EntryKind::Dir),
                b,
            ],
            packs: vec![
                Chunk {
                    blob: pack,
                    size: 2,
                },
                Chunk {
                    blob: other,
                    size: 3,
                },
            ],
            chunk_table: vec![],
        }
    }

    fn paths(t: &FsTree) -> Vec<&str> {
        t.entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn a_subtree_keeps_its_parents_and_only_its_packs() {
        let t = select(&sample(), &["docs/sub/"]).unwrap();
        assert_eq!(paths(&t), ["docs", "docs/sub", "docs/sub/link"]);
        assert!(t.packs.is_empty());
        let t = select(&sample(), &["docs"]).unwrap();
        // "docsx" shares the prefix but is not under "docs".
        assert_eq!(
            paths(&t),
            ["docs", "docs/a.txt", "docs/sub", "docs/sub/link"]
        );
        assert_eq!(t.packs, sample().packs[..1]);
        t.validate().unwrap();
    }

    #[test]
    fn bad_and_unknown_includes_are_refused_with_exit_1() {
        for bad in ["../x", "/etc", "a//b", "", "docs/./a.txt"] {
            let e = select(&sample(), &[bad]).unwrap_err();
            assert!(
                matches!(e, RegistryError::BadReference { .. }),
                "{bad}: {e}"
            );
        }
        let e = select(&sample(), &["docs", "nothere"]).unwrap_err();
        assert!(matches!(e, RegistryError::BadReference { .. }));
        assert!(e.to_string().contains("names nothing"), "{e}");
    }

    #[test]
    fn find_and_list() {
        let t = sample();
        assert_eq!(find(&t, "src/b.rs").unwrap().size, 3);
        assert!(matches!(
            find(&t, "src/nope").unwrap_err(),
            RegistryError::NotFound { .. }
        ));
        assert!(matches!(
            find(&t, "../src").unwrap_err(),
            RegistryError::BadReference { .. }
        ));
        let all: Vec<_> = list(&t, None).unwrap().iter().map(|e| &e.path).collect();
        assert_eq!(all.len(), 7);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let src: Vec<_> = list(&t, Some("src")).unwrap();
        assert_eq!(src.len(), 2);
        assert!(matches!(
            list(&t, Some("nope")).unwrap_err(),
            RegistryError::NotFound { .. }
        ));
    }

    /// Trees of unique paths over a small alphabet (so includes often hit),
    /// each file packed at a distinct pack.
    fn arb_tree() -> impl Strategy<Value = FsTree> {
        let path =
            proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..4).prop_map(|v| v.join("/"));
        let kind = prop_oneof![
            Just(EntryKind::File),
            Just(EntryKind::Dir),
            Just(EntryKind::Symlink)
        ];
        proptest::collection::btree_map(path, kind, 0..20).prop_map(|m| {
            let mut t = FsTree::default();
            for (p, k) in m {
                let mut e = entry(&p, k);
                if k == EntryKind::File {
                    let d = Digest::of(p.as_bytes());
                    (e.size, e.blob, e.offset) = (1, Some(d), Some(0));
                    t.packs.push(Chunk { blob: d, size: 1 });
                }
                t.entries.push(e);
            }
            t
        })
    }

    proptest! {
        #[test]
        fn selection_is_exactly_the_includes_and_their_ancestors(
            tree in arb_tree(),
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
        ) {
            prop_assume!(!tree.entries.is_empty());
            let include: Vec<&str> = picks
                .iter()
                .map(|i| i.get(&tree.entries).path.as_str())
                .collect();
            let t = select(&tree, &include).unwrap();
            let under = |p: &str| include.iter().any(|inc| is_under(p, inc));
            let kept: HashSet<&str> = paths(&t).into_iter().collect();
            for e in &tree.entries {
                let is_ancestor = tree
                    .entries
                    .iter()
                    .any(|s| under(&s.path) && s.path.starts_with(&format!("{}/", e.path)));
                // Kept if and only if selected or the ancestor of a selected entry.
                prop_assert_eq!(kept.contains(e.path.as_str()), under(&e.path) || is_ancestor);
            }
            // Every ancestor directory of a kept entry that the tree has is kept.
            for p in &kept {
                let mut q = *p;
                while let Some((parent, _)) = q.rsplit_once('/') {
                    if tree.entries.iter().any(|e| e.path == parent) {
                        prop_assert!(kept.contains(parent), "{} lost parent {}", p, parent);
                    }
                    q = parent;
                }
            }
            // Packs: exactly those the kept files read; the result is a valid tree.
            let read: HashSet<_> = t.entries.iter().filter_map(|e| e.blob).collect();
            prop_assert!(t.packs.iter().all(|p| read.contains(&p.blob)));
            prop_assert_eq!(t.packs.len(), read.len());
            prop_assert!(t.validate().is_ok());
        }
    }
}
