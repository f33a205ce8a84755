//! What a generation request is, parsed: prompt, negative prompt, size, seed, provider.
//!
//! Every type here is built by a constructor that refuses bad input and names the offending
//! field (`prompt`, `negative_prompt`, `width`, `height`, `seed`, `provider`), so holding one
//! means it is valid. No HTTP and no SQL: the routes (later) parse their JSON into
//! [`GenerationInput`] and call [`GenerationRequest::parse`].

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A field of a generation request that could not be accepted, and why.
///
/// `field` is the request's JSON field name, so the HTTP edge can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidInput {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// The most characters (Unicode scalar values, after trimming) a prompt may have.
///
/// 1000 is DALL·E 2's limit, the tightest of the OpenAI models; Stability allows 2000 and
/// more. Amazon Titan takes only 512: the Bedrock provider refuses a longer prompt for Titan
/// with a readable reason instead of letting Bedrock truncate it silently.
pub const PROMPT_MAX_CHARS: usize = 1000;

/// Text that is safe to hand to a renderer or a provider: trimmed, whitespace runs (line
/// breaks and tabs included) collapsed to one space, no control, invisible or bidirectional
/// control characters, 1..=[`PROMPT_MAX_CHARS`] characters.
fn parse_text(field: &'static str, raw: &str) -> Result<String, InvalidInput> {
    // Refuse before normalising, so the error names the character the person sent.
    if let Some(c) = raw.chars().find(|&c| is_refused_char(c)) {
        return Err(InvalidInput::new(
            field,
            format!(
                "must not contain control, invisible or bidirectional-control characters (found U+{:04X})",
                c as u32
            ),
        ));
    }
    let mut text = String::with_capacity(raw.len().min(4 * PROMPT_MAX_CHARS + 4));
    let mut chars = 0usize;
    for word in raw.split_whitespace() {
        if !text.is_empty() {
            text.push(' ');
            chars += 1;
        }
        text.push_str(word);
        chars += word.chars().count();
        if chars > PROMPT_MAX_CHARS {
            return Err(InvalidInput::new(
                field,
                format!("must be at most {PROMPT_MAX_CHARS} characters"),
            ));
        }
    }
    if text.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    Ok(text)
}

/// Characters a prompt may not contain.
///
/// Whitespace controls (tab, line feed, carriage return…) are allowed because a textarea
/// sends them; they are collapsed to spaces. Everything else in Unicode's `Cc` is refused,
/// and so is every format (`Cf`) character: zero-width spaces and joiners, bidirectional
/// embeddings, overrides and isolates (the "Trojan Source" characters), the BOM, soft
/// hyphens, tag characters, plus the invisible fillers that are not `Cf` (U+034F, the
/// Hangul fillers). They are invisible to the person reviewing a listing and only ever
/// serve to smuggle text past them.
fn is_refused_char(c: char) -> bool {
    if c.is_control() {
        return !c.is_whitespace();
    }
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFEFF
            | 0xFFA0
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE007F
    )
}

/// What the person wants to see.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Prompt(String);

