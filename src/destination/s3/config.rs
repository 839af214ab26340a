//! `type = "s3"`: its keys, validated, and where its access keys come from.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Section};

/// The keys of an S3 destination, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// The service URL, e.g. `https://s3.eu-west-1.amazonaws.com`.
    endpoint: Option<String>,
    /// The signing region (default `us-east-1`).
    region: Option<String>,
    /// The bucket.
    bucket: Option<String>,
    /// A key prefix, e.g. `photos/`.
    prefix: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted.
    path_style: Option<bool>,
    /// Name of the environment variable holding the access key id.
    access_key_id_env: Option<String>,
    /// Name of the environment variable holding the secret key.
    secret_access_key_env: Option<String>,
    /// An AWS-style credentials file.
    credentials_file: Option<String>,
    /// The profile in that file (default `default`).
    profile: Option<String>,
    /// Files at least this large use multipart upload (default 64 MiB).
    multipart_threshold: Option<String>,
    /// Multipart part size (default 16 MiB, 5 MiB to 5 GiB).
    part_size: Option<String>,
    /// How long the server may stay silent before a request is given up
    /// and retried (default 2 min).
    timeout: Option<String>,
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Service URL (`http` allowed for local servers).
    pub endpoint: url::Url,
    /// Signing region.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// Where the access keys come from.
    pub credentials: S3CredentialSource,
    /// Files at least this large use multipart upload.
    pub multipart_threshold: u64,
    /// Multipart part size.
    pub part_size: u64,
    /// How long the server may stay silent (connecting, or mid-request).
    pub timeout: Duration,
}

