//! The catalog's rules, free of HTTP and SQL: what a product and its variants are, and
//! what a search asks for. Every constructor parses and refuses naming the field
//! (`variants[2].price`), so a value once held is valid.

use std::{collections::BTreeMap, fmt};

use rendermart_studio_api::GenerationId;
use rendermart_types::{Currency, Money, Sku, UserId};

use crate::search::{words, Terms};

/// A field that failed to parse, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The field's path in the request: `title`, `variants[1].sku`, `min_price`.
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.message)
    }
}

impl std::error::Error for Invalid {}

/// The configured limits a product is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Every price is in this currency (the wallet's).
    pub currency: Currency,
    pub max_price: i64,
    pub max_variants: usize,
}

pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 5_000;
pub const CATEGORY_MAX: usize = 50;
pub const TAGS_MAX: usize = 10;
pub const TAG_MAX: usize = 30;
pub const VARIANT_NAME_MAX: usize = 100;
pub const OPTIONS_MAX: usize = 5;
pub const OPTION_KEY_MAX: usize = 30;
pub const OPTION_VALUE_MAX: usize = 60;
pub const IMAGES_MAX: usize = 10;
pub const IMAGE_URL_MAX: usize = 2_000;

/// Text a person typed: trimmed, no control characters, `min..=max` characters.
fn text(field: &str, raw: &str, min: usize, max: usize) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    let n = trimmed.chars().count();
    if n < min || n > max {
        let message = if min == 0 {
            format!("must be at most {max} characters")
        } else {
            format!("must be {min} to {max} characters")
        };
        return Err(Invalid::new(field, message));
    }
    // Line breaks are allowed in longer text (a description); nothing else invisible.
    if trimmed
        .chars()
        .any(|c| c.is_control() && !(max > TITLE_MAX && (c == '\n' || c == '\r' || c == '\t')))
    {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// What a product is: decides which fields make sense (only a print names an image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Print,
    Book,
    Goods,
}

impl Kind {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "print" => Ok(Kind::Print),
            "book" => Ok(Kind::Book),
            "goods" => Ok(Kind::Goods),
            _ => Err(Invalid::new("kind", "must be print, book or goods")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Print => "print",
            Kind::Book => "book",
            Kind::Goods => "goods",
        }
    }
}

/// A product's title: 1 to 200 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        text("title", raw, 1, TITLE_MAX).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's description: at most 5000 characters (may be empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        text("description", raw, 0, DESCRIPTION_MAX).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A category's slug: 1 to 50 lower-case letters, digits and single `-` between them
/// (`wall-art`). Upper case is accepted and lowered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Category(String);

