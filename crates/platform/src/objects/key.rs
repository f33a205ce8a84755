//! The names objects are stored under, and the content types they are served with.
//!
//! An [`ObjectKey`] is parsed, never checked later: holding one proves it is a relative
//! path of safe segments that cannot leave the store's root (no `..`, no absolute path, no
//! backslash, no control character, no empty or hidden segment), so a backend can join it
//! to a directory or put it in a URL as it is. The character set is deliberately narrow
//! (`A–Z a–z 0–9 . _ -` and `/` between segments): such a key needs no escaping on any
//! file system, in a URL path, or in an S3 signature's canonical request.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Longest key accepted, in bytes (S3 allows 1024; our keys are `images/<uuid>.png`).
pub const MAX_KEY_LEN: usize = 512;
/// Longest segment, in bytes: a file name on every common file system.
pub const MAX_SEGMENT_LEN: usize = 255;

/// Why a string is not an object key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("an object key cannot be empty")]
    Empty,
    #[error("an object key is at most {MAX_KEY_LEN} bytes")]
    TooLong,
    #[error("an object key is relative: it cannot start with `/`")]
    Absolute,
    #[error("an object key cannot contain a backslash")]
    Backslash,
    #[error("an object key cannot contain control characters")]
    ControlCharacter,
    #[error("an object key cannot have an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("an object key cannot have a `.` or `..` segment")]
    DotSegment,
    #[error("an object key segment cannot start with `.`")]
    HiddenSegment,
    #[error("an object key segment is at most {MAX_SEGMENT_LEN} bytes")]
    SegmentTooLong,
    #[error("an object key may only contain A-Z, a-z, 0-9, `.`, `_`, `-` and `/`, not {0:?}")]
    Character(char),
}

