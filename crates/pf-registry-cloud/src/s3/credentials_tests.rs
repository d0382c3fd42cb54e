use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use super::*;

const SECRET: &str = "wJalrXUtnFEMI-very-secret-value";
const TOKEN: &str = "FwoGZXIvYXdzEJr-session-token-value";

/// A fake environment rooted at a temp dir holding `credentials` and `config`.
struct Fake {
    dir: tempfile::TempDir,
    vars: HashMap<String, String>,
}

impl Fake {
    fn new(credentials: Option<&str>, config: Option<&str>) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let aws = dir.path().join(".aws");
        std::fs::create_dir_all(&aws).unwrap();
        if let Some(c) = credentials {
            std::fs::write(aws.join("credentials"), c).unwrap();
        }
        if let Some(c) = config {
            std::fs::write(aws.join("config"), c).unwrap();
        }
        let mut vars = HashMap::new();
        vars.insert("HOME".into(), dir.path().display().to_string());
        Fake { dir, vars }
    }

    fn set(mut self, k: &str, v: &str) -> Fake {
        self.vars.insert(k.into(), v.into());
        self
    }

    fn settings(&self, want: bool) -> Result<ProfileSettings> {
        let vars = self.vars.clone();
        profile_settings("s3://bkt", &move |k| vars.get(k).cloned(), want)
    }

    fn script(&self, name: &str, body: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }
}

fn assert_no_secret(e: &RegistryError) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
        assert!(!text.contains(TOKEN), "token leaked: {text}");
    }
}

async fn credential(s: &ProfileSettings) -> Arc<AwsCredential> {
    s.credentials
        .as_ref()
        .expect("credentials")
        .get_credential()
        .await
        .unwrap()
}

#[test]
fn ini_sections_comments_and_nested_keys() {
    let ini = parse_ini(
        "# comment\n; other\nstray = ignored\n[default]\naws_access_key_id = AK\n\
         [profile dev]\nregion=eu-west-1\ns3 =\n  addressing_style = path\nendpoint_url = http://x\n",
    )
    .unwrap();
    assert_eq!(ini["default"]["aws_access_key_id"], "AK");
    assert_eq!(ini["profile dev"]["region"], "eu-west-1");
    assert_eq!(ini["profile dev"]["s3.addressing_style"], "path");
    assert_eq!(ini["profile dev"]["endpoint_url"], "http://x");
    assert_eq!(ini.len(), 2);
    let e = parse_ini(&format!("[default]\n{SECRET}\n")).unwrap_err();
    assert!(e.contains("line 2") && !e.contains(SECRET), "{e}");
    assert!(parse_ini("[default\n").unwrap_err().contains("line 1"));
}

