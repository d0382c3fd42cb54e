//! Versions of the snapshot for the edit scenarios, and the many-small-files
//! data set. Every version lives in `<root>/v/<name>`; the one being backed
//! up is renamed to `<root>/src`, so every tool always backs up the same
//! path (restic picks its parent snapshot by path, borg's files cache is
//! keyed by path) and unchanged files keep their inode, size, mtime and
//! ctime. An edited version is a hard-linked copy of the base whose touched
//! files were copied first, so the base is never modified.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::data;

/// An edit scenario's version and what it changed.
pub struct Edit {
    /// The version's name (`v/<name>`).
    pub name: &'static str,
    /// Human label for rows.
    pub label: &'static str,
    /// Bytes written or inserted.
    pub changed: u64,
}

/// Deterministic xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", p.display())
}

/// The directory where the versions and `src` live.
pub struct Versions {
    root: PathBuf,
}

impl Versions {
    /// Versions under `root`; puts back a version left in `src` by an
    /// interrupted run.
    pub fn open(root: &Path) -> Result<Versions, String> {
        let v = Versions {
            root: root.to_path_buf(),
        };
        fs::create_dir_all(root.join("v")).map_err(io(root))?;
        if let Ok(cur) = fs::read_to_string(v.marker()) {
            let src = root.join("src");
            if src.exists() {
                fs::rename(&src, root.join("v").join(cur.trim())).map_err(io(&src))?;
            }
            fs::remove_file(v.marker()).map_err(io(root))?;
        }
        Ok(v)
    }

    fn marker(&self) -> PathBuf {
        self.root.join("src.ver")
    }

    /// `<root>/v/<name>`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join("v").join(name)
    }

    /// `<root>/src`, where [`Versions::switch`] puts a version.
    pub fn src(&self) -> PathBuf {
        self.root.join("src")
    }

    /// Makes version `name` the one at `src` (renames, so inodes stay).
    pub fn switch(&self, name: &str) -> Result<(), String> {
        let src = self.src();
        let cur = fs::read_to_string(self.marker()).ok();
        if cur.as_deref() == Some(name) {
            return Ok(());
        }
        if let Some(c) = cur {
            fs::rename(&src, self.dir(&c)).map_err(io(&src))?;
        }
        fs::rename(self.dir(name), &src).map_err(io(&src))?;
        fs::write(self.marker(), name).map_err(io(&src))
    }

    /// Shell: version `from` (now at `src`) back under `v/`, `to` at
    /// `src`, by renames; the marker is left alone, so a setup swaps back.
    pub fn swap_sh(&self, from: &str, to: &str) -> String {
        let src = self.src().display().to_string();
        format!(
            "mv {src} {} && mv {} {src}",
            self.dir(from).display(),
            self.dir(to).display()
        )
    }

    /// Puts the version at `src` back under `v/` (before the bench ends).
    pub fn park(&self) -> Result<(), String> {
        if let Ok(c) = fs::read_to_string(self.marker()) {
            fs::rename(self.src(), self.dir(&c)).map_err(io(&self.root))?;
            fs::remove_file(self.marker()).map_err(io(&self.root))?;
        }
        Ok(())
    }

    /// A new version `name`: `v/base` hard-linked (must not be at `src`).
    fn link_copy(&self, name: &str) -> Result<PathBuf, String> {
        let to = self.dir(name);
        let _ = fs::remove_dir_all(&to);
        let st = Command::new("cp")
            .arg("-al")
            .arg(self.dir("base"))
            .arg(&to)
            .status()
            .map_err(|e| format!("cp -al: {e}"))?;
        if !st.success() {
            return Err(format!("cp -al into {} failed", to.display()));
        }
        Ok(to)
    }

    /// Version `scattered`: 1% of the snapshot's bytes overwritten in place
    /// with random 64 KiB writes at random offsets of random files (a file
    /// picked with probability proportional to its size; a file under
    /// 64 KiB is overwritten whole). Seeded: the same edits every run.
    pub fn scattered(&self) -> Result<Edit, String> {
        let dir = self.link_copy("scattered")?;
        let files = files(&dir)?;
        let total: u64 = files.iter().map(|f| f.1).sum();
        const W: u64 = 64 << 10;
        let writes = (total / 100).div_ceil(W);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut copied = std::collections::HashSet::new();
        let mut changed = 0;
        let mut buf = vec![0u8; W as usize];
        for i in 0..writes {
            let mut at = rng.below(total);
            let (path, len) = files
                .iter()
                .find(|(_, len)| {
                    if at < *len {
                        true
                    } else {
                        at -= len;
                        false
                    }
                })
                .ok_or("scattered edit past the end")?;
            let n = W.min(*len);
            let off = at.min(len - n);
            if copied.insert(path.clone()) {
                unlink_copy(path)?;
            }
            data::fill(&mut buf[..n as usize], 0xed17 + i, false);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            f.seek(SeekFrom::Start(off)).map_err(io(path))?;
            f.write_all(&buf[..n as usize]).map_err(io(path))?;
            changed += n;
        }
        Ok(Edit {
            name: "scattered",
            label: "1% scattered 64 KiB writes",
            changed,
        })
    }

    /// Version `appends`: 4 KiB appended to 100 small files, 10 new 16 KiB
    /// files, and 1 MiB of random bytes inserted into the middle of the
    /// large file. Seeded.
    pub fn appends(&self) -> Result<Edit, String> {
        let dir = self.link_copy("appends")?;
        let mut small: Vec<PathBuf> = files(&dir.join("trace"))?
            .into_iter()
            .map(|f| f.0)
            .collect();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut changed = 0;
        let mut buf = vec![0u8; 4 << 10];
        for i in 0..100u64.min(small.len() as u64) {
            let j = rng.below(small.len() as u64) as usize;
            let path = small.swap_remove(j);
            unlink_copy(&path)?;
            data::fill(&mut buf, 0xa99e + i, true);
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            f.write_all(&buf).map_err(io(&path))?;
            changed += buf.len() as u64;
        }
        for i in 0..10 {
            let p = dir.join(format!("trace/new{i:02}.json"));
            data::write_file(&p, 16 << 10, 0x5eed + i, true)?;
            changed += 16 << 10;
        }
        // The insertion: a new file written beside and renamed over the
        // large file (as an editor would save it).
        let big = dir.join("model.bin");
        let tmp = dir.join("model.bin.tmp");
        {
            let mut r = fs::File::open(&big).map_err(io(&big))?;
            let len = r.metadata().map_err(io(&big))?.len();
            let mut w = fs::File::create(&tmp).map_err(io(&tmp))?;
            std::io::copy(&mut (&mut r).take(len / 2), &mut w).map_err(io(&tmp))?;
            let mut ins = vec![0u8; 1 << 20];
            data::fill(&mut ins, 0x1235, false);
            w.write_all(&ins).map_err(io(&tmp))?;
            std::io::copy(&mut r, &mut w).map_err(io(&tmp))?;
            changed += ins.len() as u64;
        }
        fs::rename(&tmp, &big).map_err(io(&big))?;
        Ok(Edit {
            name: "appends",
            label: "100 appends + 10 new files + 1 MiB insertion",
            changed,
        })
    }
}

