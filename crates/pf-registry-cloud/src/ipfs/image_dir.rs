//! The image directory of one push, encoded on the client.
//!
//! Every file of the image (blobs, manifest, signature) is already on the
//! node; what is left is the UnixFS directories above them. They are
//! encoded here as dag-pb blocks and written with `block/put`, not built
//! in MFS: Kubo's MFS loses entries when concurrent calls change sibling
//! directories (a racing push could get a root without its
//! `manifest.json`). Encoded here, the root is a function of the image
//! alone: the same image always has the same root CID.

use std::collections::BTreeMap;

use pf_registry_core::{RegistryError, Result};

use super::dag::{self, Cid, DirLink, DAG_PB};

/// A file or directory on the node: its CID and the bytes of every block
/// under it (what a parent's link records as `Tsize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placed {
    /// The root block of the file or directory.
    pub cid: Cid,
    /// Cumulative size of its DAG.
    pub tsize: u64,
}

impl Placed {
    /// The transport's upload handle for this file (`<cid> <tsize>`).
    pub fn handle(&self) -> String {
        format!("{} {}", self.cid, self.tsize)
    }

    /// Reads back a [`handle`](Self::handle); `None` for anything else.
    pub fn from_handle(handle: &str) -> Option<Placed> {
        let (cid, tsize) = handle.split_once(' ')?;
        Some(Placed {
            cid: Cid::parse(cid).ok()?,
            tsize: tsize.parse().ok()?,
        })
    }
}

/// A directory being assembled: entry name to file or subdirectory.
#[derive(Default)]
struct Dir(BTreeMap<String, Entry>);

enum Entry {
    File(Placed),
    Dir(Dir),
}

/// A dag-pb block and its CID.
pub(super) type Block = (Cid, Vec<u8>);

/// The directory blocks of an image whose files sit at the given
/// `/`-separated paths, children before parents, and the root.
pub(super) fn build(files: &[(String, Placed)]) -> Result<(Vec<Block>, Placed)> {
    let mut root = Dir::default();
    for (path, placed) in files {
        root.insert(path, *placed)?;
    }
    let mut blocks = Vec::new();
    let placed = root.encode(&mut blocks);
    Ok((blocks, placed))
}

impl Dir {
    fn insert(&mut self, path: &str, placed: Placed) -> Result<()> {
        let clash = || RegistryError::invalid("ipfs image directory", format!("{path} twice"));
        let mut dir = self;
        let mut parts = path.split('/').peekable();
        while let Some(name) = parts.next() {
            if parts.peek().is_none() {
                if dir
                    .0
                    .insert(name.to_string(), Entry::File(placed))
                    .is_some()
                {
                    return Err(clash());
                }
                return Ok(());
            }
            let next = dir
                .0
                .entry(name.to_string())
                .or_insert_with(|| Entry::Dir(Dir::default()));
            dir = match next {
                Entry::Dir(d) => d,
                Entry::File(_) => return Err(clash()),
            };
        }
        Ok(())
    }

    /// Encodes the subdirectories into `blocks`, then this one.
    fn encode(self, blocks: &mut Vec<Block>) -> Placed {
        let links = self
            .0
            .into_iter()
            .map(|(name, entry)| {
                let placed = match entry {
                    Entry::File(p) => p,
                    Entry::Dir(d) => d.encode(blocks),
                };
                DirLink {
                    name,
                    cid: placed.cid,
                    tsize: placed.tsize,
                }
            })
            .collect::<Vec<_>>();
        let below: u64 = links.iter().map(|l| l.tsize).sum();
        let block = dag::directory(links);
        let placed = Placed {
            cid: Cid::of(DAG_PB, &block),
            tsize: below + block.len() as u64,
        };
        blocks.push((placed.cid, block));
        placed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::dag::{Node, RAW};

    fn file(b: &[u8]) -> Placed {
        Placed {
            cid: Cid::of(RAW, b),
            tsize: b.len() as u64,
        }
    }

    #[test]
    fn nested_paths_become_directories_children_first() {
        let files = vec![
            ("manifest.json".to_string(), file(b"{}")),
            ("blobs/sha256/ab/ab01.zst".to_string(), file(b"one")),
            ("blobs/sha256/cd/cd02.zst".to_string(), file(b"two")),
        ];
        let (blocks, root) = build(&files).expect("build");
        // ab, cd, sha256, blobs, root.
        assert_eq!(blocks.len(), 5);
        for (cid, block) in &blocks {
            assert_eq!(*cid, Cid::of(DAG_PB, block));
        }
        let (last_cid, last) = blocks.last().expect("root block");
        assert_eq!(root.cid, *last_cid);
        let names: Vec<_> = Node::decode(last)
            .expect("root")
            .links
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["blobs", "manifest.json"]);
        let all: u64 = blocks.iter().map(|b| b.1.len() as u64).sum::<u64>() + 2 + 3 + 3;
        assert_eq!(root.tsize, all);
        // The same files in another order: the same root.
        let rev: Vec<_> = files.into_iter().rev().collect();
        assert_eq!(build(&rev).expect("build").1, root);
    }

    #[test]
    fn a_path_twice_or_under_a_file_is_refused() {
        let twice = vec![("a".to_string(), file(b"1")), ("a".to_string(), file(b"2"))];
        assert!(build(&twice).is_err());
        let under = vec![
            ("a".to_string(), file(b"1")),
            ("a/b".to_string(), file(b"2")),
        ];
        assert!(build(&under).is_err());
    }

    #[test]
    fn handles_round_trip_and_garbage_is_none() {
        let p = file(b"x");
        assert_eq!(Placed::from_handle(&p.handle()), Some(p));
        assert_eq!(Placed::from_handle("bafy 12"), None);
        assert_eq!(Placed::from_handle(&p.cid.to_string()), None);
    }
}
