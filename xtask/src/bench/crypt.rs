//! The encryption scenario: on the base version, pf's plain push and pull
//! beside its encrypted ones (`--encrypt-to` / `--identity`) and restic's
//! backup and restore (restic always encrypts), runs interleaved, each
//! from an empty repository (pushes) or an empty store and directory
//! (pulls). The summary gets encrypted/plain time ratios for pf and pf's
//! encrypted throughput relative to restic.

use super::edits::Versions;
use super::measure::{paired_ratio, timed, Job, Runner};
use super::peers::{Peers, Tool};
use super::{data, Summary};

/// Row names, in the order the jobs run.
pub const PUSH_ROWS: [&str; 3] = [
    "crypt: pf push (plain)",
    "crypt: pf push --encrypt-to",
    "crypt: restic backup",
];
/// Row names of the restores.
pub const PULL_ROWS: [&str; 3] = [
    "crypt: pf pull + restore (plain)",
    "crypt: pf pull --identity + restore",
    "crypt: restic restore",
];

/// pf's state directories (plain, encrypted) and the key pair's prefix.
struct Dirs {
    plain: String,
    sealed: String,
    key: String,
}

impl Dirs {
    fn new(p: &Peers) -> Dirs {
        Dirs {
            plain: format!("{}/crypt-plain", p.work),
            sealed: format!("{}/crypt-sealed", p.work),
            key: format!("{}/crypt-key/k", p.work),
        }
    }

    /// A new, empty repository and store for state `d`.
    /// Untimed: an empty repository, and nothing left to write back.
    fn init(d: &str) -> String {
        format!("rm -rf {d} && mkdir -p {d}/repo && sync")
    }

    fn push(&self, p: &Peers, d: &str, src: &str, encrypt: bool) -> String {
        let to = if encrypt {
            format!(" --encrypt-to {}.recipient", self.key)
        } else {
            String::new()
        };
        format!(
            "{} -q --json --store {d}/store push {src} file://{d}/repo{to}",
            p.pf
        )
    }

    /// Untimed: an empty output directory and pull store, the repository
    /// read once (warm input, as for the other restores).
    fn pull_setup(p: &Peers, d: &str) -> String {
        let out = p.out();
        format!(
            "{} && rm -rf {d}/pull-store && mkdir -p {out} && find {d}/repo -type f -exec cat {{}} + > /dev/null && {}",
            crate::bench::peers::retire_output(&out),
            p.warm(Tool::Pf)
        )
    }

    fn pull(&self, p: &Peers, d: &str, encrypt: bool) -> String {
        let id = if encrypt {
            format!(" --identity {}.identity", self.key)
        } else {
            String::new()
        };
        format!(
            "{} -q --json --store {d}/pull-store pull file://{d}/repo --into {}{id}",
            p.pf,
            p.out()
        )
    }
}

/// Runs the scenario on the base version of `v`.
pub fn crypt(p: &Peers, v: &Versions, r: &mut Runner, sum: &mut Summary) -> Result<(), String> {
    v.switch("base")?;
    let src = v.src().display().to_string();
    let mb = data::du(&v.src()) as f64 / 1e6;
    let d = Dirs::new(p);
    let keydir = d.key.trim_end_matches("/k");
    timed(&format!(
        "rm -rf {keydir} && mkdir -p {keydir} && {} -q keygen --encryption --out {}",
        p.pf, d.key
    ))
    .map_err(|e| format!("pf keygen --encryption: {e}"))?;
    let job = |name: &str, setup: String, cmd: String, grow: Option<String>| Job {
        name: name.into(),
        mb,
        setup,
        cmd,
        log: None,
        grow,
    };
    let pushes = [
        job(
            PUSH_ROWS[0],
            Dirs::init(&d.plain),
            d.push(p, &d.plain, &src, false),
            Some(format!("{}/repo", d.plain)),
        ),
        job(
            PUSH_ROWS[1],
            Dirs::init(&d.sealed),
            d.push(p, &d.sealed, &src, true),
            Some(format!("{}/repo", d.sealed)),
        ),
        job(
            PUSH_ROWS[2],
            p.init(Tool::Restic),
            p.backup(Tool::Restic, &src, "base"),
            Some(p.repo(Tool::Restic)),
        ),
    ];
    let t = r.jobs(&pushes)?;
    summarize(sum, "push", "backup", &t);
    let pulls = [
        job(
            PULL_ROWS[0],
            Dirs::pull_setup(p, &d.plain),
            d.pull(p, &d.plain, false),
            None,
        ),
        job(
            PULL_ROWS[1],
            Dirs::pull_setup(p, &d.sealed),
            d.pull(p, &d.sealed, true),
            None,
        ),
        job(
            PULL_ROWS[2],
            p.restore_setup(Tool::Restic),
            p.restore(Tool::Restic, "base"),
            None,
        ),
    ];
    let t = r.jobs(&pulls)?;
    summarize(sum, "pull + restore", "restore", &t);
    timed(&p.clear())
        .map(|_| ())
        .map_err(|e| format!("clearing peer states: {e}"))
}

/// The ratios of one group of [plain, encrypted, restic] times.
fn summarize(sum: &mut Summary, what: &str, restic: &str, t: &[(Vec<f64>, String)]) {
    sum.push((
        format!("encrypted {what}: pf encrypted / plain (time ratio, median of paired runs; target <= 1.25)"),
        paired_ratio(&t[1].0, &t[0].0),
    ));
    sum.push((
        format!("encrypted {what}: pf --encrypt-to vs restic {restic} (throughput ratio, median of paired runs)"),
        paired_ratio(&t[2].0, &t[1].0),
    ));
}
