//! Identity's rules, free of HTTP and SQL: what a valid email, display name, password and
//! token name are. Each type's constructor parses and rejects; holding one means it is valid.

use std::fmt;

pub use rendermart_identity_api::{Invalid, SessionId, TokenId, UserId};

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid::new(field, message)
}

/// An email address, normalised: trimmed and lower-cased, so one mailbox is one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let email = raw.trim().to_lowercase();
        let err = |m: &str| Err(invalid("email", m));
        if email.is_empty() {
            return err("is required");
        }
        if email.len() > Self::MAX_LEN {
            return err("is longer than 254 characters");
        }
        let Some((local, domain)) = email.split_once('@') else {
            return err("must look like name@example.com");
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if local.is_empty()
            || local.len() > 64
            || !domain_ok
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
            || local.contains(['<', '>', '(', ')', ',', ';', ':', '\\', '"', '[', ']'])
        {
            return err("must look like name@example.com");
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name shown to other people: trimmed, 1 to 60 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 60;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        // Control characters are refused before trimming, so "\tAda" is not quietly "Ada".
        if raw.chars().any(char::is_control) {
            return Err(invalid(
                "display_name",
                "must not contain control characters",
            ));
        }
        let name = raw.trim();
        if name.is_empty() {
            return Err(invalid("display_name", "is required"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(invalid("display_name", "is longer than 60 characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: at least 10 characters, at most 1024 bytes (hashing cost is bounded).
/// It never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 10;
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(invalid("password", "must be at least 10 characters"));
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(invalid("password", "must be at most 1024 bytes"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A label for an API token, so its owner can tell tokens apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim();
        if name.is_empty() && !raw.chars().any(char::is_control) {
            return Err(invalid("name", "is required"));
        }
        if name.chars().count() > 60 || raw.chars().any(char::is_control) {
            return Err(invalid(
                "name",
                "must be at most 60 characters, without control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a b@example.com",
            "alice@exa..mple.com",
            "alice@.example.com",
            "<a>@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(300))).is_err());
    }

    #[test]
    fn passwords_need_ten_characters_and_never_print() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("123456789").is_err());
        let p = Password::parse("correct horse").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
        assert!(Password::parse(&"x".repeat(2000)).is_err());
        // Counted in characters, not bytes.
        assert!(Password::parse("ééééééééé").is_err());
        assert!(Password::parse("éééééééééé").is_ok());
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"n".repeat(61)).is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        assert!(
            DisplayName::parse("\tAda").is_err(),
            "control characters are refused, not trimmed away"
        );
        assert!(TokenName::parse("\u{c}c").is_err());
        assert!(TokenName::parse(" laptop ").is_ok());
    }

    proptest! {
        #[test]
        fn a_parsed_email_parses_to_itself(local in "[a-z0-9._%+-]{1,20}", domain in "[a-z0-9-]{1,20}\\.[a-z]{2,6}") {
            let email = Email::parse(&format!("{local}@{domain}")).unwrap();
            prop_assert_eq!(Email::parse(email.as_str()).unwrap(), email);
        }

        #[test]
        fn email_parsing_never_panics(s in ".{0,300}") {
            let _ = Email::parse(&s);
        }
    }
}
