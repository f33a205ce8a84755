//! The object store: where generated images and thumbnails live, and the expiring links
//! that let a browser fetch one.
//!
//! One trait, [`ObjectStore`], two backends chosen by configuration only ([`open`]):
//! a local directory ([`local`], the embedded default: atomic writes, app URLs signed with
//! HMAC-SHA256 and served by [`Objects::router`]) and S3 or any S3-compatible server
//! ([`s3`], cargo feature `s3`: SigV4 pre-signed URLs the browser takes straight to the
//! bucket). Callers hold an `Arc<dyn ObjectStore>` and never ask which one they have.
//!
//! The one thing to know: keys are [`ObjectKey`]s, parsed once, so no backend ever sees a
//! name that could leave its root.

mod config;
mod key;
pub mod local;
#[cfg(feature = "s3")]
pub mod s3;

use std::{
    fmt,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use axum::Router;
use bytes::Bytes;
use http::StatusCode;

pub use config::{Backend, LocalConfig, ObjectsConfig, S3Config, Secret};
pub use key::{
    ContentType, ContentTypeError, Disposition, DownloadName, DownloadNameError, KeyError,
    ObjectKey, MAX_KEY_LEN,
};
pub use local::{LocalStore, SigningKey};

use crate::http::{Problem, ReadinessCheck};

/// Longest lifetime of a signed URL: SigV4 refuses more than seven days, and the local
/// store keeps the same bound so the two behave alike.
pub const MAX_SIGNED_URL_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What is known about a stored object without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    pub content_type: ContentType,
}

/// A stored object, read whole (bounded by `max_object_bytes`).
#[derive(Clone, Debug)]
pub struct Object {
    pub meta: ObjectMeta,
    pub bytes: Bytes,
}

/// A link that lets its holder read one object until it expires. For the local store it
/// is a path on this app (`/objects/<key>?expires=…&sig=…`); for S3 an absolute URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedUrl {
    url: String,
    expires_at: SystemTime,
}

impl SignedUrl {
    pub(crate) fn new(url: String, expires_at: SystemTime) -> Self {
        Self { url, expires_at }
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn into_string(self) -> String {
        self.url
    }

    /// When the link stops working.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

// The URL is a bearer capability: keep it out of logs that print values with `{:?}`.
impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.url.split('?').next().unwrap_or_default();
        write!(f, "SignedUrl({path}?…)")
    }
}

/// Everything that can go wrong at the object store's boundary.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("no object at {0}")]
    NotFound(ObjectKey),
    #[error("the object is {size} bytes, more than the {max} allowed")]
    TooLarge { size: u64, max: u64 },
    #[error("a signed URL lives between 1 second and 7 days, not {0:?}")]
    InvalidExpiry(Duration),
    #[error("object store configuration: {0}")]
    Config(String),
    /// The local store keeps `a/b` as a file in a directory `a`, so `a` and `a/b` cannot
    /// both be objects there (S3 allows it; our key layouts never need it).
    #[error("{0} collides with another key (one names a directory of the other)")]
    KeyConflict(ObjectKey),
    #[error("the stored object at {0} is damaged")]
    Corrupt(ObjectKey),
    #[error("object store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ObjectError {
    pub(crate) fn unavailable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(e.into())
    }
}

impl From<ObjectError> for Problem {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NotFound(_) => Problem::not_found("There is no such object."),
            ObjectError::TooLarge { max, .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "object-too-large",
                "Object too large",
            )
            .detail(format!("An object can be at most {max} bytes.")),
            ObjectError::KeyConflict(_) => Problem::conflict(
                "object-key-conflict",
                "Object key conflict",
                "That name is already used as a folder of other objects.",
            ),
            ObjectError::InvalidExpiry(_) => {
                Problem::validation("A link lives between 1 second and 7 days.")
            }
            ObjectError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "object store unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "objects-unavailable",
                    "Storage unavailable",
                )
                .detail("Image storage is not reachable right now. Try again shortly.")
                .retry_after(5)
            }
            other @ (ObjectError::Config(_) | ObjectError::Corrupt(_)) => Problem::internal(&other),
        }
    }
}

