//! The distributed object store: an S3 bucket on AWS or any S3-compatible server, reached
//! through the `object_store` crate, with SigV4 pre-signed GET URLs the browser takes
//! straight to the bucket.
//!
//! The one thing to know: pre-signing is ours ([`presign`], AWS SigV4 query signing,
//! checked against AWS's published example), because `object_store`'s signer cannot add
//! `response-content-disposition` to what it signs. Everything else — requests, retries,
//! the credential chain — is `object_store`'s, and the URL we sign is the one it uses
//! (a unit test holds the two together).

use std::{
    fmt,
    time::{Duration, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use object_store::{
    aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential},
    path::Path as StorePath,
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientConfigKey, GetOptions,
    ObjectStore as _, ObjectStoreExt as _, PutOptions, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use url::Url;

use super::{
    check_expiry, Backend, ContentType, Disposition, Object, ObjectError, ObjectKey, ObjectMeta,
    ObjectStore, S3Config, SignedUrl, MAX_SIGNED_URL_TTL,
};

/// A bucket, and the URL its objects live under.
pub struct S3Store {
    inner: AmazonS3,
    /// `https://s3.<region>.amazonaws.com/<bucket>`, `https://<bucket>.s3.<region>…`, or
    /// `<endpoint>/<bucket>`: what `object_store` puts before every key.
    bucket_url: Url,
    region: String,
    max_object_bytes: u64,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket_url", &self.bucket_url.as_str())
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the client from `config` over the standard AWS environment (`AWS_*`
    /// variables fill what the configuration leaves unset, credentials included), and
    /// creates the bucket when `create_bucket` is set.
    pub async fn open(config: &S3Config, max_object_bytes: u64) -> Result<Self, ObjectError> {
        let store = Self::build(config, max_object_bytes)?;
        if config.create_bucket {
            store.create_bucket_if_missing().await?;
        }
        Ok(store)
    }

    fn build(config: &S3Config, max_object_bytes: u64) -> Result<Self, ObjectError> {
        if config.bucket.is_empty() {
            return Err(ObjectError::Config("objects.s3.bucket is required".into()));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            // Set key by key, so client settings from `AWS_*` variables (a proxy) survive.
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "30s")
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            )
            // Bounded: a request that keeps failing fails the caller within 30 s.
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            });
        if let Some(endpoint) = &config.endpoint {
            Url::parse(endpoint).map_err(|e| {
                ObjectError::Config(format!("objects.s3.endpoint is not a URL: {e}"))
            })?;
            builder = builder.with_endpoint(endpoint);
            if endpoint.starts_with("http://") {
                // Written out in the configuration, so meant: a server on a private network.
                builder = builder.with_allow_http(true);
            }
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret.expose());
            }
            (None, None) => {} // the standard chain
            _ => {
                return Err(ObjectError::Config(
                    "objects.s3: set both access_key_id and secret_access_key, or neither".into(),
                ))
            }
        }
        let bucket_url = bucket_url(&builder)?;
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".into());
        let inner = builder
            .build()
            .map_err(|e| ObjectError::Config(format!("objects.s3: {e}")))?;
        Ok(Self {
            inner,
            bucket_url,
            region,
            max_object_bytes,
        })
    }

    /// Creates the bucket unless it exists already. For tests and development servers:
    /// production buckets are made by infrastructure code, so `open` calls this only when
    /// `create_bucket` is configured.
    pub async fn create_bucket_if_missing(&self) -> Result<(), ObjectError> {
        let credential = self.credential().await?;
        let url = presign(
            &credential,
            &self.region,
            "PUT",
            &self.bucket_url,
            &[],
            Duration::from_secs(60),
            OffsetDateTime::now_utc(),
        );
        // us-east-1 is the one region that refuses an explicit location constraint.
        let body = if self.region == "us-east-1" {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            )
        };
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(ObjectError::unavailable)?
            .put(url)
            // S3 wants a length even for the empty body; reqwest omits it then.
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .send()
            .await
            .map_err(ObjectError::unavailable)?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() || text.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        Err(ObjectError::unavailable(format!(
            "creating bucket {}: HTTP {status}: {}",
            self.bucket_url,
            text.chars().take(300).collect::<String>()
        )))
    }

    async fn credential(&self) -> Result<std::sync::Arc<AwsCredential>, ObjectError> {
        self.inner
            .credentials()
            .get_credential()
            .await
            .map_err(ObjectError::unavailable)
    }

    fn object_url(&self, key: &ObjectKey) -> Url {
        let mut url = self.bucket_url.clone();
        // Key characters are all unreserved (see ObjectKey), so the path needs no escaping.
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{key}"));
        url
    }
}

/// The URL `object_store` puts before every key, from the builder's effective settings
/// (configuration over `AWS_*` variables); mirrors `AmazonS3Builder::build`.
fn bucket_url(builder: &AmazonS3Builder) -> Result<Url, ObjectError> {
    let get = |key| builder.get_config_value(&key);
    let bucket = get(AmazonS3ConfigKey::Bucket).unwrap_or_default();
    let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
    let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let url = match (get(AmazonS3ConfigKey::Endpoint), virtual_hosted) {
        // As in object_store: a virtual-hosted custom endpoint already names the bucket.
        (Some(endpoint), true) => endpoint,
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    };
    Url::parse(&url).map_err(|e| ObjectError::Config(format!("objects.s3: bucket URL {url}: {e}")))
}