#[test]
fn command_split_like_a_shell() {
    assert_eq!(
        split_command(r#"/bin/tool --a 'b c' "d \"e\"" f\ g"#).unwrap(),
        ["/bin/tool", "--a", "b c", "d \"e\"", "f g"]
    );
    assert!(split_command("  ").is_err());
    assert!(split_command("x 'y").is_err());
}

#[test]
fn rfc3339_times() {
    let at = |s| {
        parse_rfc3339(s)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    assert_eq!(at("1970-01-01T00:00:00Z"), 0);
    assert_eq!(at("2026-11-30T18:00:00+01:00"), 1_796_058_000);
    assert_eq!(at("2026-11-30T17:00:00.123Z"), 1_796_058_000);
    assert_eq!(at("2000-02-29T12:34:56Z"), 951_827_696);
    for bad in [
        "2026-13-01T00:00:00Z",
        "2026-11-30 17:00",
        "2026-11-30T17:00:00",
        "x",
    ] {
        assert!(parse_rfc3339(bad).is_none(), "{bad}");
    }
}

#[tokio::test]
async fn default_profile_from_credentials_file() {
    let f = Fake::new(
        Some(&format!(
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = {SECRET}\n\
             aws_session_token = {TOKEN}\n[other]\naws_access_key_id = AKOTHER\naws_secret_access_key = x\n"
        )),
        None,
    );
    let s = f.settings(true).unwrap();
    let c = credential(&s).await;
    assert_eq!(c.key_id, "AKDEFAULT");
    assert_eq!(c.secret_key, SECRET);
    assert_eq!(c.token.as_deref(), Some(TOKEN));
    assert!(!format!("{s:?}").contains(SECRET));
    // AWS_PROFILE picks another section.
    let s = f.set("AWS_PROFILE", "other").settings(true).unwrap();
    assert_eq!(credential(&s).await.key_id, "AKOTHER");
}

#[tokio::test]
async fn config_file_profile_region_endpoint_and_precedence() {
    let f = Fake::new(
        Some("[dev]\naws_access_key_id = FROMCREDS\naws_secret_access_key = s\n"),
        Some(
            "[default]\nregion = us-west-2\n[profile dev]\nregion = eu-central-1\n\
             endpoint_url = http://127.0.0.1:9000\naws_access_key_id = FROMCONFIG\n\
             aws_secret_access_key = c\n",
        ),
    )
    .set("AWS_PROFILE", "dev");
    let s = f.settings(true).unwrap();
    assert_eq!(s.region.as_deref(), Some("eu-central-1"));
    assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    // The credentials file wins for a key set in both files.
    assert_eq!(credential(&s).await.key_id, "FROMCREDS");
    // With credentials from the environment, the profile only adds settings.
    let s = f.settings(false).unwrap();
    assert!(s.credentials.is_none());
    assert_eq!(s.region.as_deref(), Some("eu-central-1"));
    // `[default]` in the config file (no `profile ` prefix).
    let f = Fake::new(None, Some("[default]\nregion = us-west-2\n"));
    assert_eq!(
        f.settings(true).unwrap().region.as_deref(),
        Some("us-west-2")
    );
}

#[test]
fn explicit_file_paths_from_environment() {
    let f = Fake::new(None, None);
    let creds = f.dir.path().join("elsewhere-creds");
    let conf = f.dir.path().join("elsewhere-conf");
    std::fs::write(
        &creds,
        "[p]\naws_access_key_id = A\naws_secret_access_key = B\n",
    )
    .unwrap();
    std::fs::write(&conf, "[profile p]\nregion = ap-south-1\n").unwrap();
    let f = f
        .set("AWS_SHARED_CREDENTIALS_FILE", &creds.display().to_string())
        .set("AWS_CONFIG_FILE", &conf.display().to_string())
        .set("AWS_PROFILE", "p");
    let s = f.settings(true).unwrap();
    assert_eq!(s.region.as_deref(), Some("ap-south-1"));
    assert!(s.credentials.is_some());
}

#[test]
fn missing_named_profile_names_where_pf_looked() {
    let f = Fake::new(
        Some(&format!(
            "[default]\naws_access_key_id = A\naws_secret_access_key = {SECRET}\n"
        )),
        Some("[profile staging]\nregion = x\n"),
    )
    .set("AWS_PROFILE", "prod");
    let e = f.settings(true).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    assert!(msg.contains("`prod`"), "{msg}");
    assert!(
        msg.contains(&f.dir.path().join(".aws/credentials").display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains(&f.dir.path().join(".aws/config").display().to_string()),
        "{msg}"
    );
    assert_no_secret(&e);
    // No files and no AWS_PROFILE: nothing from profiles, no error (web
    // identity / instance metadata come next).
    let s = Fake::new(None, None).settings(true).unwrap();
    assert!(s.credentials.is_none() && s.region.is_none());
}

#[test]
fn wrong_values_are_clear_errors_without_secrets() {
    // Secret without key id.
    let f = Fake::new(
        Some(&format!("[default]\naws_secret_access_key = {SECRET}\n")),
        None,
    );
    let e = f.settings(true).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("no aws_access_key_id") && msg.contains("`default`"),
        "{msg}"
    );
    assert!(
        msg.contains(&f.dir.path().join(".aws/credentials").display().to_string()),
        "{msg}"
    );
    assert_no_secret(&e);
    // AssumeRole is not supported: said, not silently skipped.
    let f = Fake::new(
        None,
        Some("[profile r]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n"),
    )
    .set("AWS_PROFILE", "r");
    let msg = f.settings(true).unwrap_err().to_string();
    assert!(
        msg.contains("role_arn") && msg.contains("does not support") && msg.contains("`r`"),
        "{msg}"
    );
    // A malformed file names the file and line, not the content.
    let f = Fake::new(Some(&format!("[default]\n{SECRET}\n")), None);
    let e = f.settings(true).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    assert_no_secret(&e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_runs_and_refreshes_after_expiration() {
    let f = Fake::new(None, None);
    let count = f.dir.path().join("count");
    // First run: an Expiration in the past (refresh on next use); then a far one.
    let script = f.script(
        "creds.sh",
        &format!(
            "echo run >> '{c}'\nn=$(wc -l < '{c}')\n\
             if [ \"$n\" -eq 1 ]; then exp=2000-01-01T00:00:00Z; else exp=2999-01-01T00:00:00Z; fi\n\
             printf '{{\"Version\": 1, \"AccessKeyId\": \"AKPROC%s\", \"SecretAccessKey\": \"{SECRET}\", \"SessionToken\": \"{TOKEN}\", \"Expiration\": \"%s\"}}' \"$n\" \"$exp\"",
            c = count.display()
        ),
    );
    std::fs::write(
        f.dir.path().join(".aws/config"),
        format!("[default]\ncredential_process = {script} --flag 'two words'\n"),
    )
    .unwrap();
    let s = f.settings(true).unwrap();
    // Run once while configuring; its credential had expired, so it runs again.
    let c = credential(&s).await;
    assert_eq!(c.key_id, "AKPROC2");
    assert_eq!(c.secret_key, SECRET);
    assert_eq!(c.token.as_deref(), Some(TOKEN));
    // Still valid: cached, not run a third time.
    assert_eq!(credential(&s).await.key_id, "AKPROC2");
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
}

#[test]
fn credential_process_failures_name_profile_and_file() {
    let f = Fake::new(None, None).set("AWS_PROFILE", "proc");
    let cases = [
        ("fails.sh", format!("echo {SECRET} >&2; exit 3"), "exited with"),
        ("nojson.sh", format!("echo 'not json {SECRET}'"), "not JSON"),
        ("noversion.sh", format!("echo '{{\"AccessKeyId\": \"A\", \"SecretAccessKey\": \"{SECRET}\"}}'"), "Version"),
        ("nosecret.sh", "echo '{\"Version\": 1, \"AccessKeyId\": \"A\"}'".to_string(), "SecretAccessKey"),
        (
            "badtype.sh",
            format!("echo '{{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"{SECRET}\", \"SessionToken\": 5}}'"),
            "SessionToken",
        ),
        (
            "badtime.sh",
            format!("echo '{{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"{SECRET}\", \"Expiration\": \"{TOKEN}\"}}'"),
            "Expiration",
        ),
    ];
    let config = f.dir.path().join(".aws/config");
    for (name, body, expect) in cases {
        let script = f.script(name, &body);
        std::fs::write(
            &config,
            format!("[profile proc]\ncredential_process = {script}\n"),
        )
        .unwrap();
        let e = f.settings(true).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(expect), "{name}: {msg}");
        assert!(
            msg.contains("credential_process of AWS profile `proc`"),
            "{name}: {msg}"
        );
        assert!(msg.contains(&config.display().to_string()), "{name}: {msg}");
        assert_no_secret(&e);
    }
    std::fs::write(
        &config,
        "[profile proc]\ncredential_process = /nonexistent/pf-helper\n",
    )
    .unwrap();
    let msg = f.settings(true).unwrap_err().to_string();
    assert!(
        msg.contains("cannot run") && msg.contains("/nonexistent/pf-helper"),
        "{msg}"
    );
}
