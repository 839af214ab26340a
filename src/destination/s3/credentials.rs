//! An S3 destination's access keys, read from where the config says they
//! are each time the destination is used, so that rotated or refreshed
//! session credentials are picked up by a running daemon, and so that
//! commands that never talk to the bucket need none of them. No message
//! here ever carries a key.

use std::path::PathBuf;

use rusty_s3::Credentials;

use super::S3CredentialSource;
use crate::destination::DestinationError;

/// Reads the keys now. A missing variable, file or profile is a permanent
/// error naming where the keys were looked for.
pub fn resolve(source: &S3CredentialSource) -> Result<Credentials, DestinationError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match source {
        S3CredentialSource::Vars { access_key_id, secret_access_key } => {
            let missing = |var: &str| DestinationError::permanent(format!("environment variable {var} is not set"));
            let id = env(access_key_id).ok_or_else(|| missing(access_key_id))?;
            let secret = env(secret_access_key).ok_or_else(|| missing(secret_access_key))?;
            Ok(Credentials::new(id, secret))
        }
        S3CredentialSource::Standard { file, profile } => {
            if file.is_none()
                && let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
            {
                return Ok(match env("AWS_SESSION_TOKEN") {
                    Some(token) => Credentials::new_with_token(id, secret, token),
                    None => Credentials::new(id, secret),
                });
            }
            let file = file
                .clone()
                .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
                .or_else(|| directories::BaseDirs::new().map(|d| d.home_dir().join(".aws/credentials")))
                .ok_or_else(|| DestinationError::permanent("no S3 credentials configured"))?;
            let profile = profile.clone().or_else(|| env("AWS_PROFILE")).unwrap_or_else(|| "default".into());
            let text = std::fs::read_to_string(&file).map_err(|e| {
                DestinationError::permanent(format!(
                    "no S3 credentials: set access_key_id_env/secret_access_key_env, \
                     AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a credentials file ({}: {e})",
                    file.display()
                ))
            })?;
            let values = ini_section(&text, &profile);
            let get = |name: &str| values.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let missing =
                || DestinationError::permanent(format!("profile [{profile}] in {} lacks keys", file.display()));
            let id = get("aws_access_key_id").ok_or_else(missing)?;
            let secret = get("aws_secret_access_key").ok_or_else(missing)?;
            Ok(match get("aws_session_token") {
                Some(token) => Credentials::new_with_token(id, secret, token),
                None => Credentials::new(id, secret),
            })
        }
    }
}

/// The `key = value` pairs of `[section]` in an INI file (AWS credentials
/// format; `[profile name]` is accepted too).
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut current = None::<String>;
    let mut values = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            current = Some(name.strip_prefix("profile ").unwrap_or(name).trim().to_owned());
        } else if current.as_deref() == Some(section)
            && let Some((k, v)) = line.split_once('=')
        {
            values.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_a_profile_file_and_errors_never_show_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = A\naws_secret_access_key = S\n\
             [profile nas]\naws_access_key_id = B\naws_secret_access_key = T0PSECRET\naws_session_token = TOK\n",
        )
        .expect("write");
        let source = |profile: &str| S3CredentialSource::Standard {
            file: Some(file.clone()),
            profile: Some(profile.to_owned()),
        };
        let keys = resolve(&source("nas")).expect("keys");
        assert_eq!((keys.key(), keys.secret(), keys.token()), ("B", "T0PSECRET", Some("TOK")));
        let error = resolve(&source("none")).expect_err("no such profile");
        assert_eq!(error.retry, crate::destination::Retry::Permanent);
        assert!(error.message.contains("[none]") && !error.message.contains("T0PSECRET"), "{error}");

        let vars = S3CredentialSource::Vars {
            access_key_id: "PHOTOSYNC_TEST_NO_SUCH_ID".into(),
            secret_access_key: "PHOTOSYNC_TEST_NO_SUCH_SECRET".into(),
        };
        assert!(resolve(&vars).expect_err("unset").message.contains("PHOTOSYNC_TEST_NO_SUCH_ID is not set"));
    }
}
