//! The tools every peer scenario runs side by side: `tar | zstd -3 -T0` (no
//! dedup: each backup is a whole new archive), pf (file:// repository),
//! restic 0.14 and borg 1.2 (unencrypted repository, `zstd,3`). Each tool
//! keeps its state (repository, and its local store or cache) in its own
//! directory under the peers' work directory; a scenario rebuilds each
//! tool's state before a timed run, so every tool starts from the same point.

/// restic insists on a password (0.14 has no `--insecure-no-password`):
/// a fixed one, for bench repositories only.
const RESTIC_PASSWORD: &str = "pf-bench-only";

/// One tool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tool {
    /// `tar | zstd -3 -T0`, one archive per backup.
    Tar,
    /// pf with a file:// repository and its local store.
    Pf,
    /// restic 0.14.
    Restic,
    /// borg 1.2.
    Borg,
}

/// Every tool, in the order a scenario runs them.
pub const ALL: [Tool; 4] = [Tool::Tar, Tool::Pf, Tool::Restic, Tool::Borg];

impl Tool {
    fn key(self) -> &'static str {
        match self {
            Tool::Tar => "tar",
            Tool::Pf => "pf",
            Tool::Restic => "restic",
            Tool::Borg => "borg",
        }
    }

    /// The backup command's name in rows.
    pub fn backup_name(self) -> &'static str {
        match self {
            Tool::Tar => "tar | zstd -3 -T0",
            Tool::Pf => "pf push",
            Tool::Restic => "restic backup",
            Tool::Borg => "borg create",
        }
    }

    /// The restore command's name in rows.
    pub fn restore_name(self) -> &'static str {
        match self {
            Tool::Tar => "zstd -dc | tar -x",
            Tool::Pf => "pf pull + restore",
            Tool::Restic => "restic restore",
            Tool::Borg => "borg extract",
        }
    }
}

/// The tools' commands, over one work directory.
pub struct Peers {
    /// The `pf` binary.
    pub pf: String,
    /// The work directory holding each tool's state.
    pub work: String,
}

impl Peers {
    /// The tool's live state directory.
    fn dir(&self, t: Tool) -> String {
        format!("{}/{}", self.work, t.key())
    }

    /// The tool's repository (its growth is the bytes a backup sent).
    pub fn repo(&self, t: Tool) -> String {
        format!("{}/repo", self.dir(t))
    }

    /// The empty directory restores write into.
    pub fn out(&self) -> String {
        format!("{}/out", self.work)
    }

    /// `env` prefix: restic's password and cache, borg's home (cache,
    /// security dir) inside the state directory.
    fn env(&self, t: Tool) -> String {
        let d = self.dir(t);
        match t {
            Tool::Restic => format!("env RESTIC_PASSWORD={RESTIC_PASSWORD} RESTIC_CACHE_DIR={d}/cache"),
            Tool::Borg => format!(
                "env BORG_BASE_DIR={d}/home BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes"
            ),
            Tool::Tar | Tool::Pf => "env".into(),
        }
    }

    /// A new, empty repository (and no local state).
    pub fn init(&self, t: Tool) -> String {
        let (d, repo, env) = (self.dir(t), self.repo(t), self.env(t));
        let init = match t {
            Tool::Tar | Tool::Pf => format!("rm -rf {d} && mkdir -p {repo}"),
            Tool::Restic => {
                format!("rm -rf {d} && mkdir -p {d} && {env} restic -q -r {repo} init > /dev/null")
            }
            Tool::Borg => format!("rm -rf {d} && mkdir -p {d} && {env} borg init -e none {repo}"),
        };
        // Nothing of an earlier job left to write back.
        format!("{init} && sync")
    }

    /// Backs up the directory `src` as `name` (tar's file, borg's archive).
    pub fn backup(&self, t: Tool, src: &str, name: &str) -> String {
        let (d, repo, env) = (self.dir(t), self.repo(t), self.env(t));
        match t {
            Tool::Tar => format!("tar -C {src} -cf - . | zstd -q -3 -T0 > {repo}/{name}.tar.zst"),
            Tool::Pf => format!(
                "{} -q --json --store {d}/store push {src} file://{repo}",
                self.pf
            ),
            Tool::Restic => format!("cd {src} && {env} restic -q -r {repo} backup ."),
            Tool::Borg => {
                format!("cd {src} && {env} borg create --compression zstd,3 {repo}::{name} .")
            }
        }
    }

