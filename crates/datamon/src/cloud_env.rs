//! Backend settings from the environment the cloud SDKs use, for [`crate::OpenOptions`]'s
//! `store_options`: what every front end (the CLI, the CSI driver, Python) passes when it opens
//! a store.
//!
//! - Every `AWS_*`, `GOOGLE_*` and `AZURE_*` variable, lowercased (object_store's config keys).
//! - AWS shared configuration files (`~/.aws/credentials`, `~/.aws/config`), which
//!   `object_store` does not read: the static credentials, region and endpoint of the selected
//!   profile (`AWS_PROFILE`, default `default`) fill in what the environment does not set.
//!   Files are `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE` when set. Roles, SSO and
//!   `credential_process` are not supported: use environment variables for those.

use std::collections::HashMap;
use std::path::PathBuf;

/// The backend settings of this process's environment (see the module docs), as
/// `(object_store key, value)`.
pub fn store_options() -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_")
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let from_profile = profile_options(&options);
    options.extend(from_profile);
    options
}

/// The options the AWS profile gives, as `(object_store key, value)`, for keys `present` lacks.
pub fn profile_options(present: &[(String, String)]) -> Vec<(String, String)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let home = var("HOME").map(PathBuf::from);
    let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let credentials = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
    let config = var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
    let read = |p: Option<PathBuf>| p.and_then(|p| std::fs::read_to_string(p).ok());
    from_files(
        &profile,
        read(credentials).as_deref(),
        read(config).as_deref(),
        present,
    )
}

fn from_files(
    profile: &str,
    credentials: Option<&str>,
    config: Option<&str>,
    present: &[(String, String)],
) -> Vec<(String, String)> {
    let mut found: HashMap<String, String> = HashMap::new();
    // The config file names sections `[profile NAME]` (and `[default]`); credentials win.
    if let Some(c) = config {
        let wanted = if profile == "default" {
            "default".to_owned()
        } else {
            format!("profile {profile}")
        };
        found.extend(section(c, &wanted));
    }
    if let Some(c) = credentials {
        found.extend(section(c, profile));
    }
    let has = |keys: &[&str]| present.iter().any(|(k, _)| keys.contains(&k.as_str()));
    let mut out = Vec::new();
    let mut add = |file_key: &str, option: &str, aliases: &[&str]| {
        if let Some(v) = found.get(file_key) {
            if !has(aliases) {
                out.push((option.to_owned(), v.clone()));
            }
        }
    };
    add(
        "aws_access_key_id",
        "aws_access_key_id",
        &["aws_access_key_id"],
    );
    add(
        "aws_secret_access_key",
        "aws_secret_access_key",
        &["aws_secret_access_key"],
    );
    add(
        "aws_session_token",
        "aws_session_token",
        &["aws_session_token", "aws_token"],
    );
    add(
        "region",
        "aws_region",
        &["aws_region", "aws_default_region"],
    );
    add(
        "endpoint_url",
        "aws_endpoint",
        &["aws_endpoint", "aws_endpoint_url"],
    );
    if found
        .get("endpoint_url")
        .is_some_and(|e| e.starts_with("http://"))
        && !has(&["aws_allow_http"])
    {
        out.push(("aws_allow_http".into(), "true".into()));
    }
    out
}

/// The `key = value` pairs of section `[name]` of an INI file.
fn section(text: &str, name: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = s.trim() == name;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = defaultsecret

[dev]
aws_access_key_id=DEVKEY
aws_secret_access_key = devsecret
aws_session_token = tok
";
    const CONFIG: &str = "
# comment
[default]
region = eu-west-1

[profile dev]
region = us-east-2
endpoint_url = http://127.0.0.1:7480
";

    fn get<'a>(o: &'a [(String, String)], k: &str) -> Option<&'a str> {
        o.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn profile_settings_become_options_below_the_environment() {
        let o = from_files("dev", Some(CREDENTIALS), Some(CONFIG), &[]);
        assert_eq!(get(&o, "aws_access_key_id"), Some("DEVKEY"));
        assert_eq!(get(&o, "aws_secret_access_key"), Some("devsecret"));
        assert_eq!(get(&o, "aws_session_token"), Some("tok"));
        assert_eq!(get(&o, "aws_region"), Some("us-east-2"));
        assert_eq!(get(&o, "aws_endpoint"), Some("http://127.0.0.1:7480"));
        assert_eq!(get(&o, "aws_allow_http"), Some("true"));

        let d = from_files("default", Some(CREDENTIALS), Some(CONFIG), &[]);
        assert_eq!(get(&d, "aws_access_key_id"), Some("DEFAULTKEY"));
        assert_eq!(get(&d, "aws_region"), Some("eu-west-1"));
        assert_eq!(get(&d, "aws_endpoint"), None);

        // What the environment sets wins.
        let env = [("aws_region".to_owned(), "ap-south-1".to_owned())];
        let o = from_files("dev", Some(CREDENTIALS), Some(CONFIG), &env);
        assert_eq!(get(&o, "aws_region"), None);
        assert!(from_files("nope", Some(CREDENTIALS), Some(CONFIG), &[]).is_empty());
    }
}