impl Category {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Self::parse_as("category", raw)
    }

    pub fn parse_as(field: &str, raw: &str) -> Result<Self, Invalid> {
        let slug = raw.trim().to_ascii_lowercase();
        let ok = !slug.is_empty()
            && slug.len() <= CATEGORY_MAX
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !slug.starts_with('-')
            && !slug.ends_with('-')
            && !slug.contains("--");
        if ok {
            Ok(Self(slug))
        } else {
            Err(Invalid::new(
                field,
                format!(
                    "must be a slug of 1 to {CATEGORY_MAX} lower-case letters, digits and single '-' between them"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tag: 1 to 30 characters of letters, digits, spaces and `-`, lower-cased, inner
/// spaces collapsed (`Black and White` → `black and white`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn parse_as(field: &str, raw: &str) -> Result<Self, Invalid> {
        let tag = raw
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let n = tag.chars().count();
        if n == 0 || n > TAG_MAX {
            return Err(Invalid::new(
                field,
                format!("must be 1 to {TAG_MAX} characters"),
            ));
        }
        if !tag
            .chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || c == '-')
        {
            return Err(Invalid::new(
                field,
                "must be letters, digits, spaces and '-' only",
            ));
        }
        Ok(Self(tag))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's tags: at most 10, each a [`Tag`]; repeats are dropped, order is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tags(Vec<Tag>);

impl Tags {
    pub fn parse(raw: &[String]) -> Result<Self, Invalid> {
        if raw.len() > TAGS_MAX {
            return Err(Invalid::new("tags", format!("at most {TAGS_MAX} tags")));
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(raw.len());
        for (i, t) in raw.iter().enumerate() {
            let tag = Tag::parse_as(&format!("tags[{i}]"), t)?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Ok(Self(tags))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tag> {
        self.0.iter()
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|t| t.0.clone()).collect()
    }
}

/// Links to a product's pictures: at most 10 `https://` (or `http://`) URLs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Images(Vec<String>);

impl Images {
    pub fn parse(raw: &[String]) -> Result<Self, Invalid> {
        if raw.len() > IMAGES_MAX {
            return Err(Invalid::new(
                "images",
                format!("at most {IMAGES_MAX} images"),
            ));
        }
        let mut images = Vec::with_capacity(raw.len());
        for (i, u) in raw.iter().enumerate() {
            let field = format!("images[{i}]");
            let u = u.trim();
            let parsed = url::Url::parse(u)
                .ok()
                .filter(|url| matches!(url.scheme(), "https" | "http") && url.host_str().is_some());
            match parsed {
                Some(url) if u.len() <= IMAGE_URL_MAX => images.push(url.to_string()),
                _ => {
                    return Err(Invalid::new(
                        field,
                        format!("must be an http(s) URL of at most {IMAGE_URL_MAX} characters"),
                    ))
                }
            }
        }
        Ok(Self(images))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// A price: [`Money`] in the catalog's currency, from 1 minor unit to the configured
/// maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price(Money);

impl Price {
    pub fn parse_as(field: &str, raw: Money, rules: &Rules) -> Result<Self, Invalid> {
        if raw.currency() != rules.currency {
            return Err(Invalid::new(
                format!("{field}.currency"),
                format!("must be {}", rules.currency),
            ));
        }
        if raw.amount() <= 0 || raw.amount() > rules.max_price {
            return Err(Invalid::new(
                format!("{field}.amount"),
                format!(
                    "must be a whole number of minor units from 1 to {}",
                    rules.max_price
                ),
            ));
        }
        Ok(Self(raw))
    }

    pub fn money(self) -> Money {
        self.0
    }

    pub fn minor_units(self) -> i64 {
        self.0.amount()
    }
}

/// A variant's options (`{"size": "A3", "paper": "matte"}`): at most 5, short keys and
/// values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options(BTreeMap<String, String>);

impl Options {
    pub fn parse_as(field: &str, raw: &BTreeMap<String, String>) -> Result<Self, Invalid> {
        if raw.len() > OPTIONS_MAX {
            return Err(Invalid::new(
                field,
                format!("at most {OPTIONS_MAX} options"),
            ));
        }
        let mut options = BTreeMap::new();
        for (k, v) in raw {
            let key = text(&format!("{field}.{k}"), k, 1, OPTION_KEY_MAX)?;
            let value = text(&format!("{field}.{key}"), v, 1, OPTION_VALUE_MAX)?;
            options.insert(key, value);
        }
        Ok(Self(options))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// One sellable variant of a product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub sku: Sku,
    pub name: String,
    pub options: Options,
    pub price: Price,
}

/// A variant as the client sent it.
pub struct VariantInput<'a> {
    pub sku: &'a str,
    pub name: &'a str,
    pub options: &'a BTreeMap<String, String>,
    pub price: Money,
}

/// A product's variants: 1 to the configured maximum, SKUs distinct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variants(Vec<Variant>);

impl Variants {
    pub fn parse(raw: &[VariantInput<'_>], rules: &Rules) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > rules.max_variants {
            return Err(Invalid::new(
                "variants",
                format!("must be 1 to {} variants", rules.max_variants),
            ));
        }
        let mut variants: Vec<Variant> = Vec::with_capacity(raw.len());
        for (i, v) in raw.iter().enumerate() {
            let at = |f: &str| format!("variants[{i}].{f}");
            let sku = Sku::parse(v.sku).map_err(|e| Invalid::new(at("sku"), e.to_string()))?;
            if variants.iter().any(|other| other.sku == sku) {
                return Err(Invalid::new(at("sku"), "repeats another variant's SKU"));
            }
            variants.push(Variant {
                sku,
                name: text(&at("name"), v.name, 1, VARIANT_NAME_MAX)?,
                options: Options::parse_as(&at("options"), v.options)?,
                price: Price::parse_as(&at("price"), v.price, rules)?,
            });
        }
        Ok(Self(variants))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Variant> {
        self.0.iter()
    }

    /// The lowest and highest price (there is at least one variant).
    pub fn price_range(&self) -> (i64, i64) {
        let prices = self.0.iter().map(|v| v.price.minor_units());
        let min = prices.clone().min().unwrap_or(0);
        let max = prices.max().unwrap_or(0);
        (min, max)
    }
}

/// Everything a product is made of, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductDraft {
    pub kind: Kind,
    pub title: Title,
    pub description: Description,
    pub category: Category,
    pub tags: Tags,
    pub images: Images,
    pub asset_id: Option<GenerationId>,
    pub variants: Variants,
}

/// Why the caller may not sell prints of the image a print names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrintRefused {
    /// The wallet has no such image.
    NoSuchImage,
    /// Someone else owns it now.
    NotTheOwner,
}

/// Only an image's current owner sells prints of it (decision 59), admins included: the
/// seller of a product is whoever creates it, and a print pays its seller, so letting
/// anyone else list one would sell the owner's image for someone else's profit. `owner`
/// is who the wallet says owns the image now (`None`: no such image).
pub fn may_print(seller: UserId, owner: Option<UserId>) -> Result<(), PrintRefused> {
    match owner {
        None => Err(PrintRefused::NoSuchImage),
        Some(owner) if owner == seller => Ok(()),
        Some(_) => Err(PrintRefused::NotTheOwner),
    }
}

impl ProductDraft {
    /// Checks the rules that span fields: only a print names the image it is made of.
    pub fn check(self) -> Result<Self, Invalid> {
        if self.asset_id.is_some() && self.kind != Kind::Print {
            return Err(Invalid::new("asset_id", "only a print names an image"));
        }
        Ok(self)
    }

    /// The words ranking compares a query against, per field, as stored: the title's, and
    /// the tags' and category's.
    pub fn title_terms(&self) -> String {
        spaced(words(self.title.as_str()))
    }

    pub fn tag_terms(&self) -> String {
        let mut all = words(self.category.as_str());
        for t in self.tags.iter() {
            all.extend(words(t.as_str()));
        }
        spaced(all)
    }

    /// Every word of the product, for the full-text engine.
    pub fn search_text(&self) -> String {
        let mut all = words(self.title.as_str());
        all.extend(words(self.category.as_str()));
        for t in self.tags.iter() {
            all.extend(words(t.as_str()));
        }
        all.extend(words(self.description.as_str()));
        for v in self.variants.iter() {
            all.extend(words(&v.name));
            all.extend(words(v.sku.as_str()));
            for value in v.options.as_map().values() {
                all.extend(words(value));
            }
        }
        spaced(all)
    }
}

/// Words joined with a space before, between and after them (` red lighthouse `), so a
/// whole word is found with `LIKE '% word %'`.
fn spaced(words: Vec<String>) -> String {
    let mut out = String::from(" ");
    for w in words {
        out.push_str(&w);
        out.push(' ');
    }
    out
}

/// How results are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sort {
    /// Best match first (newest first without a query).
    Relevance,
    Newest,
    /// Cheapest first, by the product's lowest variant price.
    Price,
}

impl Sort {
    pub fn parse(raw: Option<&str>) -> Result<Self, Invalid> {
        match raw.map(str::trim) {
            None | Some("") | Some("relevance") => Ok(Sort::Relevance),
            Some("newest") => Ok(Sort::Newest),
            Some("price") => Ok(Sort::Price),
            Some(_) => Err(Invalid::new("sort", "must be relevance, newest or price")),
        }
    }
}

/// Where the previous page ended, in the order of its sort.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cursor {
    Newest { id: String },
    Price { price: i64, id: String },
    Relevance { score: i64, id: String },
}

impl Cursor {
    /// `n.<id>`, `p.<price>.<id>` or `r.<score>.<id>`: a cursor of another sort is refused.
    pub fn parse(raw: &str, sort: Sort) -> Result<Self, Invalid> {
        let bad = || {
            Invalid::new(
                "cursor",
                "must be the next_cursor of a previous page of this search",
            )
        };
        let id_of = |s: &str| -> Result<String, Invalid> {
            s.parse::<uuid::Uuid>().map_err(|_| bad())?;
            Ok(s.to_owned())
        };
        let mut parts = raw.splitn(3, '.');
        let cursor = match (parts.next(), parts.next(), parts.next()) {
            (Some("n"), Some(id), None) => Cursor::Newest { id: id_of(id)? },
            (Some("p"), Some(price), Some(id)) => Cursor::Price {
                price: price.parse().map_err(|_| bad())?,
                id: id_of(id)?,
            },
            (Some("r"), Some(score), Some(id)) => Cursor::Relevance {
                score: score.parse().map_err(|_| bad())?,
                id: id_of(id)?,
            },
            _ => return Err(bad()),
        };
        let fits = matches!(
            (&cursor, sort),
            (Cursor::Newest { .. }, Sort::Newest)
                | (Cursor::Newest { .. }, Sort::Relevance)
                | (Cursor::Price { .. }, Sort::Price)
                | (Cursor::Relevance { .. }, Sort::Relevance)
        );
        if fits {
            Ok(cursor)
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::Newest { id } => write!(f, "n.{id}"),
            Cursor::Price { price, id } => write!(f, "p.{price}.{id}"),
            Cursor::Relevance { score, id } => write!(f, "r.{score}.{id}"),
        }
    }
}

/// A search as the client sent it (every parameter as text, so a bad one is named).
#[derive(Clone, Debug, Default)]
pub struct SearchInput<'a> {
    pub q: Option<&'a str>,
    pub category: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub min_price: Option<&'a str>,
    pub max_price: Option<&'a str>,
    pub in_stock: Option<&'a str>,
    pub sort: Option<&'a str>,
    pub cursor: Option<&'a str>,
    pub limit: Option<&'a str>,
}

/// A parsed search.
/// Hashable: a parsed search (words normalized, at most 200 characters of query) is the
/// key of the short cache of results ([`crate::recent`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Search {
    /// The query's words; `None` when there is no query (everything matches).
    pub terms: Option<Terms>,
    pub category: Option<Category>,
    pub tag: Option<Tag>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    pub sort: Sort,
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

pub const LIMIT_MAX: u32 = 100;

fn blank(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

impl Search {
    pub fn parse(input: &SearchInput<'_>, default_limit: u32) -> Result<Self, Invalid> {
        let terms = match blank(input.q) {
            None => None,
            Some(q) => Terms::parse(q)?,
        };
        let price = |field: &str, raw: Option<&str>| -> Result<Option<i64>, Invalid> {
            blank(raw)
                .map(|p| {
                    p.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(|| {
                        Invalid::new(field, "must be a whole number of minor units, 0 or more")
                    })
                })
                .transpose()
        };
        let min_price = price("min_price", input.min_price)?;
        let max_price = price("max_price", input.max_price)?;
        if let (Some(min), Some(max)) = (min_price, max_price) {
            if min > max {
                return Err(Invalid::new("min_price", "must not be above max_price"));
            }
        }
        let in_stock = match blank(input.in_stock) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(Invalid::new("in_stock", "must be true or false")),
        };
        let limit = match blank(input.limit) {
            None => default_limit.clamp(1, LIMIT_MAX),
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=LIMIT_MAX).contains(l))
                .ok_or_else(|| Invalid::new("limit", format!("must be 1 to {LIMIT_MAX}")))?,
        };
        let sort = Sort::parse(input.sort)?;
        // Without words there is nothing to rank by: newest first.
        let sort = if sort == Sort::Relevance && terms.is_none() {
            Sort::Newest
        } else {
            sort
        };
        Ok(Self {
            terms,
            category: blank(input.category)
                .map(|c| Category::parse_as("category", c))
                .transpose()?,
            tag: blank(input.tag)
                .map(|t| Tag::parse_as("tag", t))
                .transpose()?,
            min_price,
            max_price,
            in_stock,
            cursor: blank(input.cursor)
                .map(|c| Cursor::parse(c, sort))
                .transpose()?,
            sort,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_images_current_owner_may_sell_prints_of_it() {
        let (owner, other) = (UserId::new(), UserId::new());
        assert_eq!(may_print(owner, Some(owner)), Ok(()));
        assert_eq!(
            may_print(other, Some(owner)),
            Err(PrintRefused::NotTheOwner)
        );
        assert_eq!(may_print(owner, None), Err(PrintRefused::NoSuchImage));
    }

    fn rules() -> Rules {
        Rules {
            currency: Currency::parse("USD").unwrap(),
            max_price: 1_000_000,
            max_variants: 3,
        }
    }

    fn usd(n: i64) -> Money {
        Money::new(n, Currency::parse("USD").unwrap())
    }

    #[test]
    fn titles_descriptions_categories_and_tags_are_parsed_or_named() {
        assert_eq!(
            Title::parse("  Lighthouse  ").unwrap().as_str(),
            "Lighthouse"
        );
        assert_eq!(Title::parse(" ").unwrap_err().field, "title");
        assert!(Title::parse(&"x".repeat(201)).is_err());
        assert!(Title::parse("a\u{0}b").is_err());
        assert!(Description::parse("line one\nline two").is_ok());
        assert!(Description::parse(&"x".repeat(5001)).is_err());
        assert_eq!(Category::parse("Wall-Art").unwrap().as_str(), "wall-art");
        for bad in ["", "-art", "art-", "wall--art", "wall art", "é"] {
            assert!(Category::parse(bad).is_err(), "{bad:?}");
        }
        let tags = Tags::parse(&["Black  and White".into(), "black and white".into()]).unwrap();
        assert_eq!(tags.to_strings(), vec!["black and white"]);
        let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        assert_eq!(Tags::parse(&eleven).unwrap_err().field, "tags");
        assert_eq!(
            Tags::parse(&["ok".into(), "x".repeat(31)])
                .unwrap_err()
                .field,
            "tags[1]"
        );
    }

    #[test]
    fn prices_are_positive_bounded_and_in_the_catalog_currency() {
        let r = rules();
        assert_eq!(
            Price::parse_as("price", usd(1), &r).unwrap().minor_units(),
            1
        );
        assert_eq!(
            Price::parse_as("v.price", usd(0), &r).unwrap_err().field,
            "v.price.amount"
        );
        assert!(Price::parse_as("price", usd(-5), &r).is_err());
        assert!(Price::parse_as("price", usd(1_000_001), &r).is_err());
        let eur = Money::new(100, Currency::parse("EUR").unwrap());
        assert_eq!(
            Price::parse_as("price", eur, &r).unwrap_err().field,
            "price.currency"
        );
    }

    #[test]
    fn variants_are_one_to_the_maximum_with_distinct_skus() {
        let r = rules();
        let none = BTreeMap::new();
        let v = |sku: &'static str| VariantInput {
            sku,
            name: "A3",
            options: &none,
            price: usd(100),
        };
        assert!(Variants::parse(&[v("A-1"), v("A-2")], &r).is_ok());
        assert_eq!(Variants::parse(&[], &r).unwrap_err().field, "variants");
        assert_eq!(
            Variants::parse(&[v("A"), v("B"), v("C"), v("D")], &r)
                .unwrap_err()
                .field,
            "variants"
        );
        assert_eq!(
            Variants::parse(&[v("A-1"), v("a-1")], &r)
                .unwrap_err()
                .field,
            "variants[1].sku"
        );
        assert_eq!(
            Variants::parse(&[v("A 1")], &r).unwrap_err().field,
            "variants[0].sku"
        );
    }

    #[test]
    fn searches_name_their_bad_parameter() {
        let ok = Search::parse(&SearchInput::default(), 20).unwrap();
        assert_eq!((ok.sort, ok.limit, ok.in_stock), (Sort::Newest, 20, false));
        let bad = |input: SearchInput<'static>| Search::parse(&input, 20).unwrap_err().field;
        assert_eq!(
            bad(SearchInput {
                limit: Some("101"),
                ..Default::default()
            }),
            "limit"
        );
        assert_eq!(
            bad(SearchInput {
                limit: Some("0"),
                ..Default::default()
            }),
            "limit"
        );
        assert_eq!(
            bad(SearchInput {
                sort: Some("best"),
                ..Default::default()
            }),
            "sort"
        );
        assert_eq!(
            bad(SearchInput {
                min_price: Some("-1"),
                ..Default::default()
            }),
            "min_price"
        );
        assert_eq!(
            bad(SearchInput {
                min_price: Some("9"),
                max_price: Some("3"),
                ..Default::default()
            }),
            "min_price"
        );
        assert_eq!(
            bad(SearchInput {
                in_stock: Some("yes"),
                ..Default::default()
            }),
            "in_stock"
        );
        assert_eq!(
            bad(SearchInput {
                sort: Some("price"),
                cursor: Some("n.0190a1b2-0000-7000-8000-000000000000"),
                ..Default::default()
            }),
            "cursor"
        );
    }

    #[test]
    fn cursors_round_trip() {
        let id = "0190a1b2-0000-7000-8000-000000000000".to_owned();
        for (c, sort) in [
            (Cursor::Newest { id: id.clone() }, Sort::Newest),
            (
                Cursor::Price {
                    price: 1250,
                    id: id.clone(),
                },
                Sort::Price,
            ),
            (
                Cursor::Relevance {
                    score: 7,
                    id: id.clone(),
                },
                Sort::Relevance,
            ),
        ] {
            assert_eq!(Cursor::parse(&c.to_string(), sort).unwrap(), c);
        }
        assert!(Cursor::parse("p.x.y", Sort::Price).is_err());
    }
}
