//! Identity's rules, free of HTTP and SQL: what a valid email, display name, password and
//! token name are. Each type's constructor parses and rejects; holding one means it is valid.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_security::{confusable_detection::skeleton, MixedScript};

pub use rendermart_identity_api::{Invalid, SessionId, TokenId, UserId};

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid::new(field, message)
}

/// Characters that show nothing or change the direction of the text around them: zero-width
/// spaces and joiners, soft hyphens, variation selectors, tags, bidirectional embeddings,
/// overrides and isolates, and the other default-ignorable code points. Two strings that
/// differ only by these look the same, so names and emails refuse them.
pub fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// An email address, normalised so that one mailbox is one account: Unicode NFKC (a
/// composed and a decomposed `é` are one letter, full-width letters are plain ones),
/// trimmed and lower-cased. Invisible and direction-changing characters are refused, and
/// so is a part that mixes alphabets (a Cyrillic `а` among Latin letters). Two emails that
/// still look alike share a [`lookalike_key`](Email::lookalike_key), which is unique.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let err = |m: &str| Err(invalid("email", m));
        if raw.chars().any(is_invisible_or_bidi) {
            return err("must not contain invisible or direction-changing characters");
        }
        let email = raw.nfkc().collect::<String>().trim().to_lowercase();
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
        if !local.is_single_script() || !domain.is_single_script() {
            return err("must not mix alphabets (such as Latin and Cyrillic) in one part");
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Unicode confusable skeleton (UTS #39) of the email: the same for emails that
    /// look the same (`paypal` in Latin and in Cyrillic letters), so a unique index on it
    /// keeps look-alike accounts out.
    pub fn lookalike_key(&self) -> String {
        skeleton(&self.0).collect::<String>().to_lowercase()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name shown to other people: NFC, trimmed, 1 to 60 characters, no control,
/// invisible or direction-changing characters.
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
        if raw.chars().any(is_invisible_or_bidi) {
            return Err(invalid(
                "display_name",
                "must not contain invisible or direction-changing characters",
            ));
        }
        let name: String = raw.nfc().collect();
        let name = name.trim();
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

    /// The look-alikes an outside probe registered as separate accounts.
    #[test]
    fn emails_that_look_the_same_are_one_account_or_refused() {
        let plain = Email::parse("jose@example.com").unwrap();
        let composed = Email::parse("jos\u{e9}@example.com").unwrap();
        let decomposed = Email::parse("jose\u{301}@example.com").unwrap();
        assert_eq!(composed, decomposed, "NFC/NFKC: one é");
        assert_ne!(composed, plain);
        // Full-width letters are the plain letters.
        assert_eq!(
            Email::parse("\u{ff4a}\u{ff4f}\u{ff53}\u{ff45}@example.com").unwrap(),
            plain
        );
        // A Cyrillic а among Latin letters, invisible and direction characters: refused,
        // naming the field.
        for bad in [
            "p\u{430}ypal@example.com",
            "jo\u{200b}se@example.com",
            "jose\u{202e}@example.com",
            "jose@exa\u{2066}mple.com",
            "\u{feff}jose@example.com",
        ] {
            let e = Email::parse(bad).expect_err(bad);
            assert_eq!(e.field, "email", "{bad:?}");
        }
        // Wholly Cyrillic letters that look Latin: allowed as a mailbox, but with the same
        // look-alike key as the Latin one, so the unique index refuses the second.
        let cyrillic =
            Email::parse("\u{440}\u{430}\u{443}\u{440}\u{430}\u{4cf}@example.com").unwrap();
        let latin = Email::parse("paypal@example.com").unwrap();
        assert_ne!(cyrillic, latin);
        assert_eq!(cyrillic.lookalike_key(), latin.lookalike_key());
        assert_eq!(
            Email::parse("Paypal@Example.com").unwrap().lookalike_key(),
            latin.lookalike_key()
        );
        assert_ne!(
            Email::parse("alice@example.com").unwrap().lookalike_key(),
            latin.lookalike_key()
        );
    }

    #[test]
    fn display_names_refuse_invisible_and_direction_characters() {
        for bad in ["Ad\u{200b}a", "Ada\u{202e}", "\u{2067}Ada", "A\u{feff}da"] {
            let e = DisplayName::parse(bad).expect_err(bad);
            assert_eq!(e.field, "display_name");
        }
        assert_eq!(
            DisplayName::parse("Jose\u{301}").unwrap(),
            DisplayName::parse("Jos\u{e9}").unwrap()
        );
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
