//! `cargo xtask bench` at a tiny size with every scenario, pf being this
//! xtask binary started through a link named `pf` (the file-only `pf`
//! command, no release build). Checks the report's rows, not timings:
//! every row of every scenario is there, restic's and borg's backup rows
//! carry a repository growth, and the edit scenarios print the bytes they
//! changed and bytes sent per byte changed. Needs restic and borg
//! (`cargo xtask servers install`).

use std::path::Path;
use std::process::Command;

/// Runs the bench in `dir` and returns (table, results.json).
fn run_bench(dir: &Path) -> (String, String) {
    let pf = dir.join("pf");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_xtask"), &pf).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "--size",
            "32MiB",
            "--runs",
            "1",
            "--scenario",
            "all",
        ])
        .args(["--small-files", "200", "--levels", "1", "--pf"])
        .arg(&pf)
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stderr}");
    let json = std::fs::read_to_string(dir.join("target/bench/results.json")).unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), json)
}

/// The results.json line of row `name`.
fn row<'a>(json: &'a str, name: &str) -> &'a str {
    let key = format!("{{\"name\": {name:?},");
    json.lines()
        .find(|l| l.trim_start().starts_with(&key))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{json}"))
}

/// An integer field of a results.json row (None for `null`).
fn field(line: &str, key: &str) -> Option<u64> {
    let i = line.find(&format!("\"{key}\": "))? + key.len() + 4;
    line[i..]
        .split([',', '}'])
        .next()
        .and_then(|v| v.trim().parse().ok())
}

const BACKUPS: [&str; 4] = [
    "tar | zstd -3 -T0",
    "pf push",
    "restic backup",
    "borg create",
];
const RESTORES: [&str; 4] = [
    "zstd -dc | tar -x",
    "pf pull + restore",
    "restic restore",
    "borg extract",
];
const EDITS: [&str; 2] = [
    "1% scattered 64 KiB writes",
    "100 appends + 10 new files + 1 MiB insertion",
];

/// Every row `--scenario all --levels 1 --small-files 200` must print.
fn expected_rows() -> Vec<String> {
    let mut rows: Vec<String> = [
        "sha256sum (hashing limit)",
        "cp -r",
        "tar | zstd -3 -T0",
        "pf push (first, file)",
        "restic backup (first)",
        "borg create (first)",
        "tar | zstd -3 -T0, fsynced",
        "pf re-push unchanged",
        "restic backup unchanged",
        "borg create unchanged",
        "pf re-push after 1% edits",
        "pf re-push after 1 MiB insertion",
        "zstd -dc | tar -x",
        "pf pull (empty store) + restore",
        "restic restore",
        "borg extract",
        "pf pull (store has it) + restore",
        "pf pull (store has previous version) + restore",
        "pf push (first, file), zstd -1",
        "pf push text logs, zstd -1",
        "big: pf push (first, file)",
        "big: pf pull (empty store) + restore",
    ]
    .map(String::from)
    .to_vec();
    for e in EDITS {
        rows.extend(BACKUPS.map(|b| format!("after {e}: {b}")));
        rows.extend(RESTORES.map(|b| {
            let b = if b.starts_with("pf ") {
                "pf pull (previous version local) + restore"
            } else {
                b
            };
            format!("pull after {e}: {b}")
        }));
    }
    rows.extend(
        [
            "crypt: pf push (plain)",
            "crypt: pf push --encrypt-to",
            "crypt: restic backup",
            "crypt: pf pull + restore (plain)",
            "crypt: pf pull --identity + restore",
            "crypt: restic restore",
        ]
        .map(String::from),
    );
    rows.extend(BACKUPS.map(|b| format!("200 small files: {b}")));
    rows.extend(RESTORES.map(|b| format!("200 small files: {b}")));
    rows
}

#[test]
fn every_scenario_reports_every_row_with_restic_and_borg() {
    let dir = tempfile::tempdir().unwrap();
    let (table, json) = run_bench(dir.path());

    for name in expected_rows() {
        row(&json, &name);
        assert!(
            table.contains(&format!("| {} |", name.replace('|', "\\|"))),
            "{name:?} missing from the table:\n{table}"
        );
    }
    // Bytes sent: every first backup and every backup after an edit
    // measured its repository's growth, which is not zero.
    let mut grown: Vec<String> = [
        "tar | zstd -3 -T0",
        "pf push (first, file)",
        "restic backup (first)",
        "borg create (first)",
    ]
    .map(String::from)
    .to_vec();
    for e in EDITS {
        grown.extend(BACKUPS.map(|b| format!("after {e}: {b}")));
    }
    grown.extend(BACKUPS.map(|b| format!("200 small files: {b}")));
    grown.extend(
        [
            "crypt: pf push (plain)",
            "crypt: pf push --encrypt-to",
            "crypt: restic backup",
        ]
        .map(String::from),
    );
    for name in &grown {
        let grew = field(row(&json, name), "repo_growth");
        assert!(grew.is_some_and(|g| g > 0), "{name}: no repository growth");
    }
    // The encryption ratios: pf encrypted vs plain, and vs restic.
    for k in [
        "encrypted push: pf encrypted / plain",
        "encrypted pull + restore: pf encrypted / plain",
        "encrypted push: pf --encrypt-to vs restic backup",
        "encrypted pull + restore: pf --encrypt-to vs restic restore",
    ] {
        assert!(json.contains(k), "no ratio {k:?} in:\n{json}");
    }
    for name in [
        "restic backup unchanged",
        "borg create unchanged",
        "pf re-push unchanged",
    ] {
        let grew = field(row(&json, name), "repo_growth").unwrap();
        // An unchanged re-backup adds metadata at most.
        assert!(grew < 100_000, "{name}: repository grew by {grew}");
    }
    for e in EDITS {
        let pf = row(&json, &format!("after {e}: pf push"));
        assert!(field(pf, "bytes_sent").is_some_and(|b| b > 0), "{pf}");
        // Bytes changed, and sent per changed byte for every tool.
        assert!(json.contains(&format!("{{\"label\": {e:?}, \"bytes_changed\": ")));
        assert!(
            table.contains(&format!("| {e} | ")),
            "no bytes changed for {e}"
        );
        for b in BACKUPS {
            let k = format!("after {e}: {b}: repository growth / bytes changed");
            assert!(json.contains(&format!("{k:?}: ")), "no ratio {k:?}");
        }
        let pull = format!("pull after {e}: pf pull (previous version local) + restore");
        let fetched = row(&json, &pull);
        assert!(field(fetched, "bytes_sent").is_some(), "{fetched}");
    }
    for k in [
        "first push vs restic backup (throughput ratio, median of paired runs)",
        "first push vs tar|zstd, fsynced (throughput ratio, median of paired runs)",
        "pull+restore vs borg extract (throughput ratio, median of paired runs)",
        "200 small files: pf vs restic backup (throughput ratio, median of paired runs)",
        "200 small files, restore: pf vs borg extract (throughput ratio, median of paired runs)",
    ] {
        assert!(json.contains(&format!("{k:?}: ")), "no ratio {k:?}");
    }
}