/// A key that can never escape the store: see the module comment for the rules.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        if key.starts_with('/') {
            return Err(KeyError::Absolute);
        }
        // The specific refusals first, so the message names the actual problem.
        if key.contains('\\') {
            return Err(KeyError::Backslash);
        }
        if key.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter);
        }
        for segment in key.split('/') {
            if segment.is_empty() {
                return Err(KeyError::EmptySegment);
            }
            if segment == "." || segment == ".." {
                return Err(KeyError::DotSegment);
            }
            if segment.starts_with('.') {
                // Hidden names are the store's own (temporary files, keys): never an object.
                return Err(KeyError::HiddenSegment);
            }
            if segment.len() > MAX_SEGMENT_LEN {
                return Err(KeyError::SegmentTooLong);
            }
            if let Some(c) = segment
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(KeyError::Character(c));
            }
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment (`<uuid>.png` for `images/<uuid>.png`).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The segments, in order; each is a safe file name.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ObjectKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<ObjectKey> for String {
    fn from(key: ObjectKey) -> Self {
        key.0
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Longest content type accepted, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 127;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a content type (`type/subtype`, optional `; name=value` parameters, RFC 9110 token characters, at most {MAX_CONTENT_TYPE_LEN} bytes): {0:?}")]
pub struct ContentTypeError(pub String);

/// A media type such as `image/png`: lower-cased `type/subtype` and optional
/// `; name=value` parameters made only of RFC 9110 token characters, so it is always a
/// valid header value and round-trips through every backend unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentType(String);

impl ContentType {
    pub fn png() -> Self {
        Self("image/png".into())
    }
    pub fn jpeg() -> Self {
        Self("image/jpeg".into())
    }
    pub fn webp() -> Self {
        Self("image/webp".into())
    }
    /// What a stored object without a known type is served as.
    pub fn octet_stream() -> Self {
        Self("application/octet-stream".into())
    }

    pub fn parse(value: &str) -> Result<Self, ContentTypeError> {
        let bad = || ContentTypeError(value.chars().take(64).collect());
        if value.is_empty() || value.len() > MAX_CONTENT_TYPE_LEN {
            return Err(bad());
        }
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or_default().trim();
        let (kind, subtype) = essence.split_once('/').ok_or_else(bad)?;
        if !is_token(kind) || !is_token(subtype) {
            return Err(bad());
        }
        let mut out = format!(
            "{}/{}",
            kind.to_ascii_lowercase(),
            subtype.to_ascii_lowercase()
        );
        for parameter in parts {
            let (name, val) = parameter.trim().split_once('=').ok_or_else(bad)?;
            if !is_token(name) || !is_token(val) {
                return Err(bad());
            }
            out.push_str("; ");
            out.push_str(&name.to_ascii_lowercase());
            out.push('=');
            out.push_str(val);
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 9110 `token`: visible ASCII except delimiters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ContentType {
    type Err = ContentTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ContentType {
    type Error = ContentTypeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ContentType> for String {
    fn from(ct: ContentType) -> Self {
        ct.0
    }
}

/// Longest download name accepted, in bytes.
pub const MAX_DOWNLOAD_NAME_LEN: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a download name is 1-{MAX_DOWNLOAD_NAME_LEN} characters of A-Z, a-z, 0-9, space, `.`, `_` and `-`, not starting with `.` or a space")]
pub struct DownloadNameError;

/// The file name a browser saves an attachment as. Its narrow alphabet means it goes into
/// `Content-Disposition: attachment; filename="…"` without any quoting rules to get wrong.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DownloadName(String);

impl DownloadName {
    pub fn parse(name: &str) -> Result<Self, DownloadNameError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_DOWNLOAD_NAME_LEN
            && !name.starts_with(['.', ' '])
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(DownloadNameError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a browser should present an object fetched through a signed URL. It is part of
/// what is signed, so a link made for viewing cannot be turned into a download (or back).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    Inline,
    Attachment(DownloadName),
}

impl Disposition {
    /// The `Content-Disposition` header value.
    pub fn header_value(&self) -> String {
        match self {
            Self::Inline => "inline".to_owned(),
            Self::Attachment(name) => format!("attachment; filename=\"{}\"", name.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_studio_writes_are_accepted() {
        for key in [
            "images/0196b1f2-7d4e-7c1a-9d2b-3f4a5b6c7d8e.png",
            "thumbs/0196b1f2-7d4e-7c1a-9d2b-3f4a5b6c7d8e.webp",
            "a",
            "a/b/c/d.tar.gz",
            "UPPER_lower-09.x",
        ] {
            let parsed = ObjectKey::parse(key).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(parsed.as_str(), key);
        }
        assert_eq!(
            ObjectKey::parse("images/x.png").map(|k| k.file_name().to_owned()),
            Ok("x.png".to_owned())
        );
    }

    #[test]
    fn a_key_that_could_escape_the_store_is_refused_with_its_reason() {
        let long_segment = "a".repeat(MAX_SEGMENT_LEN + 1);
        let long_key = "a/".repeat(MAX_KEY_LEN / 2) + "b";
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::Empty),
            ("/etc/passwd", KeyError::Absolute),
            ("../secret", KeyError::DotSegment),
            ("images/../../etc/passwd", KeyError::DotSegment),
            ("images/./x.png", KeyError::DotSegment),
            ("..", KeyError::DotSegment),
            ("images\\..\\x.png", KeyError::Backslash),
            ("C:\\x", KeyError::Backslash),
            ("images/x\0.png", KeyError::ControlCharacter),
            ("images/x\n.png", KeyError::ControlCharacter),
            ("images/\u{7f}", KeyError::ControlCharacter),
            ("images//x.png", KeyError::EmptySegment),
            ("images/", KeyError::EmptySegment),
            ("images/.signing-key", KeyError::HiddenSegment),
            (".tmp/abc", KeyError::HiddenSegment),
            (&long_segment, KeyError::SegmentTooLong),
            ("images/x y.png", KeyError::Character(' ')),
            ("images/%2e%2e", KeyError::Character('%')),
            ("c:x", KeyError::Character(':')),
            ("images/é.png", KeyError::Character('é')),
            ("images/x?.png", KeyError::Character('?')),
        ];
        for (input, expected) in cases {
            assert_eq!(
                ObjectKey::parse(*input).as_ref(),
                Err(expected),
                "{input:?}"
            );
        }
        assert!(long_key.len() > MAX_KEY_LEN);
        assert_eq!(ObjectKey::parse(long_key), Err(KeyError::TooLong));
        // Longest segments, longest key: accepted.
        let at_limit = format!(
            "{}/{}/c",
            "a".repeat(MAX_SEGMENT_LEN),
            "b".repeat(MAX_KEY_LEN - MAX_SEGMENT_LEN - 3)
        );
        assert_eq!(at_limit.len(), MAX_KEY_LEN);
        assert!(ObjectKey::parse(at_limit).is_ok());
    }

    #[test]
    fn a_key_from_json_is_parsed_too() {
        assert!(serde_json::from_str::<ObjectKey>("\"images/../x\"").is_err());
        let key: ObjectKey = serde_json::from_str("\"images/x.png\"").expect("valid key");
        assert_eq!(
            serde_json::to_string(&key).ok(),
            Some("\"images/x.png\"".into())
        );
    }

    #[test]
    fn content_types_are_normalised_and_junk_is_refused() {
        assert_eq!(
            ContentType::parse("Image/PNG").map(|c| c.to_string()),
            Ok("image/png".into())
        );
        assert_eq!(
            ContentType::parse("text/plain;charset=utf-8").map(|c| c.to_string()),
            Ok("text/plain; charset=utf-8".into())
        );
        for bad in [
            "",
            "image",
            "image/",
            "/png",
            "image/png\r\nX-Evil: 1",
            "image/p ng",
            "text/plain; charset",
            "text/plain; charset=\"utf-8\"",
            &format!("image/{}", "x".repeat(130)),
        ] {
            assert!(ContentType::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn download_names_cannot_break_out_of_the_header() {
        assert!(DownloadName::parse("dusk over the ocean.png").is_ok());
        for bad in [
            "", ".hidden", " x", "a\"b", "a;b", "a\r\nb", "../x", "a/b", "é",
        ] {
            assert!(DownloadName::parse(bad).is_err(), "{bad:?}");
        }
        let name = DownloadName::parse("x.png").expect("valid");
        assert_eq!(
            Disposition::Attachment(name).header_value(),
            "attachment; filename=\"x.png\""
        );
    }
}