/// Replaces a hard link with a private copy (new inode, same bytes).
fn unlink_copy(p: &Path) -> Result<(), String> {
    let tmp = p.with_extension("bench-copy");
    fs::copy(p, &tmp).map_err(io(p))?;
    fs::rename(&tmp, p).map_err(io(p))
}

/// Regular files under `dir` with their sizes, sorted by path.
fn files(dir: &Path) -> Result<Vec<(PathBuf, u64)>, String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let md = e.metadata().map_err(io(&d))?;
            if md.is_dir() {
                todo.push(e.path());
            } else if md.len() > 0 {
                out.push((e.path(), md.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `n` small files of 1-4 KiB (half compressible) in 100 directories.
/// Seeded; kept between runs when `.complete` says the same count.
pub fn small_files(dir: &Path, n: u64) -> Result<(), String> {
    if fs::read_to_string(dir.join(".complete")).ok() == Some(n.to_string()) {
        return Ok(());
    }
    let _ = fs::remove_dir_all(dir);
    let mut rng = Rng(0x51a1_1f11_e5e5_0001);
    let mut buf = vec![0u8; 4 << 10];
    for i in 0..n {
        let d = dir.join(format!("d{:03}", i % 100));
        if i < 100 {
            fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let len = 1024 + rng.below(3 * 1024 + 1) as usize;
        data::fill(&mut buf[..len], i + 1, i % 2 == 0);
        let p = d.join(format!("f{i:06}.dat"));
        fs::write(&p, &buf[..len]).map_err(io(&p))?;
    }
    fs::write(dir.join(".complete"), n.to_string()).map_err(io(dir))
}
