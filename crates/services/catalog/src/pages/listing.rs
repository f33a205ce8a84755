//! `GET /store`, `GET /store/search` and `GET /store/c/{category}`: the store's lists.
//! One search (the catalog's, with its facets over every match) makes each page; the
//! filters are a GET form and facet links that keep the rest of the search, so it all works
//! without script. Prices are typed in major units (`12.50`) and searched in minor units.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use rendermart_types::Money;
use rendermart_web::{Chrome, ErrorPage, Visitor};
use serde::Deserialize;

use super::{category_label, error, show_page, Card, Pages};
use crate::{
    domain::{Category, Invalid, Search, SearchInput},
    store::{CatalogError, FacetCount, Found},
};

/// Products per page of results; newest products on the store's home.
const PAGE_SIZE: u32 = 24;
const HOME_NEWEST: u32 = 8;

/// A search as the page's form and links send it. Every field is text, so a bad one is
/// named in a 4xx page rather than refused by the extractor.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct StoreQuery {
    q: String,
    category: String,
    tag: String,
    /// Major units, e.g. `12.50`.
    min_price: String,
    max_price: String,
    /// `true` when "In stock only" is checked.
    in_stock: String,
    /// `relevance`, `newest` or `price`.
    sort: String,
    cursor: String,
}

impl StoreQuery {
    /// `base?…` with the non-empty parameters of this search, in a fixed order.
    fn href(&self, base: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("q", &self.q),
            ("category", &self.category),
            ("tag", &self.tag),
            ("min_price", &self.min_price),
            ("max_price", &self.max_price),
            ("in_stock", &self.in_stock),
            ("sort", &self.sort),
            ("cursor", &self.cursor),
        ] {
            if !value.trim().is_empty() {
                query.append_pair(name, value.trim());
            }
        }
        let query = query.finish();
        if query.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{query}")
        }
    }

    /// The same search changed by `change`, from its first page.
    fn with(&self, change: impl FnOnce(&mut StoreQuery)) -> StoreQuery {
        let mut next = self.clone();
        next.cursor.clear();
        change(&mut next);
        next
    }
}

/// A facet value as a link that narrows (or, when current, widens) the search.
struct FacetLink {
    label: String,
    count: i64,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "store_results.html")]
struct ResultsPage {
    chrome: Chrome,
    title: String,
    /// Where the form sends the search.
    action: String,
    query: StoreQuery,
    /// The category the page is about (`/store/c/{category}`), not a filter to show.
    fixed_category: bool,
    in_stock: bool,
    sort: &'static str,
    total: i64,
    /// How many of the matches are in stock (shown next to the checkbox).
    in_stock_total: i64,
    cards: Vec<Card>,
    categories: Vec<FacetLink>,
    tags: Vec<FacetLink>,
    /// Undo one filter: (label, href).
    active: Vec<(String, String)>,
    next_href: Option<String>,
    first_href: Option<String>,
    currency: String,
}

#[derive(Template)]
#[template(path = "store_home.html")]
struct HomePage {
    chrome: Chrome,
    categories: Vec<FacetLink>,
    cards: Vec<Card>,
    total: i64,
}

/// `GET /store`.
pub async fn home(State(pages): State<Pages>, visitor: Visitor) -> Result<Response, Response> {
    let chrome = visitor.chrome().at("/store");
    let search = Search::parse(
        &SearchInput {
            limit: Some(&HOME_NEWEST.to_string()),
            ..SearchInput::default()
        },
        HOME_NEWEST,
    )
    .map_err(|e| error(&chrome, CatalogError::from(e)))?;
    let page = pages
        .catalog
        .search(&search)
        .await
        .map_err(|e| error(&chrome, e))?;
    let categories = page
        .facets
        .category
        .iter()
        .map(|f| FacetLink {
            label: category_label(&f.value),
            count: f.count,
            href: format!("/store/c/{}", f.value),
            current: false,
        })
        .collect();
    Ok(show_page(&HomePage {
        chrome,
        categories,
        cards: page.items.iter().map(Card::of).collect(),
        total: page.facets.total,
    }))
}

/// `GET /store/search`.
pub async fn search(
    State(pages): State<Pages>,
    visitor: Visitor,
    query: Result<Query<StoreQuery>, QueryRejection>,
) -> Result<Response, Response> {
    let chrome = visitor.chrome().at("/store");
    let query = unreadable(&chrome, query)?;
    let title = if query.q.trim().is_empty() {
        "All products".to_owned()
    } else {
        format!("Results for “{}”", query.q.trim())
    };
    results(
        &pages,
        chrome,
        query,
        title,
        "/store/search".to_owned(),
        false,
    )
    .await
}

/// `GET /store/c/{category}`: a category's products, searched like any other.
pub async fn category(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(slug): Path<String>,
    query: Result<Query<StoreQuery>, QueryRejection>,
) -> Result<Response, Response> {
    let chrome = visitor.chrome().at("/store");
    let mut query = unreadable(&chrome, query)?;
    let Ok(category) = Category::parse(&slug) else {
        return Err(error(&chrome, CatalogError::NotFound));
    };
    query.category = category.as_str().to_owned();
    let title = category_label(category.as_str());
    let action = format!("/store/c/{}", category.as_str());
    results(&pages, chrome, query, title, action, true).await
}

