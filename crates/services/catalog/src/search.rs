//! Full-text search: the one place where the catalog's SQL differs between SQLite and
//! PostgreSQL (see `docs/search.md`).
//!
//! * Words are made here, in Rust, the same way for documents and queries ([`words`]):
//!   lower case, accents removed, runs of letters and digits. Both engines index that
//!   already-normalized text, so they see identical tokens.
//! * Matching is the engine's (an index, not a scan): SQLite's FTS5 table
//!   `product_search`, PostgreSQL's `search_vector` column (`to_tsvector('simple', …)`,
//!   GIN-indexed). Every query word must be present.
//! * Ranking is not the engine's: bm25 and `ts_rank_cd` are different functions and do not
//!   agree on an order. The rank is a portable SQL expression over the stored word lists
//!   ([`Terms::score_sql`]), identical on both backends, then newest first, then id.
//!
//! The index is made at start ([`install`]), idempotently, because the service's
//! migrations are one portable list for both backends.

use rendermart_platform::db::{Backend, Db};
use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

use crate::domain::Invalid;

/// The most words a query may have.
pub const QUERY_WORDS_MAX: usize = 8;
/// The longest query, in characters.
pub const QUERY_MAX: usize = 200;
/// A longer word is cut to this many characters (documents and queries alike).
const WORD_MAX: usize = 40;

/// How much a query word found in a field adds to a product's score.
const TITLE_WEIGHT: i64 = 4;
const TAG_WEIGHT: i64 = 2;

/// The words of `text`: lower case, accents removed (NFKD without combining marks), split
/// at anything that is not a letter or a digit, each at most 40 characters.
pub fn words(text: &str) -> Vec<String> {
    let folded: String = text
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().take(WORD_MAX).collect())
        .collect()
}

/// A query's distinct words, 1 to [`QUERY_WORDS_MAX`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Terms(Vec<String>);

impl Terms {
    /// `Ok(None)` for a query without words (only punctuation): it matches everything.
    pub fn parse(q: &str) -> Result<Option<Self>, Invalid> {
        if q.chars().count() > QUERY_MAX {
            return Err(Invalid::new(
                "q",
                format!("must be at most {QUERY_MAX} characters"),
            ));
        }
        let mut terms: Vec<String> = Vec::new();
        for w in words(q) {
            if !terms.contains(&w) {
                terms.push(w);
            }
        }
        if terms.len() > QUERY_WORDS_MAX {
            return Err(Invalid::new(
                "q",
                format!("must have at most {QUERY_WORDS_MAX} words"),
            ));
        }
        Ok((!terms.is_empty()).then_some(Self(terms)))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// The `LIKE` pattern finding a word in a stored word list (` a b c `). Words are
    /// letters and digits only, so nothing needs escaping.
    pub fn like_patterns(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(|w| format!("% {w} %"))
    }

    /// The score of a product `p` for these words: for each word, 4 if the title has it and
    /// 2 if a tag or the category has it. `param(i)` names the bound `LIKE` pattern of word
    /// `i`. Portable SQL, so both backends rank alike.
    pub fn score_sql(&self, mut param: impl FnMut(usize) -> String) -> String {
        let parts: Vec<String> = (0..self.0.len())
            .map(|i| {
                let p = param(i);
                format!(
                    "CASE WHEN p.title_terms LIKE {p} THEN {TITLE_WEIGHT} ELSE 0 END + \
                     CASE WHEN p.tag_terms LIKE {p} THEN {TAG_WEIGHT} ELSE 0 END"
                )
            })
            .collect();
        format!("CAST(({}) AS BIGINT)", parts.join(" + "))
    }
}

/// The backend's full-text engine.
#[derive(Clone, Copy, Debug)]
pub struct Engine(Backend);

impl Engine {
    pub fn of(db: &Db) -> Self {
        Self(db.backend())
    }

