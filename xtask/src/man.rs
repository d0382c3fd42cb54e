//! `cargo xtask man`: roff man pages for `pf` from its clap definition.

use std::path::{Path, PathBuf};

/// Renders `pf.1` and one `pf-<subcommand>.1` per subcommand into `dir`,
/// returning the files written.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (name, page) in pages()? {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).map_err(|e| format!("write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Each page's name (`pf`, `pf-push`, ...) and roff text.
fn pages() -> Result<Vec<(String, Vec<u8>)>, String> {
    let cmd = pf_cli::command();
    let mut out = vec![("pf".to_string(), render(cmd.clone())?)];
    for sub in cmd.get_subcommands() {
        let name = format!("pf-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("pf {}", sub.get_name()));
        out.push((name, render(page)?));
    }
    Ok(out)
}

fn render(cmd: clap::Command) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut buf)
        .map_err(|e| format!("render man page: {e}"))?;
    Ok(buf)
}

/// `cargo xtask man`: pages into `target/man`.
pub fn man() -> Result<(), String> {
    let files = write_pages(Path::new("target/man"))?;
    for f in &files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_page_names_every_subcommand_and_each_has_a_page() {
        let pages = pages().expect("render");
        let main = String::from_utf8(pages[0].1.clone()).expect("utf-8 roff");
        assert!(main.contains(".TH pf"), "{main}");
        let subs: Vec<String> = pf_cli::command()
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        for s in [
            "push",
            "pull",
            "exists",
            "inspect",
            "copy",
            "keygen",
            "ls",
            "completions",
        ] {
            assert!(subs.iter().any(|n| n == s), "{s} missing from {subs:?}");
        }
        for s in &subs {
            assert!(
                main.contains(&format!("pf\\-{s}")) || main.contains(s.as_str()),
                "{s} not in pf.1"
            );
            let page = pages
                .iter()
                .find(|(n, _)| *n == format!("pf-{s}"))
                .unwrap_or_else(|| panic!("no page for {s}"));
            let text = String::from_utf8_lossy(&page.1);
            assert!(text.contains(&format!(".TH pf-{s} 1")), "{s}: {text}");
            assert!(text.contains(&format!("\\fBpf {s}\\fR")), "{s}: {text}");
        }
        // Global flags and the --progress modes are documented.
        assert!(main.contains("progress"), "{main}");
        assert!(main.contains("json"), "{main}");
    }

    #[test]
    fn write_pages_writes_one_file_per_page() {
        let dir = std::env::temp_dir().join(format!("pf-man-{}", std::process::id()));
        let files = write_pages(&dir).expect("write");
        assert!(files.len() > 8, "{files:?}");
        assert!(dir.join("pf.1").is_file());
        assert!(dir.join("pf-push.1").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
