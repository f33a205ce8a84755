//! The embedded object store: files under a directory, and the app route that serves them
//! through HMAC-signed, expiring links.
//!
//! Two things a reader must know:
//!
//! * A write never leaves half an object. Bytes go to a new file under `<root>/.tmp/`
//!   (same file system), are fsynced, then renamed over the final name, and the directory
//!   is fsynced. A reader holding the old file keeps reading the old bytes.
//! * Each file starts with a one-line header, `RMOBJ1 <content-type>\n`, then the bytes.
//!   Keeping the content type inside the file makes it atomic with the bytes (a sidecar
//!   file could disagree after a crash); `head -1` shows it.
//!
//! A link is `/objects/<key>?expires=<unix>[&disposition=inline|&download=<name>]&sig=…`
//! where `sig` is base64url(HMAC-SHA256(key, "rendermart-object-url/v1\n<key>\n<expires>\n
//! <content-disposition>")). The route answers 403 for anything that does not verify
//! (without looking at the disk, so it says nothing about which keys exist), 404 for a
//! valid link to a missing object, and streams the file otherwise.

use std::{
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use axum::{
    body::Body,
    extract::{Path as UrlPath, Query, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{
    check_expiry, Backend, ContentType, Disposition, DownloadName, Object, ObjectError, ObjectKey,
    ObjectMeta, ObjectStore, SignedUrl,
};
use crate::http::Problem;

/// Where [`router`] serves objects; signed links point here.
pub const URL_PATH: &str = "/objects";

const HEADER_PREFIX: &str = "RMOBJ1 ";
const HEADER_MAGIC: &[u8] = HEADER_PREFIX.as_bytes();
/// Magic + the longest content type + newline.
const MAX_HEADER_LEN: usize = 7 + super::key::MAX_CONTENT_TYPE_LEN + 1;
const SIGNATURE_CONTEXT: &str = "rendermart-object-url/v1";
const TMP_DIR: &str = ".tmp";
/// Temporary files older than this at start are left over from a crash.
const STALE_TMP_AGE: Duration = Duration::from_secs(60 * 60);

type HmacSha256 = Hmac<Sha256>;

/// The secret that signs local object URLs (at least 32 bytes). `Debug` does not show it.
#[derive(Clone)]
pub struct SigningKey(HmacSha256);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    pub const MIN_LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ObjectError> {
        let too_short = || {
            ObjectError::Config(format!(
                "the object URL signing key must be at least {} bytes",
                Self::MIN_LEN
            ))
        };
        if bytes.len() < Self::MIN_LEN {
            return Err(too_short());
        }
        HmacSha256::new_from_slice(bytes)
            .map(Self)
            .map_err(|_| too_short())
    }

    /// A fresh random key (for tests and one-off processes; links die with it).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(&bytes).unwrap_or_else(|_| unreachable!("32 bytes is long enough"))
    }

    /// The key kept in `path` (base64url of 32 random bytes, mode 0600), created on first
    /// use. Two processes starting at once agree on one key: the file is published with a
    /// hard link, which fails rather than replace a key another process already wrote.
    pub async fn load_or_create(path: &Path) -> Result<Self, ObjectError> {
        let path = path.to_owned();
        blocking(move || {
            if !path.exists() {
                create_key_file(&path)?;
            }
            let text = std::fs::read_to_string(&path)?;
            let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a base64url key", path.display()),
                )
            })?;
            Ok(bytes)
        })
        .await
        .and_then(|bytes| Self::from_bytes(&bytes))
    }

    fn sign(&self, key: &ObjectKey, expires: u64, disposition: Option<&str>) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(SIGNATURE_CONTEXT.as_bytes());
        for part in [
            key.as_str(),
            &expires.to_string(),
            disposition.unwrap_or(""),
        ] {
            mac.update(b"\n");
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }
}

fn create_key_file(path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let tmp = dir.join(format!(".object-url-key-{}", uuid::Uuid::now_v7()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let written = file
        .write_all(format!("{}\n", URL_SAFE_NO_PAD.encode(bytes)).as_bytes())
        .and_then(|()| file.sync_all());
    drop(file);
    let published = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()), // another process won
        other => other,
    });
    let _ = std::fs::remove_file(&tmp);
    published?;
    sync_dir(dir)
}

/// Files under a directory. Cheap to clone behind an `Arc`; every method is safe to call
/// concurrently (the file system arbitrates: the last rename wins).
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    tmp: PathBuf,
    signing_key: SigningKey,
    max_object_bytes: u64,
}

