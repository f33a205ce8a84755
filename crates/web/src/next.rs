//! Where to send someone after they log in: a path on this site, never another site.
//!
//! `next` comes from a URL anyone can craft, so it is an open redirect unless it is
//! parsed: it must start with one `/` and be followed by anything but a second `/` or a
//! `\` (browsers read `//evil.example` and `/\evil.example` as another host), and it must
//! not contain control characters or whitespace (browsers drop tabs and newlines, which
//! would turn `/\t/evil.example` into `//evil.example`).

/// A path on this site, safe to redirect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPath(String);

impl LocalPath {
    const MAX_LEN: usize = 2048;

    /// `None` for anything that is not a plain local path.
    pub fn parse(raw: &str) -> Option<Self> {
        let safe = raw.len() <= Self::MAX_LEN
            && raw.starts_with('/')
            && !raw.starts_with("//")
            && !raw.contains('\\')
            && !raw.chars().any(|c| c.is_control() || c.is_whitespace());
        safe.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_kept() {
        for ok in ["/", "/account", "/account?tab=tokens#new", "/a/b%2F/c"] {
            assert_eq!(LocalPath::parse(ok).map(|p| p.0), Some(ok.to_owned()));
        }
    }

    #[test]
    fn anything_that_could_leave_the_site_is_refused() {
        for bad in [
            "",
            "account",
            "https://evil.example",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            " /account",
            "javascript:alert(1)",
        ] {
            assert_eq!(LocalPath::parse(bad), None, "{bad:?} accepted");
        }
        assert_eq!(LocalPath::parse(&format!("/{}", "a".repeat(3000))), None);
    }
}
