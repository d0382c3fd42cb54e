//! `pf ls` and `pf cat`: the work is pf-snapshot's
//! ([`pf_snapshot::pull_tree`], [`pf_snapshot::list`],
//! [`pf_snapshot::cat_file`]); this file opens the registry and prints.

use std::path::PathBuf;
use std::sync::Arc;

use pf_registry::{FsEntry, Registry, RegistryError};
use pf_snapshot::kind_name;
use serde_json::json;

use crate::display::clean;
use crate::{config, describe, note, open_store, parse_ref, Cli, CliError, CliResult};

/// The registry at `reference` (trusting `trust`) and the local store.
fn open_reading(
    cli: &Cli,
    reference: &str,
    trust: &[PathBuf],
) -> CliResult<(Box<dyn Registry>, Arc<pf_cas::DirStore>)> {
    let r = parse_ref(reference)?;
    let cfg = config(cli, trust)?;
    let store = open_store(cli, pf_cas::Durability::EachBlob)?;
    Ok((pf_registry::open(&r, &cfg)?, store))
}

/// `pf cat REF PATH`: the file's bytes to stdout. A reader that closes the
/// pipe early (`| head`) ends it quietly, with exit 0.
pub async fn cat(cli: &Cli, reference: &str, path: &str, trust: &[PathBuf]) -> CliResult<u8> {
    let (reg, store) = open_reading(cli, reference, trust)?;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    match pf_snapshot::cat_file(&*reg, store, path, &mut out).await {
        Ok(rep) => {
            note(
                cli,
                format!("signature: {}", describe(&rep.pull.verification)),
            );
            Ok(0)
        }
        Err(RegistryError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(0)
        }
        Err(e) => Err(CliError::Registry(e)),
    }
}

/// `pf ls REF [PATH]`: one line per entry, or a JSON array with `--json`.
pub async fn ls(
    cli: &Cli,
    reference: &str,
    path: Option<&str>,
    trust: &[PathBuf],
) -> CliResult<u8> {
    let (reg, store) = open_reading(cli, reference, trust)?;
    let (rep, tree) = pf_snapshot::pull_tree(&*reg, store).await?;
    let entries = pf_snapshot::list(&tree, path)?;
    if cli.json {
        println!("{}", ls_json(&entries));
    } else {
        for e in &entries {
            println!("{}", ls_line(e));
        }
        note(
            cli,
            format!("signature: {}", describe(&rep.pull.verification)),
        );
    }
    Ok(0)
}

/// One `pf ls` line: kind, octal mode, size, path (and ` -> target` for a
/// symlink).
pub fn ls_line(e: &FsEntry) -> String {
    let mut line = format!(
        "{:<7} {:04o} {:>12}  {}",
        kind_name(e.kind),
        e.mode,
        e.size,
        clean(&e.path)
    );
    if let Some(t) = &e.target {
        line.push_str(" -> ");
        line.push_str(&clean(t));
    }
    line
}

/// `pf ls --json`: an array of `{path, kind, mode, size[, target]}`, the
/// mode an octal string such as `"0644"`.
pub fn ls_json(entries: &[&FsEntry]) -> serde_json::Value {
    entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "path": e.path,
                "kind": kind_name(e.kind),
                "mode": format!("{:04o}", e.mode),
                "size": e.size,
            });
            if let Some(t) = &e.target {
                v["target"] = json!(t);
            }
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_registry::manifest::EntryKind;

    #[test]
    fn lines_escape_control_characters() {
        let e = FsEntry {
            path: "evil\n\u{1b}[2Jname".into(),
            kind: EntryKind::Symlink,
            mode: 0o777,
            size: 0,
            blob: None,
            chunks: vec![],
            target: Some("t\r".into()),
            offset: None,
            parts: vec![],
        };
        let l = ls_line(&e);
        assert_eq!(
            l,
            "symlink 0777            0  evil\\n\\u{1b}[2Jname -> t\\r"
        );
        let j = ls_json(&[&e]);
        assert_eq!(j[0]["mode"], "0777");
        assert_eq!(j[0]["path"], "evil\n\u{1b}[2Jname");
    }
}