/// Objects by key, and links to them. Both backends implement it identically: `put`
/// replaces atomically, `delete` of a missing object succeeds, `signed_url` does not check
/// that the object exists (fetching a link to a missing object is a 404).
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug + 'static {
    /// `local` or `s3`, for logs and `/readyz`.
    fn backend(&self) -> Backend;

    /// Stores `bytes` under `key`, replacing what was there. A reader sees the old object
    /// or the new one, never a part.
    async fn put(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        content_type: &ContentType,
    ) -> Result<ObjectMeta, ObjectError>;

    /// Reads the whole object.
    async fn get(&self, key: &ObjectKey) -> Result<Object, ObjectError>;

    /// Size and content type, without the bytes.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectError>;

    async fn exists(&self, key: &ObjectKey) -> Result<bool, ObjectError> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(ObjectError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the object; removing a missing one is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError>;

    /// A link that reads `key` for `expires_in` (1 s to 7 days), presented as
    /// `disposition` when given.
    async fn signed_url(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        disposition: Option<&Disposition>,
    ) -> Result<SignedUrl, ObjectError>;

    /// Whether the store is reachable and usable, for `/readyz`.
    async fn ping(&self) -> Result<(), ObjectError>;
}

pub(crate) fn check_expiry(expires_in: Duration) -> Result<(), ObjectError> {
    if expires_in < Duration::from_secs(1) || expires_in > MAX_SIGNED_URL_TTL {
        return Err(ObjectError::InvalidExpiry(expires_in));
    }
    Ok(())
}

/// The configured store, plus the routes it needs served (none for S3).
#[derive(Clone, Debug)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    local: Option<Arc<LocalStore>>,
    default_ttl: Duration,
}

impl Objects {
    pub fn local(store: Arc<LocalStore>, default_ttl: Duration) -> Self {
        Self {
            store: store.clone(),
            local: Some(store),
            default_ttl,
        }
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// `[objects] signed_url_ttl_secs`: the lifetime to use when a caller has no reason
    /// to choose another.
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// Routes to mount on the public app: `GET /objects/{*key}` for the local store, which
    /// serves signed links; nothing for S3, whose links go to the bucket.
    pub fn router(&self) -> Router {
        match &self.local {
            Some(local) => local::router(local.clone()),
            None => Router::new(),
        }
    }

    /// A `/readyz` check named `objects:<backend>`.
    pub fn readiness_check(&self) -> Arc<dyn ReadinessCheck> {
        Arc::new(StoreCheck(self.store.clone()))
    }
}

/// Opens the configured store: creates the local directory (and the URL signing key on
/// first start), or builds the S3 client (and creates the bucket if configured to).
pub async fn open(config: &ObjectsConfig, data_dir: &Path) -> Result<Objects, ObjectError> {
    let ttl = Duration::from_secs(config.signed_url_ttl_secs);
    check_expiry(ttl).map_err(|_| {
        ObjectError::Config(format!(
            "signed_url_ttl_secs must be between 1 and {}",
            MAX_SIGNED_URL_TTL.as_secs()
        ))
    })?;
    match config.backend {
        Backend::Local => {
            let dir = config
                .local
                .dir
                .clone()
                .unwrap_or_else(|| data_dir.join("objects"));
            let signing_key = match &config.local.signing_key {
                Some(secret) => SigningKey::from_bytes(secret.expose().as_bytes())?,
                None => SigningKey::load_or_create(&data_dir.join("object-url.key")).await?,
            };
            let store = LocalStore::open(dir, signing_key, config.max_object_bytes).await?;
            Ok(Objects::local(Arc::new(store), ttl))
        }
        #[cfg(feature = "s3")]
        Backend::S3 => {
            let store = s3::S3Store::open(&config.s3, config.max_object_bytes).await?;
            Ok(Objects {
                store: Arc::new(store),
                local: None,
                default_ttl: ttl,
            })
        }
        #[cfg(not(feature = "s3"))]
        Backend::S3 => Err(ObjectError::Config(
            "backend = \"s3\" needs a build with the `s3` cargo feature".into(),
        )),
    }
}

struct StoreCheck(Arc<dyn ObjectStore>);

#[async_trait]
impl ReadinessCheck for StoreCheck {
    fn name(&self) -> String {
        match self.0.backend() {
            Backend::Local => "objects:local".into(),
            Backend::S3 => "objects:s3".into(),
        }
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}
