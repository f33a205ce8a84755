//! The `[objects]` configuration section: which backend, where, and how long links live.
//!
//! Every field has a default that runs on a laptop (a directory under the data dir), so
//! the section can be left out. Secrets (the S3 secret key, the URL signing key) are
//! [`Secret`]s: they print and serialize as `***`, so `rendermart config` and logs never
//! show them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which store holds the objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Files under a local directory; links are app URLs signed with HMAC-SHA256.
    #[default]
    Local,
    /// An S3 bucket (AWS or any S3-compatible server); links are SigV4 pre-signed URLs.
    S3,
}

/// `[objects]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectsConfig {
    pub backend: Backend,
    /// Lifetime of a signed URL when the caller does not choose one.
    pub signed_url_ttl_secs: u64,
    /// Largest object `put` accepts and `get` reads into memory (bytes).
    pub max_object_bytes: u64,
    pub local: LocalConfig,
    pub s3: S3Config,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            signed_url_ttl_secs: 15 * 60,
            max_object_bytes: 32 * 1024 * 1024,
            local: LocalConfig::default(),
            s3: S3Config::default(),
        }
    }
}

/// `[objects.local]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalConfig {
    /// Where objects live; unset means `<data_dir>/objects`.
    pub dir: Option<PathBuf>,
    /// Key for the HMAC that signs object URLs (at least 32 bytes). Unset means a random
    /// key kept in `<data_dir>/object-url.key`, created on first start. Set it when several
    /// processes serve one shared directory, so each accepts the others' links.
    pub signing_key: Option<Secret>,
}

/// `[objects.s3]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// Custom endpoint for S3-compatible servers (`http://127.0.0.1:9000`); unset means AWS.
    /// An `http://` endpoint is allowed as written; AWS itself is always HTTPS.
    pub endpoint: Option<String>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`. Most
    /// S3-compatible servers (MinIO, moto) want `true`.
    pub path_style: bool,
    /// Static credentials. Unset means the standard AWS chain: `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, web identity, ECS, instance metadata.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// Create the bucket at start if it does not exist (development and tests only).
    pub create_bucket: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            create_bucket: false,
        }
    }
}

pub use rendermart_types::Secret;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_display_or_serialized_config() {
        let mut config = ObjectsConfig::default();
        config.s3.secret_access_key = Some(Secret::new("wJalrXUtnFEMI-very-secret"));
        config.local.signing_key = Some(Secret::new("0123456789abcdef0123456789abcdef-key"));
        let debug = format!("{config:?}");
        let json = serde_json::to_string(&config).unwrap_or_default();
        let shown = format!("{}", Secret::new("plain-value"));
        for text in [&debug, &json] {
            assert!(!text.contains("very-secret"), "{text}");
            assert!(!text.contains("abcdef-key"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
        assert_eq!(shown, "***");
    }

    #[test]
    fn the_section_parses_with_defaults_for_what_is_left_out() {
        let config: ObjectsConfig = serde_json::from_value(serde_json::json!({
            "backend": "s3",
            "s3": { "bucket": "images", "endpoint": "http://127.0.0.1:9000", "path_style": true,
                    "access_key_id": "AKID", "secret_access_key": "shh" }
        }))
        .expect("valid section");
        assert_eq!(config.backend, Backend::S3);
        assert_eq!(config.s3.region, "us-east-1");
        assert_eq!(config.signed_url_ttl_secs, 900);
        assert_eq!(
            config.s3.secret_access_key.as_ref().map(Secret::expose),
            Some("shh")
        );
        assert!(config.local.dir.is_none());
        assert!(
            serde_json::from_value::<ObjectsConfig>(serde_json::json!({"backend": "ftp"})).is_err()
        );
    }
}