impl Prompt {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        parse_text("prompt", raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Prompt {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the person does not want to see; the same rules as [`Prompt`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct NegativePrompt(String);

impl NegativePrompt {
    /// Parses a present negative prompt; an empty one is an error.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        parse_text("negative_prompt", raw).map(Self)
    }

    /// An absent or blank negative prompt means "none" (forms send an empty field).
    pub fn parse_optional(raw: Option<&str>) -> Result<Option<Self>, InvalidInput> {
        match raw {
            Some(s) if !s.trim().is_empty() => Self::parse(s).map(Some),
            _ => Ok(None),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NegativePrompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sizes studio offers: three squares and a 16:9 landscape and 9:16 portrait.
///
/// A fixed list keeps render time, storage and price per size predictable. Remote providers
/// that cannot make a size exactly ask for their nearest native size of the same shape (see
/// each provider); the [`GeneratedImage`](crate::GeneratedImage) reports what came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageSize {
    #[serde(rename = "512x512")]
    Square512,
    #[serde(rename = "768x768")]
    Square768,
    #[serde(rename = "1024x1024")]
    Square1024,
    #[serde(rename = "1024x576")]
    Landscape1024x576,
    #[serde(rename = "576x1024")]
    Portrait576x1024,
}

/// The shape of an [`ImageSize`], for providers that take an aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    Square,
    Landscape,
    Portrait,
}

impl ImageSize {
    pub const ALL: [ImageSize; 5] = [
        ImageSize::Square512,
        ImageSize::Square768,
        ImageSize::Square1024,
        ImageSize::Landscape1024x576,
        ImageSize::Portrait576x1024,
    ];

    /// 768×768 when the request names no size.
    pub const DEFAULT: ImageSize = ImageSize::Square768;

    pub fn width(self) -> u32 {
        self.dimensions().0
    }

    pub fn height(self) -> u32 {
        self.dimensions().1
    }

    pub fn dimensions(self) -> (u32, u32) {
        match self {
            ImageSize::Square512 => (512, 512),
            ImageSize::Square768 => (768, 768),
            ImageSize::Square1024 => (1024, 1024),
            ImageSize::Landscape1024x576 => (1024, 576),
            ImageSize::Portrait576x1024 => (576, 1024),
        }
    }

    pub fn orientation(self) -> Orientation {
        let (w, h) = self.dimensions();
        match w.cmp(&h) {
            std::cmp::Ordering::Equal => Orientation::Square,
            std::cmp::Ordering::Greater => Orientation::Landscape,
            std::cmp::Ordering::Less => Orientation::Portrait,
        }
    }

    /// Parses the request's optional `width` and `height`.
    ///
    /// Neither → [`ImageSize::DEFAULT`]; one alone → the square of that side; both → that
    /// exact size. The error names `width` when no offered size has that width, else
    /// `height`.
    pub fn from_dimensions(width: Option<u32>, height: Option<u32>) -> Result<Self, InvalidInput> {
        let (w, h) = match (width, height) {
            (None, None) => return Ok(Self::DEFAULT),
            (Some(w), None) => (w, w),
            (None, Some(h)) => (h, h),
            (Some(w), Some(h)) => (w, h),
        };
        if let Some(size) = Self::ALL.into_iter().find(|s| s.dimensions() == (w, h)) {
            return Ok(size);
        }
        let offered = Self::ALL.map(|s| s.to_string()).join(", ");
        let field = if width.is_some() && !Self::ALL.iter().any(|s| s.width() == w) {
            "width"
        } else if width.is_none() {
            "height"
        } else if height.is_none() {
            "width"
        } else {
            "height"
        };
        Err(InvalidInput::new(
            field,
            format!("{w}×{h} is not an offered size (offered: {offered})"),
        ))
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, h) = self.dimensions();
        write!(f, "{w}x{h}")
    }
}

impl FromStr for ImageSize {
    type Err = InvalidInput;

    /// Parses `"768x768"` (also `×` or `X` as separator).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            InvalidInput::new(
                "size",
                "must look like 768x768 and be one of the offered sizes",
            )
        };
        let (w, h) = s.trim().split_once(['x', 'X', '×']).ok_or_else(bad)?;
        let w = w.trim().parse::<u32>().map_err(|_| bad())?;
        let h = h.trim().parse::<u32>().map_err(|_| bad())?;
        Self::ALL
            .into_iter()
            .find(|size| size.dimensions() == (w, h))
            .ok_or_else(bad)
    }
}

/// The seed that makes a generation repeatable.
///
/// 0..=2,147,483,646: the range Amazon Titan accepts, the narrowest of the providers
/// (Stability takes up to 4,294,967,294, OpenAI none), so a seed that parses can be sent to
/// any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seed(u32);

impl Seed {
    pub const MAX: u32 = 2_147_483_646;

    pub fn new(value: u64) -> Result<Self, InvalidInput> {
        u32::try_from(value)
            .ok()
            .filter(|v| *v <= Self::MAX)
            .map(Self)
            .ok_or_else(|| {
                InvalidInput::new("seed", format!("must be between 0 and {}", Self::MAX))
            })
    }

    /// A fresh seed, for requests that give none (recorded with the image so it can be
    /// repeated).
    pub fn random() -> Self {
        Self(rand::Rng::gen_range(&mut rand::thread_rng(), 0..=Self::MAX))
    }