fn store_path(key: &ObjectKey) -> StorePath {
    StorePath::from(key.as_str())
}

fn map_error(key: &ObjectKey, e: object_store::Error) -> ObjectError {
    match e {
        object_store::Error::NotFound { .. } => ObjectError::NotFound(key.clone()),
        other => ObjectError::unavailable(other),
    }
}

fn content_type_of(attributes: &Attributes) -> ContentType {
    attributes
        .get(&Attribute::ContentType)
        .and_then(|v| ContentType::parse(v.as_ref()).ok())
        .unwrap_or_else(ContentType::octet_stream)
}

#[async_trait]
impl ObjectStore for S3Store {
    fn backend(&self) -> Backend {
        Backend::S3
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
        let attributes = Attributes::from_iter([(
            Attribute::ContentType,
            AttributeValue::from(content_type.to_string()),
        )]);
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        self.inner
            .put_opts(&store_path(key), PutPayload::from(bytes), options)
            .await
            .map_err(|e| map_error(key, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            content_type: content_type.clone(),
        })
    }

    async fn get(&self, key: &ObjectKey) -> Result<Object, ObjectError> {
        let result = self
            .inner
            .get_opts(&store_path(key), GetOptions::default())
            .await
            .map_err(|e| map_error(key, e))?;
        let size = result.meta.size;
        if size > self.max_object_bytes {
            return Err(ObjectError::TooLarge {
                size,
                max: self.max_object_bytes,
            });
        }
        let content_type = content_type_of(&result.attributes);
        let bytes = result.bytes().await.map_err(|e| map_error(key, e))?;
        Ok(Object {
            meta: ObjectMeta {
                key: key.clone(),
                size: bytes.len() as u64,
                content_type,
            },
            bytes,
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectError> {
        // `head` would drop the content type; a HEAD through `get_opts` keeps it.
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let result = self
            .inner
            .get_opts(&store_path(key), options)
            .await
            .map_err(|e| map_error(key, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: result.meta.size,
            content_type: content_type_of(&result.attributes),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        match self.inner.delete(&store_path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(ObjectError::unavailable(e)),
        }
    }

    async fn signed_url(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        disposition: Option<&Disposition>,
    ) -> Result<SignedUrl, ObjectError> {
        check_expiry(expires_in)?;
        let credential = self.credential().await?;
        let now = OffsetDateTime::now_utc();
        // X-Amz-Date has whole seconds: round the lifetime up so that the link works for at
        // least `expires_in` (S3 refuses more than the maximum, so never past it).
        let lifetime = Duration::from_secs(expires_in.as_secs() + u64::from(now.nanosecond() > 0))
            .min(MAX_SIGNED_URL_TTL);
        let header = disposition.map(Disposition::header_value);
        let extra: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| ("response-content-disposition", h))
            .into_iter()
            .collect();
        let url = presign(
            &credential,
            &self.region,
            "GET",
            &self.object_url(key),
            &extra,
            lifetime,
            now,
        );
        let signed_at =
            UNIX_EPOCH + Duration::from_secs(u64::try_from(now.unix_timestamp()).unwrap_or(0));
        Ok(SignedUrl::new(url, signed_at + lifetime))
    }

    async fn ping(&self) -> Result<(), ObjectError> {
        // A listing, unlike a HEAD, tells a missing bucket from a missing key.
        self.inner
            .list_with_delimiter(Some(&StorePath::from("rendermart-readyz")))
            .await
            .map(|_| ())
            .map_err(ObjectError::unavailable)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// AWS SigV4 query-string signing ("presigned URL") of `method url` for `expires_in`,
/// signed at `now`, with `extra` query parameters (such as `response-content-disposition`)
/// covered by the signature. Only the `host` header is signed and the payload is
/// `UNSIGNED-PAYLOAD`, as S3 expects for a link.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>
pub fn presign(
    credential: &AwsCredential,
    region: &str,
    method: &str,
    url: &Url,
    extra: &[(&str, &str)],
    expires_in: Duration,
    now: OffsetDateTime,
) -> String {
    let date = format!(
        "{:04}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let amz_date = format!(
        "{date}T{:02}{:02}{:02}Z",
        now.hour(),
        now.minute(),
        now.second()
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let mut params: Vec<(String, String)> = vec![
        ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
        (
            "X-Amz-Credential".into(),
            format!("{}/{scope}", credential.key_id),
        ),
        ("X-Amz-Date".into(), amz_date.clone()),
        ("X-Amz-Expires".into(), expires_in.as_secs().to_string()),
        ("X-Amz-SignedHeaders".into(), "host".into()),
    ];
    if let Some(token) = &credential.token {
        params.push(("X-Amz-Security-Token".into(), token.clone()));
    }
    params.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    encoded.sort();
    let canonical_query = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => String::new(),
    };
    let canonical_request = format!(
        "{method}\n{}\n{canonical_query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD",
        url.path()
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut signing_key = hmac(
        format!("AWS4{}", credential.secret_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, "s3", "aws4_request"] {
        signing_key = hmac(&signing_key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&signing_key, string_to_sign.as_bytes()));

    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    format!("{base}?{canonical_query}&X-Amz-Signature={signature}")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SigV4's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX` (upper-case hex).
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use object_store::signer::Signer as _;
    use time::macros::datetime;

    use super::*;

    fn example_credential(token: Option<&str>) -> AwsCredential {
        AwsCredential {
            key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            token: token.map(Into::into),
        }
    }

    /// AWS's own worked example of a pre-signed GET ("Authenticating Requests: Using Query
    /// Parameters", Amazon S3 API reference): same inputs, same signature.
    #[test]
    fn a_presigned_url_matches_the_aws_documented_example() {
        let url = Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").expect("url");
        let signed = presign(
            &example_credential(None),
            "us-east-1",
            "GET",
            &url,
            &[],
            Duration::from_secs(86400),
            datetime!(2013-05-24 00:00:00 UTC),
        );
        assert_eq!(
            signed,
            "https://examplebucket.s3.amazonaws.com/test.txt\
             ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    /// Expected value computed by botocore 1.44 (`S3SigV4QueryAuth`) for the same request
    /// on a path-style endpoint with a port, a session token and a download disposition.
    #[test]
    fn a_presigned_url_signs_the_disposition_token_and_port_like_botocore() {
        let url = Url::parse("http://127.0.0.1:5000/media/images/x.png").expect("url");
        let signed = presign(
            &example_credential(Some("session/token+=")),
            "eu-west-1",
            "GET",
            &url,
            &[(
                "response-content-disposition",
                "attachment; filename=\"x y.png\"",
            )],
            Duration::from_secs(600),
            datetime!(2026-01-02 03:04:05 UTC),
        );
        // botocore orders parameters differently; the set and the signature must agree.
        let botocore = "http://127.0.0.1:5000/media/images/x.png\
            ?response-content-disposition=attachment%3B%20filename%3D%22x%20y.png%22\
            &X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260102%2Feu-west-1%2Fs3%2Faws4_request\
            &X-Amz-Date=20260102T030405Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host\
            &X-Amz-Security-Token=session%2Ftoken%2B%3D\
            &X-Amz-Signature=84d21bbea7090730d887eab68d8ffe1c97826063b8214eb915e1ca231483e50f";
        let pairs = |u: &str| {
            let url = Url::parse(u).expect("url");
            let mut pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            pairs.sort();
            (url[..url::Position::AfterPath].to_owned(), pairs)
        };
        assert_eq!(pairs(&signed), pairs(botocore));
    }

    fn store(endpoint: Option<&str>, path_style: bool) -> S3Store {
        let config = S3Config {
            bucket: "media".into(),
            region: "eu-west-1".into(),
            endpoint: endpoint.map(Into::into),
            path_style,
            access_key_id: Some("AKID".into()),
            secret_access_key: Some(super::super::Secret::new("secret")),
            create_bucket: false,
        };
        S3Store::build(&config, 1024).expect("valid config")
    }

    /// Our URL must be the one object_store sends requests to, in every addressing style.
    #[tokio::test]
    async fn the_signed_url_points_where_object_store_reads_and_writes() {
        let key = ObjectKey::parse("images/a-b_c.png").expect("key");
        for (endpoint, path_style) in [
            (None, true),
            (None, false),
            (Some("http://127.0.0.1:5000"), true),
            (Some("https://media.minio.example:9000"), false),
        ] {
            let store = store(endpoint, path_style);
            let theirs = store
                .inner
                .signed_url(
                    http::Method::GET,
                    &store_path(&key),
                    Duration::from_secs(60),
                )
                .await
                .expect("object_store signs");
            let ours = store
                .signed_url(&key, Duration::from_secs(60), None)
                .await
                .expect("we sign");
            let (theirs, ours) = (theirs.as_str(), ours.as_str());
            assert_eq!(
                theirs.split('?').next(),
                ours.split('?').next(),
                "{endpoint:?} path_style={path_style}"
            );
        }
    }

    #[test]
    fn a_half_configured_s3_section_is_refused() {
        let mut config = S3Config {
            bucket: "media".into(),
            access_key_id: Some("AKID".into()),
            ..S3Config::default()
        };
        assert!(matches!(
            S3Store::build(&config, 1),
            Err(ObjectError::Config(_))
        ));
        config.access_key_id = None;
        config.bucket.clear();
        assert!(matches!(
            S3Store::build(&config, 1),
            Err(ObjectError::Config(_))
        ));
        config.bucket = "media".into();
        config.endpoint = Some("not a url".into());
        assert!(matches!(
            S3Store::build(&config, 1),
            Err(ObjectError::Config(_))
        ));
    }

    #[test]
    fn uri_encoding_escapes_all_but_unreserved() {
        assert_eq!(uri_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(uri_encode("a b/\"=;+"), "a%20b%2F%22%3D%3B%2B");
    }
}