impl LocalStore {
    /// Opens (creating if needed) the store at `root`, and clears temporary files a crash
    /// left behind.
    pub async fn open(
        root: PathBuf,
        signing_key: SigningKey,
        max_object_bytes: u64,
    ) -> Result<Self, ObjectError> {
        let tmp = root.join(TMP_DIR);
        let tmp_for_sweep = tmp.clone();
        blocking(move || {
            std::fs::create_dir_all(&tmp_for_sweep)?;
            for entry in std::fs::read_dir(&tmp_for_sweep)? {
                let entry = entry?;
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_some_and(|age| age > STALE_TMP_AGE) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Ok(())
        })
        .await?;
        Ok(Self {
            root,
            tmp,
            signing_key,
            max_object_bytes,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        // Safe by construction: every segment of an ObjectKey is a plain file name.
        self.root.join(key.as_str())
    }

    /// Checks a link's parameters. `None` for anything that does not verify, with no hint
    /// of which part failed.
    fn verify(
        &self,
        key: &str,
        query: &LinkQuery,
        now: u64,
    ) -> Option<(ObjectKey, Option<Disposition>, u64)> {
        let key = ObjectKey::parse(key).ok()?;
        let expires: u64 = query.expires.as_deref()?.parse().ok()?;
        let given = URL_SAFE_NO_PAD.decode(query.sig.as_deref()?).ok()?;
        let disposition = match (query.disposition.as_deref(), query.download.as_deref()) {
            (None, None) => None,
            (Some("inline"), None) => Some(Disposition::Inline),
            (None, Some(name)) => Some(Disposition::Attachment(DownloadName::parse(name).ok()?)),
            _ => return None,
        };
        let header = disposition.as_ref().map(Disposition::header_value);
        let expected = self.signing_key.sign(&key, expires, header.as_deref());
        let signature_ok: bool = expected.as_slice().ct_eq(given.as_slice()).into();
        (signature_ok && now < expires).then_some((key, disposition, expires))
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn backend(&self) -> Backend {
        Backend::Local
    }

    async fn put(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        content_type: &ContentType,
    ) -> Result<ObjectMeta, ObjectError> {
        let size = bytes.len() as u64;
        if size > self.max_object_bytes {
            return Err(ObjectError::TooLarge {
                size,
                max: self.max_object_bytes,
            });
        }
        let (path, tmp_dir, root) = (self.path_of(key), self.tmp.clone(), self.root.clone());
        let header = format!("{HEADER_PREFIX}{content_type}\n");
        let conflict_key = key.clone();
        blocking(move || write_atomically(&root, &tmp_dir, &path, header.as_bytes(), &bytes))
            .await
            .map_err(|e| match e {
                ObjectError::Unavailable(cause) if is_path_conflict(cause.as_ref()) => {
                    ObjectError::KeyConflict(conflict_key)
                }
                other => other,
            })?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            content_type: content_type.clone(),
        })
    }

    async fn get(&self, key: &ObjectKey) -> Result<Object, ObjectError> {
        let (path, max, owned_key) = (self.path_of(key), self.max_object_bytes, key.clone());
        let (content_type, bytes) = blocking(move || {
            let Some(mut file) = open_object(&path)? else {
                return Ok(Err(ObjectError::NotFound(owned_key)));
            };
            let Some((content_type, header_len, size)) = read_header(&mut file)? else {
                return Ok(Err(ObjectError::Corrupt(owned_key)));
            };
            if size > max {
                return Ok(Err(ObjectError::TooLarge { size, max }));
            }
            file.seek(SeekFrom::Start(header_len))?;
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.take(size).read_to_end(&mut bytes)?;
            Ok(Ok((content_type, bytes)))
        })
        .await??;
        Ok(Object {
            meta: ObjectMeta {
                key: key.clone(),
                size: bytes.len() as u64,
                content_type,
            },
            bytes: Bytes::from(bytes),
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectError> {
        let (path, owned_key) = (self.path_of(key), key.clone());
        let (content_type, size) = blocking(move || {
            let Some(mut file) = open_object(&path)? else {
                return Ok(Err(ObjectError::NotFound(owned_key)));
            };
            match read_header(&mut file)? {
                Some((content_type, _, size)) => Ok(Ok((content_type, size))),
                None => Ok(Err(ObjectError::Corrupt(owned_key))),
            }
        })
        .await??;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            content_type,
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        let path = self.path_of(key);
        blocking(move || {
            if open_object(&path)?.is_none() {
                return Ok(()); // already gone (or never a file): nothing to delete
            }
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                other => other?,
            }
            sync_dir(path.parent().unwrap_or(Path::new(".")))
        })
        .await
    }

    async fn signed_url(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        disposition: Option<&Disposition>,
    ) -> Result<SignedUrl, ObjectError> {
        check_expiry(expires_in)?;
        let expires = expiry_after(unix_now_precise(), expires_in);
        let header = disposition.map(Disposition::header_value);
        let sig = URL_SAFE_NO_PAD.encode(self.signing_key.sign(key, expires, header.as_deref()));
        let disposition_param = match disposition {
            None => String::new(),
            Some(Disposition::Inline) => "&disposition=inline".to_owned(),
            // The name's alphabet leaves only the space to escape.
            Some(Disposition::Attachment(name)) => {
                format!("&download={}", name.as_str().replace(' ', "%20"))
            }
        };
        Ok(SignedUrl::new(
            format!("{URL_PATH}/{key}?expires={expires}{disposition_param}&sig={sig}"),
            UNIX_EPOCH + Duration::from_secs(expires),
        ))
    }

    async fn ping(&self) -> Result<(), ObjectError> {
        let probe = self.tmp.join(format!("ping-{}", uuid::Uuid::now_v7()));
        blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)?;
            std::fs::remove_file(&probe)
        })
        .await
    }
}

/// temp file in `<root>/.tmp` → write → fsync → rename over `path` → fsync the directories
/// from the file's up to the root (a directory created for this key must survive too).
fn write_atomically(
    root: &Path,
    tmp_dir: &Path,
    path: &Path,
    header: &[u8],
    bytes: &[u8],
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(root);
    std::fs::create_dir_all(dir)?;
    let tmp = tmp_dir.join(format!("{}.part", uuid::Uuid::now_v7()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(header)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    let mut current = Some(dir);
    while let Some(d) = current {
        sync_dir(d)?;
        if d == root {
            break;
        }
        current = d.parent().filter(|p| p.starts_with(root));
    }
    Ok(())
}

fn is_path_conflict(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            io::ErrorKind::NotADirectory
                | io::ErrorKind::IsADirectory
                | io::ErrorKind::AlreadyExists
        )
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir; // directories cannot be opened for sync there; rename is durable enough
    Ok(())
}

/// The object's file, or `None` when there is none (missing, or the key names a directory
/// or passes through a file — S3 would call all of these "no such key").
fn open_object(path: &Path) -> io::Result<Option<std::fs::File>> {
    match std::fs::File::open(path) {
        Ok(file) if file.metadata()?.is_file() => Ok(Some(file)),
        Ok(_) => Ok(None),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `(content type, header length, object size)`, or `None` if the file has no valid header.
fn read_header(file: &mut std::fs::File) -> io::Result<Option<(ContentType, u64, u64)>> {
    let file_len = file.metadata()?.len();
    let mut buf = [0u8; MAX_HEADER_LEN];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(parse_header(&buf[..filled], file_len))
}

async fn read_header_async(
    file: &mut tokio::fs::File,
) -> io::Result<Option<(ContentType, u64, u64)>> {
    let file_len = file.metadata().await?.len();
    let mut buf = [0u8; MAX_HEADER_LEN];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(parse_header(&buf[..filled], file_len))
}

fn parse_header(buf: &[u8], file_len: u64) -> Option<(ContentType, u64, u64)> {
    let rest = buf.strip_prefix(HEADER_MAGIC)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let content_type = ContentType::parse(std::str::from_utf8(&rest[..end]).ok()?).ok()?;
    let header_len = (HEADER_MAGIC.len() + end + 1) as u64;
    Some((content_type, header_len, file_len.checked_sub(header_len)?))
}

fn unix_now_precise() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The whole second a link made at `now` for `expires_in` stops working: rounded up, so it
/// works for at least `expires_in` (a link checks whole seconds: valid while the current
/// second is before this one).
fn expiry_after(now: Duration, expires_in: Duration) -> u64 {
    let end = now.saturating_add(expires_in);
    end.as_secs() + u64::from(end.subsec_nanos() > 0)
}

/// Runs file-system work off the async threads; an I/O failure is "store unavailable".
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, ObjectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ObjectError::unavailable)?
        .map_err(ObjectError::unavailable)
}

// ---------------------------------------------------------------------------------------
// The route that serves signed links
// ---------------------------------------------------------------------------------------

/// Every parameter optional, so a malformed link is our 403, not the extractor's 400.
#[derive(Debug, Default, Deserialize)]
struct LinkQuery {
    expires: Option<String>,
    sig: Option<String>,
    disposition: Option<String>,
    download: Option<String>,
}

/// `GET /objects/{*key}`: serves a signed link (see the module comment).
pub fn router(store: Arc<LocalStore>) -> Router {
    Router::new()
        .route(&format!("{URL_PATH}/{{*key}}"), get(serve_signed))
        .with_state(store)
}

fn refused() -> Response {
    Problem::new(
        StatusCode::FORBIDDEN,
        "invalid-link",
        "Invalid or expired link",
    )
    .detail("This link is not valid, or it has expired. Ask for a new one.")
    .into_response()
}

async fn serve_signed(
    State(store): State<Arc<LocalStore>>,
    key: Result<UrlPath<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (Ok(UrlPath(key)), Ok(Query(query))) = (key, query) else {
        return refused();
    };
    let now = unix_now_precise();
    let Some((key, disposition, expires)) = store.verify(&key, &query, now.as_secs()) else {
        return refused();
    };
    let mut file = match tokio::fs::File::open(store.path_of(&key)).await {
        Ok(file) => file,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Problem::not_found("There is no such object.").into_response();
        }
        Err(e) => return Problem::from(ObjectError::unavailable(e)).into_response(),
    };
    let header = match file.metadata().await {
        Ok(m) if m.is_file() => read_header_async(&mut file).await,
        Ok(_) => return Problem::not_found("There is no such object.").into_response(),
        Err(e) => Err(e),
    };
    let (content_type, header_len, size) = match header {
        Ok(Some(found)) => found,
        Ok(None) => return Problem::from(ObjectError::Corrupt(key)).into_response(),
        Err(e) => return Problem::from(ObjectError::unavailable(e)).into_response(),
    };
    if let Err(e) = file.seek(SeekFrom::Start(header_len)).await {
        return Problem::from(ObjectError::unavailable(e)).into_response();
    }
    // Streamed in 64 KiB reads, never held whole; `take` pins it to the size announced.
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(size), 64 * 1024));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    let static_headers = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Whatever was stored, it never runs as a page on our origin.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in static_headers {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(value) = HeaderValue::from_str(content_type.as_str()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::CACHE_CONTROL,
        // Whole seconds left, rounded down: a cache never keeps it past the link's end.
        HeaderValue::from_str(&format!(
            "private, max-age={}",
            Duration::from_secs(expires).saturating_sub(now).as_secs()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("private, no-store")),
    );
    if let Some(disposition) = disposition {
        if let Ok(value) = HeaderValue::from_str(&disposition.header_value()) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips_and_junk_is_not_a_header() {
        let header = b"RMOBJ1 image/png\nPNGDATA";
        let parsed = parse_header(header, header.len() as u64);
        assert_eq!(parsed, Some((ContentType::png(), 17, 7)));
        for junk in [
            &b""[..],
            b"RMOBJ1 image/png",
            b"RMOBJ2 image/png\n",
            b"\x89PNG\r\n",
            b"RMOBJ1 not a type\n",
        ] {
            assert_eq!(parse_header(junk, junk.len() as u64), None, "{junk:?}");
        }
    }

    #[test]
    fn a_signature_covers_key_expiry_and_disposition() {
        let signing = SigningKey::random();
        let key = ObjectKey::parse("images/a.png").expect("key");
        let other = ObjectKey::parse("images/b.png").expect("key");
        let base = signing.sign(&key, 100, None);
        assert_eq!(base, signing.sign(&key, 100, None));
        assert_ne!(base, signing.sign(&other, 100, None));
        assert_ne!(base, signing.sign(&key, 101, None));
        assert_ne!(base, signing.sign(&key, 100, Some("inline")));
        assert_ne!(base, SigningKey::random().sign(&key, 100, None));
    }

    #[test]
    fn a_link_works_for_at_least_as_long_as_asked() {
        let second = Duration::from_secs(1);
        for made_at in [
            Duration::from_secs(10),
            Duration::from_millis(10_001),
            Duration::from_millis(10_950),
            Duration::from_nanos(10_999_999_999),
        ] {
            let expires = expiry_after(made_at, second);
            // The check (`now < expires`, in whole seconds) still passes a second later.
            let last_good = (made_at + second - Duration::from_nanos(1)).as_secs();
            assert!(
                last_good < expires,
                "made at {made_at:?}: expires {expires}"
            );
            // And stops within a second after that.
            assert!(
                expires <= (made_at + 2 * second).as_secs(),
                "made at {made_at:?}"
            );
        }
    }

    #[test]
    fn a_short_signing_key_is_refused() {
        assert!(SigningKey::from_bytes(&[7u8; 31]).is_err());
        assert!(SigningKey::from_bytes(&[7u8; 32]).is_ok());
        assert_eq!(format!("{:?}", SigningKey::random()), "SigningKey(***)");
    }

    #[tokio::test]
    async fn the_signing_key_file_is_created_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/object-url.key");
        let first = SigningKey::load_or_create(&path).await.expect("created");
        let again = SigningKey::load_or_create(&path).await.expect("loaded");
        let key = ObjectKey::parse("a").expect("key");
        assert_eq!(first.sign(&key, 1, None), again.sign(&key, 1, None));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short\n").expect("overwrite");
        assert!(SigningKey::load_or_create(&path).await.is_err());
    }
}