    /// The SQL condition "product `p` has every word of the engine query bound as `param`".
    pub fn matches_sql(&self, param: &str) -> String {
        match self.0 {
            Backend::Sqlite => format!(
                "p.id IN (SELECT product_id FROM product_search WHERE product_search MATCH {param})"
            ),
            Backend::Postgres => {
                format!("p.search_vector @@ plainto_tsquery('simple', {param})")
            }
        }
    }

    /// The engine query for `terms` (every word required): FTS5 `"a" "b"`, PostgreSQL's
    /// `plainto_tsquery` input `a b`.
    pub fn query(&self, terms: &Terms) -> String {
        match self.0 {
            Backend::Sqlite => terms
                .0
                .iter()
                .map(|w| format!("\"{w}\""))
                .collect::<Vec<_>>()
                .join(" "),
            Backend::Postgres => terms.0.join(" "),
        }
    }
}

/// Makes the full-text index if it is missing; safe to run at every start and from several
/// processes at once.
///
/// SQLite: an FTS5 table of `(product_id, search_text)` kept by triggers on `products`
/// (its own rows, not an external-content table: `products` has no `INTEGER PRIMARY KEY`,
/// so its rowids are not stable across `VACUUM`). PostgreSQL: a generated `tsvector`
/// column and a GIN index, made under an advisory lock.
pub async fn install(db: &Db) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    match db.backend() {
        Backend::Sqlite => {
            let existed: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'product_search'",
            )
            .fetch_one(&mut *tx)
            .await?;
            for statement in [
                "CREATE VIRTUAL TABLE IF NOT EXISTS product_search USING fts5(\
                 product_id UNINDEXED, search_text, tokenize = 'unicode61 remove_diacritics 0')",
                "CREATE TRIGGER IF NOT EXISTS products_search_insert AFTER INSERT ON products BEGIN \
                 INSERT INTO product_search (product_id, search_text) VALUES (new.id, new.search_text); \
                 END",
                "CREATE TRIGGER IF NOT EXISTS products_search_update AFTER UPDATE OF search_text ON products BEGIN \
                 DELETE FROM product_search WHERE product_id = old.id; \
                 INSERT INTO product_search (product_id, search_text) VALUES (new.id, new.search_text); \
                 END",
                "CREATE TRIGGER IF NOT EXISTS products_search_delete AFTER DELETE ON products BEGIN \
                 DELETE FROM product_search WHERE product_id = old.id; \
                 END",
            ] {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            if existed == 0 {
                // Products written before the index existed (none, unless the schema was
                // migrated and filled by an older build).
                sqlx::query(
                    "INSERT INTO product_search (product_id, search_text) \
                     SELECT id, search_text FROM products",
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        Backend::Postgres => {
            sqlx::query(
                "SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtext('rendermart.catalog.search'))) AS l",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "ALTER TABLE products ADD COLUMN IF NOT EXISTS search_vector tsvector \
                 GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS products_search ON products USING GIN (search_vector)",
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lower_case_without_accents_or_punctuation() {
        assert_eq!(
            words("Café au Lait — A3, Matte/Glossy! 50×70"),
            vec!["cafe", "au", "lait", "a3", "matte", "glossy", "50", "70"]
        );
        assert_eq!(words("Ｆｕｌｌ-width"), vec!["full", "width"]);
        assert!(words("  ...  ").is_empty());
    }

    #[test]
    fn queries_are_at_most_eight_distinct_words() {
        assert_eq!(
            Terms::parse("Red red LIGHTHOUSE")
                .unwrap()
                .unwrap()
                .as_slice(),
            ["red", "lighthouse"]
        );
        assert_eq!(Terms::parse("?!").unwrap(), None);
        assert_eq!(Terms::parse("a b c d e f g h i").unwrap_err().field, "q");
        assert!(Terms::parse(&"x".repeat(201)).is_err());
    }

    #[test]
    fn engine_queries_quote_each_word_on_sqlite() {
        let terms = Terms::parse("old harbour").unwrap().unwrap();
        assert_eq!(Engine(Backend::Sqlite).query(&terms), "\"old\" \"harbour\"");
        assert_eq!(Engine(Backend::Postgres).query(&terms), "old harbour");
    }
}
