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
/// pipe early (`| head`) ends it quietly, with exit 0. An encrypted image
/// (found when its outer tree has no such path) is read with
/// `identities` (pf-crypt's `browse::cat_file`); without one, exit 4
/// naming its key ids.
pub async fn cat(
    cli: &Cli,
    reference: &str,
    path: &str,
    trust: &[PathBuf],
    identities: &[PathBuf],
) -> CliResult<u8> {
    let (reg, store) = open_reading(cli, reference, trust)?;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let res = match pf_snapshot::cat_file(&*reg, store.clone(), path, &mut out).await {
        Ok(rep) => Ok(rep.pull),
        Err(RegistryError::NotFound { .. }) if encrypted(&*reg, &store).await? => {
            let ids = crate::crypt::load_identities(identities)?;
            match pf_crypt::browse::cat_file(&*reg, store, &ids, path, &mut out).await {
                Ok((pull, _)) => Ok(pull),
                Err(pf_crypt::CryptError::Registry(e)) => Err(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => Err(e),
    };
    match res {
        Ok(pull) => {
            note(cli, format!("signature: {}", describe(&pull.verification)));
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

/// Whether REF is an encrypted image (its manifest only is fetched).
async fn encrypted(reg: &dyn Registry, store: &Arc<pf_cas::DirStore>) -> CliResult<bool> {
    let (rep, _) = pf_snapshot::pull_tree(reg, store.clone()).await?;
    Ok(pf_crypt::is_encrypted(&rep.pull.manifest))
}

/// `pf ls REF [PATH]`: one line per entry, or a JSON array with `--json`.
/// An encrypted image's tree is opened with `identities` (only its key
/// envelope and sealed index are fetched); without one, exit 4 naming its
/// key ids.
pub async fn ls(
    cli: &Cli,
    reference: &str,
    path: Option<&str>,
    trust: &[PathBuf],
    identities: &[PathBuf],
) -> CliResult<u8> {
    let (reg, store) = open_reading(cli, reference, trust)?;
    let (rep, mut tree) = pf_snapshot::pull_tree(&*reg, store.clone()).await?;
    let mut pull = rep.pull;
    if pf_crypt::is_encrypted(&pull.manifest) {
        let ids = crate::crypt::load_identities(identities)?;
        let b = pf_crypt::browse::pull_tree(&*reg, store, &ids).await?;
        (pull, tree) = (b.pull, b.tree);
    }
    let entries = pf_snapshot::list(&tree, path)?;
    if cli.json {
        println!("{}", ls_json(&entries));
    } else {
        for e in &entries {
            println!("{}", ls_line(e));
        }
        note(cli, format!("signature: {}", describe(&pull.verification)));
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
