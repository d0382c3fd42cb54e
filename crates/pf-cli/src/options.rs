//! Backend options (`-o KEY=VALUE`), with a way to keep secrets out of the
//! command line (where `ps` shows them). One rule for every option, so for
//! every secret one (`hf.token`, `s3.secret_access_key`,
//! `s3.session_token`, ...):
//!
//! - `-o KEY=VALUE`: the value itself (visible to other users in `ps`);
//! - `-o KEY_file=PATH`: the value is the content of PATH (one trailing
//!   newline removed), e.g. `-o hf.token_file=/run/secrets/hf`;
//! - environment variable `PF_OPTION_<KEY>`: KEY upper-cased with `.`
//!   written `_`, e.g. `PF_OPTION_HF_TOKEN`, `PF_OPTION_S3_SECRET_ACCESS_KEY`.
//!
//! The command line wins over the environment; giving one key both as
//! `KEY=` and `KEY_file=` is a usage error. Values are never printed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Prefix of the environment variables that set options.
pub const ENV_PREFIX: &str = "PF_OPTION_";
/// Suffix of an option key whose value names a file holding the value.
pub const FILE_SUFFIX: &str = "_file";
/// Largest option file read (a token or key, not a document).
const MAX_FILE: u64 = 64 << 10;

/// The options from `-o` arguments `args` and the environment `env`
/// (name, value pairs), by the rule in the module docs. Errors are usage
/// errors and never contain a value.
pub fn collect(
    args: &[String],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for o in args {
        let Some((k, v)) = o.split_once('=') else {
            return Err(format!(
                "--option {:?} is not KEY=VALUE",
                crate::display::clean(o)
            ));
        };
        let (key, value) = match k.strip_suffix(FILE_SUFFIX) {
            Some(key) => (key, read_value(Path::new(v), k)?),
            None => (k, v.to_string()),
        };
        if out.insert(key.to_string(), value).is_some() {
            return Err(format!(
                "option {} is given more than once",
                crate::display::clean(key)
            ));
        }
    }
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if value.is_empty() || rest.is_empty() {
            continue;
        }
        // BACKEND_NAME_PARTS -> backend.name_parts
        let lower = rest.to_ascii_lowercase();
        let key = match lower.split_once('_') {
            Some((backend, name)) => format!("{backend}.{name}"),
            None => lower,
        };
        out.entry(key).or_insert(value);
    }
    Ok(out)
}

/// Reads the value of option `key` from `path` (at most [`MAX_FILE`]
/// bytes, UTF-8, one trailing `\n` or `\r\n` removed).
fn read_value(path: &Path, key: &str) -> Result<String, String> {
    let what = || {
        format!(
            "option {}: {}",
            crate::display::clean(key),
            crate::display::clean_display(path.display())
        )
    };
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", what()))?;
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", what()))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(format!("{}: larger than {MAX_FILE} bytes", what()));
    }
    let mut s = String::from_utf8(buf).map_err(|_| format!("{}: not UTF-8", what()))?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn values_come_from_arguments_files_and_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "hf_secret_from_file\n").expect("write");
        let args = vec![
            "hf.public=true".to_string(),
            format!("hf.token_file={}", tok.display()),
        ];
        let o = collect(
            &args,
            env(&[
                ("PF_OPTION_S3_SECRET_ACCESS_KEY", "aws-secret"),
                ("PF_OPTION_HF_PUBLIC", "false"),
                ("PF_OPTION_", "x"),
                ("HOME", "/root"),
            ]),
        )
        .expect("collect");
        assert_eq!(o["hf.token"], "hf_secret_from_file");
        assert_eq!(o["hf.public"], "true", "the command line wins");
        assert_eq!(o["s3.secret_access_key"], "aws-secret");
        assert_eq!(o.len(), 3, "{:?}", o.keys());
    }

    #[test]
    fn errors_never_contain_a_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "s3cr3t").expect("write");
        let args = vec![
            "hf.token=s3cr3t".to_string(),
            format!("hf.token_file={}", tok.display()),
        ];
        let e = collect(&args, env(&[])).expect_err("twice");
        assert!(e.contains("hf.token") && !e.contains("s3cr3t"), "{e}");
        let e = collect(&["hf.token_file=/nonexistent/x".into()], env(&[])).expect_err("missing");
        assert!(e.contains("/nonexistent/x"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; (MAX_FILE + 1) as usize]).expect("write");
        let e = collect(&[format!("k.v_file={}", big.display())], env(&[])).expect_err("big");
        assert!(e.contains("larger"), "{e}");
    }
}