/// Where an S3 destination's access keys come from. The keys themselves
/// are read when the destination is used (and again for every upload, so
/// rotated session credentials are picked up): a command that never talks
/// to the bucket (`status`, `jobs`) needs none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3CredentialSource {
    /// The named environment variables.
    Vars {
        /// Variable holding the access key id.
        access_key_id: String,
        /// Variable holding the secret access key.
        secret_access_key: String,
    },
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`)
    /// when `file` is not set and they are, else a credentials file in the
    /// AWS profile format.
    Standard {
        /// The credentials file (default `AWS_SHARED_CREDENTIALS_FILE` or
        /// `~/.aws/credentials`).
        file: Option<PathBuf>,
        /// The profile (default `AWS_PROFILE` or `default`).
        profile: Option<String>,
    },
}

/// Smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// The largest S3 multipart part.
pub const MAX_PART_SIZE: u64 = 5 << 30;

impl S3Config {
    /// Validates the keys of a `type = "s3"` destination.
    pub fn parse(table: toml::Table, section: &Section<'_>) -> Result<S3Config, ConfigError> {
        let raw: Raw = section.fields(table)?;
        let required = |value: &Option<String>, name: &str| {
            value.clone().filter(|v| !v.is_empty()).ok_or_else(|| section.error(name, "required for type = \"s3\""))
        };
        let endpoint_text = required(&raw.endpoint, "endpoint")?;
        let endpoint = url::Url::parse(&endpoint_text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| section.error("endpoint", &format!("`{endpoint_text}` is not an http(s) URL")))?;
        let bucket = required(&raw.bucket, "bucket")?;
        let mut prefix = raw.prefix.clone().unwrap_or_default().trim_start_matches('/').to_owned();
        if prefix.split('/').any(|c| c == ".." || c == ".") || prefix.chars().any(char::is_control) {
            return Err(section.error("prefix", "must not contain `.`/`..` segments or control characters"));
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let multipart_threshold = section.size("multipart_threshold", raw.multipart_threshold.as_deref(), 64 << 20)?;
        let part_size = section.size("part_size", raw.part_size.as_deref(), 16 << 20)?;
        if part_size < MIN_PART_SIZE {
            return Err(section.error("part_size", "must be at least 5 MiB (the S3 minimum)"));
        }
        if part_size > MAX_PART_SIZE {
            return Err(section.error("part_size", "must be at most 5 GiB (the S3 maximum)"));
        }
        Ok(S3Config {
            endpoint,
            region: raw.region.clone().unwrap_or_else(|| "us-east-1".into()),
            bucket,
            prefix,
            path_style: raw.path_style.unwrap_or(false),
            credentials: credential_source(&raw, section)?,
            multipart_threshold: multipart_threshold.max(MIN_PART_SIZE),
            part_size,
            timeout: section.duration("timeout", raw.timeout.as_deref(), Duration::from_mins(2))?,
        })
    }
}

/// Where the keys come from: the named environment variables (both or
/// neither), else the standard AWS variables or a credentials file.
fn credential_source(raw: &Raw, section: &Section<'_>) -> Result<S3CredentialSource, ConfigError> {
    match (&raw.access_key_id_env, &raw.secret_access_key_env) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok(S3CredentialSource::Vars { access_key_id: id.clone(), secret_access_key: secret.clone() })
        }
        (None, None) => Ok(S3CredentialSource::Standard {
            file: raw.credentials_file.as_deref().map(|f| section.path("credentials_file", f)).transpose()?,
            profile: raw.profile.clone(),
        }),
        _ => Err(section.error(
            "access_key_id_env",
            "access_key_id_env and secret_access_key_env go together, each naming a variable",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DestinationKind};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/photosync/config.toml"))
    }

    /// Regression: the keys were read while the config loaded, so `status`
    /// and `jobs` failed for a user without the service's secrets.
    #[test]
    fn s3_destination_loads_without_its_keys() {
        let text = "[[source]]\npath = \"/p\"\n[[destination]]\nname = \"b2\"\ntype = \"s3\"\n\
             endpoint = \"http://127.0.0.1:9000\"\nbucket = \"photos\"\nprefix = \"me\"\npath_style = true\n\
             access_key_id_env = \"PHOTOSYNC_TEST_UNSET_ID\"\nsecret_access_key_env = \"PHOTOSYNC_TEST_UNSET_SECRET\"\n\
             part_size = \"8MiB\"\n";
        let config = parse(text).expect("valid without the variables set");
        let DestinationKind::S3(s3) = &config.destinations[0].kind else { panic!("not s3") };
        assert_eq!(s3.prefix, "me/");
        assert_eq!(s3.part_size, 8 << 20);
        assert_eq!(
            s3.credentials,
            S3CredentialSource::Vars {
                access_key_id: "PHOTOSYNC_TEST_UNSET_ID".into(),
                secret_access_key: "PHOTOSYNC_TEST_UNSET_SECRET".into()
            }
        );
        let profile = text.replace("access_key_id_env = \"PHOTOSYNC_TEST_UNSET_ID\"\nsecret_access_key_env = \"PHOTOSYNC_TEST_UNSET_SECRET\"\n", "credentials_file = \"creds\"\nprofile = \"nas\"\n");
        let DestinationKind::S3(s3) = &parse(&profile).expect("valid").destinations[0].kind else { panic!("not s3") };
        let expected = S3CredentialSource::Standard {
            file: Some(PathBuf::from("/etc/photosync/creds")),
            profile: Some("nas".into()),
        };
        assert_eq!(s3.credentials, expected, "relative to the config file");
        for (bad, key) in [
            (text.replace("part_size = \"8MiB\"", "part_size = \"1MiB\""), "part_size"),
            (text.replace("part_size = \"8MiB\"", "part_size = \"6GiB\""), "part_size"),
            (text.replace("http://127.0.0.1:9000", "ftp://x"), "endpoint"),
            (text.replace("bucket = \"photos\"\n", ""), "bucket"),
            (text.replace("prefix = \"me\"", "prefix = \"../up\""), "prefix"),
            (text.replace("secret_access_key_env = \"PHOTOSYNC_TEST_UNSET_SECRET\"\n", ""), "access_key_id_env"),
        ] {
            let message = parse(&bad).expect_err(key).to_string();
            assert!(message.contains(key), "{message}");
        }
    }
}