    pub fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of a configured provider (`procedural`, `openai`, `bedrock`): 1–32 characters of
/// `a-z`, `0-9`, `-`, `_`, starting with a letter. Whether it is configured is the
/// provider registry's answer, not this type's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderName(String);

impl ProviderName {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let name = raw.trim().to_ascii_lowercase();
        let ok = (1..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(Self(name))
        } else {
            Err(InvalidInput::new(
                "provider",
                "must be a provider name such as \"procedural\" (1–32 letters, digits, - or _)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProviderName {
    type Error = InvalidInput;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProviderName> for String {
    fn from(value: ProviderName) -> Self {
        value.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A generation request as it arrives, unparsed (the body of `POST /api/v1/generations`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationInput {
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub provider: Option<String>,
}

/// A valid generation request; the seed is always set (random when the person gave none),
/// so the image can be made again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub negative_prompt: Option<NegativePrompt>,
    pub size: ImageSize,
    pub seed: Seed,
    /// `None` means the configured default provider.
    pub provider: Option<ProviderName>,
}

impl GenerationRequest {
    /// A request with no negative prompt, the default provider and the given seed.
    pub fn new(prompt: Prompt, size: ImageSize, seed: Seed) -> Self {
        Self {
            prompt,
            negative_prompt: None,
            size,
            seed,
            provider: None,
        }
    }

    pub fn with_negative_prompt(mut self, negative: NegativePrompt) -> Self {
        self.negative_prompt = Some(negative);
        self
    }

    /// Parses every field; the first bad one (in the order of the form) is reported.
    pub fn parse(input: &GenerationInput) -> Result<Self, InvalidInput> {
        let prompt = Prompt::parse(&input.prompt)?;
        let negative_prompt = NegativePrompt::parse_optional(input.negative_prompt.as_deref())?;
        let size = ImageSize::from_dimensions(input.width, input.height)?;
        let seed = match input.seed {
            Some(s) => Seed::new(s)?,
            None => Seed::random(),
        };
        let provider = input
            .provider
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(ProviderName::parse)
            .transpose()?;
        Ok(Self {
            prompt,
            negative_prompt,
            size,
            seed,
            provider,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_prompt_is_trimmed_and_its_whitespace_collapsed() {
        let p = Prompt::parse("  a lake\n at\t\tdusk \r\n").unwrap();
        assert_eq!(p.as_str(), "a lake at dusk");
    }

    #[test]
    fn an_empty_or_blank_prompt_is_refused_naming_the_field() {
        for raw in ["", "   ", "\n\t"] {
            let e = Prompt::parse(raw).unwrap_err();
            assert_eq!(e.field, "prompt");
            assert!(e.reason.contains("empty"), "{e}");
        }
    }

    #[test]
    fn a_prompt_of_exactly_the_bound_is_accepted_and_one_more_is_refused() {
        let at = "é".repeat(PROMPT_MAX_CHARS);
        assert_eq!(Prompt::parse(&at).unwrap().as_str().chars().count(), 1000);
        let over = "é".repeat(PROMPT_MAX_CHARS + 1);
        let e = Prompt::parse(&over).unwrap_err();
        assert_eq!(e.field, "prompt");
        assert!(e.reason.contains("1000"), "{e}");
    }

    #[test]
    fn the_bound_counts_characters_after_whitespace_is_collapsed() {
        let padded = format!("{}{}", " ".repeat(5000), "a".repeat(PROMPT_MAX_CHARS));
        assert!(Prompt::parse(&padded).is_ok());
    }

    #[test]
    fn control_characters_are_refused() {
        for raw in [
            "a\u{0}b",
            "bell\u{7}",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}x",
        ] {
            // U+0085 (NEL) is whitespace in Unicode, so Rust treats it as such: collapsed.
            let r = Prompt::parse(raw);
            if raw.contains('\u{85}') {
                assert_eq!(r.unwrap().as_str(), "c1 x");
            } else {
                assert_eq!(r.unwrap_err().field, "prompt", "{raw:?}");
            }
        }
    }

    #[test]
    fn invisible_and_bidirectional_control_characters_are_refused() {
        for c in [
            '\u{200B}',
            '\u{200D}',
            '\u{200E}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{2060}',
            '\u{E0041}',
            '\u{061C}',
            '\u{3164}',
        ] {
            let raw = format!("sun{c}set");
            let e = Prompt::parse(&raw).unwrap_err();
            assert_eq!(e.field, "prompt");
            assert!(
                e.reason.contains(&format!("U+{:04X}", c as u32)),
                "{c:?}: {e}"
            );
        }
    }

    #[test]
    fn ordinary_unicode_text_and_emoji_are_accepted() {
        for raw in [
            "富士山と桜",
            "Überfahrt über den See",
            "🌅 sunrise ❤️",
            "مدينة ليلا",
        ] {
            assert!(Prompt::parse(raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn a_negative_prompt_names_its_own_field_and_blank_means_none() {
        assert_eq!(NegativePrompt::parse_optional(None).unwrap(), None);
        assert_eq!(NegativePrompt::parse_optional(Some("  ")).unwrap(), None);
        assert_eq!(
            NegativePrompt::parse_optional(Some(" fog "))
                .unwrap()
                .unwrap()
                .as_str(),
            "fog"
        );
        let e = NegativePrompt::parse_optional(Some("x\u{202E}y")).unwrap_err();
        assert_eq!(e.field, "negative_prompt");
    }

    #[test]
    fn sizes_come_from_the_fixed_list_and_default_to_768() {
        assert_eq!(
            ImageSize::from_dimensions(None, None).unwrap(),
            ImageSize::Square768
        );
        assert_eq!(
            ImageSize::from_dimensions(Some(512), None).unwrap(),
            ImageSize::Square512
        );
        assert_eq!(
            ImageSize::from_dimensions(Some(1024), Some(576)).unwrap(),
            ImageSize::Landscape1024x576
        );
        assert_eq!(
            ImageSize::from_dimensions(Some(576), Some(1024)).unwrap(),
            ImageSize::Portrait576x1024
        );
    }

    #[test]
    fn a_size_not_offered_names_the_field_that_is_wrong() {
        assert_eq!(
            ImageSize::from_dimensions(Some(800), Some(600))
                .unwrap_err()
                .field,
            "width"
        );
        assert_eq!(
            ImageSize::from_dimensions(Some(512), Some(1024))
                .unwrap_err()
                .field,
            "height"
        );
        assert_eq!(
            ImageSize::from_dimensions(None, Some(576))
                .unwrap_err()
                .field,
            "height"
        );
        assert_eq!(
            ImageSize::from_dimensions(Some(0), None).unwrap_err().field,
            "width"
        );
        let e = ImageSize::from_dimensions(Some(4096), Some(4096)).unwrap_err();
        assert!(e.reason.contains("1024x576"), "{e}");
    }

    #[test]
    fn a_size_round_trips_through_its_text_form() {
        for size in ImageSize::ALL {
            assert_eq!(size.to_string().parse::<ImageSize>().unwrap(), size);
        }
        assert!("800x600".parse::<ImageSize>().is_err());
        assert!("768".parse::<ImageSize>().is_err());
    }

    #[test]
    fn a_seed_above_titans_range_is_refused() {
        assert_eq!(Seed::new(0).unwrap().value(), 0);
        assert_eq!(Seed::new(2_147_483_646).unwrap().value(), Seed::MAX);
        assert_eq!(Seed::new(2_147_483_647).unwrap_err().field, "seed");
        assert_eq!(Seed::new(u64::MAX).unwrap_err().field, "seed");
    }

    #[test]
    fn random_seeds_are_in_range_and_vary() {
        let seeds: std::collections::HashSet<u32> =
            (0..32).map(|_| Seed::random().value()).collect();
        assert!(seeds.iter().all(|s| *s <= Seed::MAX));
        assert!(seeds.len() > 1);
    }

    #[test]
    fn provider_names_are_normalised_and_junk_is_refused() {
        assert_eq!(ProviderName::parse(" OpenAI ").unwrap().as_str(), "openai");
        for bad in ["", "9lives", "open ai", "a/b", &"x".repeat(33)] {
            assert_eq!(
                ProviderName::parse(bad).unwrap_err().field,
                "provider",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_request_without_seed_gets_a_random_one_and_names_the_first_bad_field() {
        let ok = GenerationRequest::parse(&GenerationInput {
            prompt: "mountain lake".into(),
            negative_prompt: Some(String::new()),
            provider: Some(" ".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.size, ImageSize::Square768);
        assert_eq!(ok.negative_prompt, None);
        assert_eq!(ok.provider, None);

        let bad_seed = GenerationInput {
            prompt: "x".into(),
            seed: Some(1 << 40),
            ..Default::default()
        };
        assert_eq!(
            GenerationRequest::parse(&bad_seed).unwrap_err().field,
            "seed"
        );
        let bad_height = GenerationInput {
            prompt: "x".into(),
            width: Some(1024),
            height: Some(1000),
            ..Default::default()
        };
        assert_eq!(
            GenerationRequest::parse(&bad_height).unwrap_err().field,
            "height"
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(
            prompt in any::<String>(),
            negative in proptest::option::of(any::<String>()),
            width in proptest::option::of(any::<u32>()),
            height in proptest::option::of(any::<u32>()),
            seed in proptest::option::of(any::<u64>()),
            provider in proptest::option::of(any::<String>()),
        ) {
            let input = GenerationInput { prompt, negative_prompt: negative, width, height, seed, provider };
            let _ = GenerationRequest::parse(&input);
        }

        #[test]
        fn a_parsed_prompt_obeys_every_rule(raw in "\\PC{0,1200}") {
            if let Ok(p) = Prompt::parse(&raw) {
                let s = p.as_str();
                prop_assert!(!s.is_empty());
                prop_assert!(s.chars().count() <= PROMPT_MAX_CHARS);
                prop_assert_eq!(s.trim(), s);
                prop_assert!(!s.contains("  "));
                prop_assert!(!s.chars().any(|c| c.is_control() || is_refused_char(c)));
                // Parsing is idempotent: a valid prompt parses to itself.
                prop_assert_eq!(Prompt::parse(s).unwrap(), p.clone());
            }
        }

        #[test]
        fn any_u64_seed_is_accepted_exactly_when_in_range(v in any::<u64>()) {
            prop_assert_eq!(Seed::new(v).is_ok(), v <= u64::from(Seed::MAX));
        }
    }
}