    /// Untimed setup of a restore: an empty output directory (and for pf an
    /// empty store), the repository read once so every tool reads warm input.
    pub fn restore_setup(&self, t: Tool) -> String {
        let (d, repo, out) = (self.dir(t), self.repo(t), self.out());
        format!(
            "{} && rm -rf {d}/pull-store && mkdir -p {out} && find {repo} -type f -exec cat {{}} + > /dev/null && {}",
            retire_output(&out),
            self.warm(t)
        )
    }

    /// Untimed shell: runs the tool once so that its program is in the
    /// page cache (after [`retire_output`] dropped it).
    pub fn warm(&self, t: Tool) -> String {
        match t {
            Tool::Pf => format!("{} --version > /dev/null", self.pf),
            Tool::Restic => "restic version > /dev/null".into(),
            Tool::Borg => "borg --version > /dev/null".into(),
            Tool::Tar => "zstd --version > /dev/null && tar --version > /dev/null".into(),
        }
    }

    /// Restores the latest backup (`name` for tar and borg) into
    /// [`Peers::out`]; pf pulls into an empty store.
    pub fn restore(&self, t: Tool, name: &str) -> String {
        self.restore_with(t, name, "pull-store")
    }

    /// [`Peers::restore`], pf pulling into the store `<state>/<store>`.
    pub fn restore_with(&self, t: Tool, name: &str, store: &str) -> String {
        let (d, repo, env, out) = (self.dir(t), self.repo(t), self.env(t), self.out());
        match t {
            Tool::Tar => format!("zstd -dc {repo}/{name}.tar.zst | tar -C {out} -xf -"),
            Tool::Pf => format!(
                "{} -q --json --store {d}/{store} pull file://{repo} --into {out}",
                self.pf
            ),
            Tool::Restic => format!("{env} restic -q -r {repo} restore latest --target {out}"),
            Tool::Borg => format!("cd {out} && {env} borg extract {repo}::{name}"),
        }
    }

    /// pf: a store at `<work>/saved/pf-<store>` that pulled the repository's
    /// latest version (a puller holding that version).
    pub fn pf_pull_store(&self, store: &str) -> String {
        let s = format!("{}/saved/pf-{store}", self.work);
        format!(
            "rm -rf {s} && {} -q --store {s} pull file://{}",
            self.pf,
            self.repo(Tool::Pf)
        )
    }

    /// pf: the live store `<state>/<store>` replaced by the saved one, as
    /// hard links (pf's store writes a blob to a temporary file and renames
    /// it, never into an existing file, so the saved store stays intact).
    pub fn pf_load_store(&self, store: &str) -> String {
        let d = self.dir(Tool::Pf);
        format!(
            "rm -rf {d}/{store} && cp -al {}/saved/pf-{store} {d}/{store}",
            self.work
        )
    }

    /// Removes every state, live and saved.
    pub fn clear(&self) -> String {
        format!("rm -rf {}", self.work)
    }
}

/// Where earlier restore outputs wait: next to the peers' states, so that
/// clearing those does not delete them.
pub fn graveyard() -> String {
    let root = std::path::Path::new("target/bench");
    std::fs::canonicalize(root)
        .unwrap_or_else(|_| root.to_path_buf())
        .join("graveyard")
        .display()
        .to_string()
}

/// Untimed shell: moves directory `dir`, if present, into the
/// [`graveyard`] instead of deleting it, while the disk keeps 16 GiB plus
/// twice its size free (else it is deleted). ext4 without a journal (the
/// bench machine's root filesystem) passes over inodes freed in the last
/// 60 to 360 seconds when it allocates new ones (`recently_deleted`), so
/// deleting the previous output just before a restore made that restore
/// pay for the deletion, by an amount that changed from run to run
/// (BENCHMARKS.md). The graveyard is emptied once the bench is done
/// ([`bury`]). Then everything dirty is written back: a moved output is
/// not discarded as a deleted one is, and its write-back would otherwise
/// run during the next restore.
pub fn retire(dir: &str) -> String {
    let g = graveyard();
    format!(
        "if [ -e {dir} ]; then mkdir -p {g} && \
         if [ $(df --output=avail -B1 {g} | tail -1) -gt $(( (16 << 30) + 2 * $(du -sb {dir} | cut -f1) )) ]; \
         then mv {dir} {g}/$(date +%s%N); else rm -rf {dir}; fi; fi; sync"
    )
}

/// Untimed shell: [`retire`] `dir`, then drop the page cache where allowed
/// (root), so that every restore starts from the same state (the pages of
/// the outputs before it gone); the restore's setup then reads its input
/// warm again.
pub fn retire_output(dir: &str) -> String {
    format!(
        "{}; (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null; true",
        retire(dir)
    )
}

/// Untimed shell: empties the [`graveyard`].
pub fn bury() -> String {
    format!("rm -rf {}", graveyard())
}