#[allow(clippy::result_large_err)]
fn unreadable(
    chrome: &Chrome,
    query: Result<Query<StoreQuery>, QueryRejection>,
) -> Result<StoreQuery, Response> {
    query.map(|Query(q)| q).map_err(|rejection| {
        tracing::debug!(%rejection, "store query rejected");
        ErrorPage::new(
            chrome.clone(),
            StatusCode::BAD_REQUEST,
            "Please check the search",
            "The search's address could not be read (a parameter may be repeated). \
             Start again from the store.",
        )
        .link("/store", "Go to the store")
        .into_response()
    })
}

/// A price typed in major units, as the minor units search takes; `None` when blank.
fn minor_units(pages: &Pages, field: &str, text: &str) -> Result<Option<String>, Invalid> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match Money::parse_major(text, pages.catalog.currency()) {
        Ok(m) if m.amount() >= 0 => Ok(Some(m.amount().to_string())),
        _ => Err(Invalid::new(
            field,
            format!(
                "must be an amount in {}, e.g. 12.50",
                pages.catalog.currency().code()
            ),
        )),
    }
}

/// The catalog's search for `query`: one page and the facets.
async fn run(
    pages: &Pages,
    query: &StoreQuery,
    in_stock: &str,
    limit: u32,
) -> Result<Arc<Found>, CatalogError> {
    let min = minor_units(pages, "min_price", &query.min_price)?;
    let max = minor_units(pages, "max_price", &query.max_price)?;
    let limit = limit.to_string();
    let input = SearchInput {
        q: Some(&query.q),
        category: Some(&query.category),
        tag: Some(&query.tag),
        min_price: min.as_deref(),
        max_price: max.as_deref(),
        in_stock: Some(in_stock),
        sort: Some(&query.sort),
        cursor: Some(&query.cursor),
        limit: Some(&limit),
    };
    let search = Search::parse(&input, PAGE_SIZE)?;
    pages.catalog.search(&search).await
}

async fn results(
    pages: &Pages,
    chrome: Chrome,
    query: StoreQuery,
    title: String,
    action: String,
    fixed_category: bool,
) -> Result<Response, Response> {
    let page = run(pages, &query, &query.in_stock, PAGE_SIZE)
        .await
        .map_err(|e| error(&chrome, e))?;
    let in_stock = query.in_stock.trim() == "true";
    let in_stock_total = if in_stock {
        page.facets.total
    } else {
        // How many of these are in stock: the same filters, counted.
        run(pages, &query.with(|_| {}), "true", 1)
            .await
            .map(|p| p.facets.total)
            .map_err(|e| error(&chrome, e))?
    };
    let sort = match query.sort.trim() {
        "newest" => "newest",
        "price" => "price",
        _ if query.q.trim().is_empty() => "newest",
        _ => "relevance",
    };
    let facet = |f: &FacetCount, current: &str, set: fn(&mut StoreQuery, String)| {
        let is_current = f.value == current;
        let value = if is_current {
            String::new()
        } else {
            f.value.clone()
        };
        FacetLink {
            label: f.value.clone(),
            count: f.count,
            href: query.with(|q| set(q, value)).href("/store/search"),
            current: is_current,
        }
    };
    let categories = page
        .facets
        .category
        .iter()
        .map(|f| {
            let mut link = facet(f, &query.category, |q, v| q.category = v);
            link.label = category_label(&f.value);
            link
        })
        .collect();
    let tags = page
        .facets
        .tag
        .iter()
        .map(|f| facet(f, &query.tag, |q, v| q.tag = v))
        .collect();
    let mut active = Vec::new();
    if !fixed_category && !query.category.trim().is_empty() {
        active.push((
            format!("Category: {}", category_label(query.category.trim())),
            query.with(|q| q.category.clear()).href(&action),
        ));
    }
    if !query.tag.trim().is_empty() {
        active.push((
            format!("Tag: {}", query.tag.trim()),
            query.with(|q| q.tag.clear()).href(&action),
        ));
    }
    let base = if fixed_category {
        // The category is in the path.
        query.with(|q| q.category.clear())
    } else {
        query.clone()
    };
    let next_href = page.next_cursor.as_ref().map(|cursor| {
        let mut next = base.clone();
        next.cursor = cursor.clone();
        next.href(&action)
    });
    let first_href = (!query.cursor.trim().is_empty()).then(|| base.with(|_| {}).href(&action));
    let total = page.facets.total;
    Ok(show_page(&ResultsPage {
        chrome,
        title,
        action,
        fixed_category,
        in_stock,
        sort,
        total,
        in_stock_total,
        cards: page.items.iter().map(Card::of).collect(),
        categories,
        tags,
        active,
        next_href,
        first_href,
        currency: pages.catalog.currency().code().to_owned(),
        query,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_search_and_drop_the_cursor_when_it_changes() {
        let q = StoreQuery {
            q: "red & blue".into(),
            tag: "sea".into(),
            cursor: "n.abc".into(),
            ..StoreQuery::default()
        };
        assert_eq!(
            q.href("/store/search"),
            "/store/search?q=red+%26+blue&tag=sea&cursor=n.abc"
        );
        assert_eq!(
            q.with(|q| q.category = "books".into())
                .href("/store/search"),
            "/store/search?q=red+%26+blue&category=books&tag=sea"
        );
        assert_eq!(StoreQuery::default().href("/store"), "/store");
    }
}
