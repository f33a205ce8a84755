//! `GET /studio` and `POST /studio`: the prompt form and "my generations", in the site's
//! shared frame (decision 47: each service renders its own pages with `rendermart-web`).
//!
//! The form carries a hidden random idempotency key, so a double submit (or a resend after a
//! timeout) makes one job, and answers with a `303` back here. A queued or running job is
//! followed by `/static/live.js` over `/api/v1/generations/{id}/events`; without script the
//! page refreshes itself every few seconds while one is (`<noscript>` meta refresh).

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::StatusCode,
    response::Response,
    routing::get,
    Router,
};
use rand::RngCore;
use rendermart_platform::http::Problem;
use rendermart_web::{
    form::MemberForm, no_store, page, problem_page, security_headers, see_other, Chrome, Visitor,
};
use serde::Deserialize;
use time::{macros::format_description, OffsetDateTime};

use crate::{
    jobs::{Job, Jobs, StudioError},
    GenerationInput, GenerationRequest, ImageSize, InvalidInput,
};

const LOG_IN_FIRST: &str = "/login?next=/studio";
/// How many of the member's generations the page lists.
const LISTED: i64 = 24;

pub fn router(jobs: Arc<Jobs>) -> Router {
    Router::new()
        .route("/studio", get(show).post(create))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(jobs)
}

#[derive(Template)]
#[template(path = "studio.html")]
struct StudioPage {
    chrome: Chrome,
    signed_in: bool,
    csrf_token: String,
    idempotency_key: String,
    sizes: Vec<SizeChoice>,
    jobs: Vec<JobRow>,
    /// Some job is queued or running: the page refreshes itself without script.
    any_active: bool,
    flash: Option<&'static str>,
}

struct SizeChoice {
    value: String,
    label: String,
    default: bool,
}

struct JobRow {
    id: String,
    prompt: String,
    status: String,
    error: Option<String>,
    size: String,
    price: String,
    created: String,
    created_iso: String,
    active: bool,
    succeeded: bool,
}

/// `150` minor units → `1.50` (the wallet's currency; studio's prices are in its minor
/// units, and studio does not know its code).
fn price_label(minor: i64) -> String {
    if minor == 0 {
        return "free".to_owned();
    }
    format!("{}.{:02}", minor / 100, minor % 100)
}

fn stamp(micros: i64) -> (String, String) {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    (
        at.format(format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default(),
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    )
}

impl JobRow {
    fn of(job: Job) -> Self {
        let (created, created_iso) = stamp(job.created_at);
        Self {
            id: job.id.to_string(),
            active: job.status == "queued" || job.status == "running",
            succeeded: job.status == "succeeded",
            size: format!("{}×{}", job.width, job.height),
            price: price_label(job.price),
            created,
            created_iso,
            prompt: job.prompt,
            status: job.status,
            error: job.error,
        }
    }
}

fn fresh_key() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StudioQuery {
    done: String,
}

pub async fn show(
    State(jobs): State<Arc<Jobs>>,
    visitor: Visitor,
    query: Result<Query<StudioQuery>, QueryRejection>,
) -> Response {
    let chrome = visitor.chrome().at("/studio");
    let prices = &jobs.config().prices;
    let sizes = ImageSize::ALL
        .into_iter()
        .map(|size| SizeChoice {
            value: size.to_string(),
            label: format!(
                "{} × {} — {}",
                size.width(),
                size.height(),
                price_label(prices.of(size))
            ),
            default: size == ImageSize::DEFAULT,
        })
        .collect();
    let (signed_in, csrf_token, rows) = match &visitor.0 {
        Some(member) => match jobs.mine(member.user_id(), LISTED).await {
            Ok(mine) => (
                true,
                member.csrf_token().to_owned(),
                mine.into_iter().map(JobRow::of).collect::<Vec<_>>(),
            ),
            Err(e) => return problem_page(chrome, e),
        },
        None => (false, String::new(), Vec::new()),
    };
    let done = query.map(|q| q.0.done).unwrap_or_default();
    no_store(page(
        StatusCode::OK,
        &StudioPage {
            chrome,
            signed_in,
            csrf_token,
            idempotency_key: fresh_key(),
            sizes,
            any_active: rows.iter().any(|r| r.active),
            jobs: rows,
            flash: (done == "queued").then_some(
                "Your image is queued. It appears below when it is ready; its price is held from your wallet until then.",
            ),
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GenerationForm {
    csrf_token: String,
    idempotency_key: String,
    prompt: String,
    negative_prompt: String,
    size: String,
    seed: String,
}

impl rendermart_web::form::CsrfField for GenerationForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
    const LOG_IN_FIRST: &'static str = LOG_IN_FIRST;
}

impl GenerationForm {
    /// The form as a generation request; the first bad field is named.
    fn request(&self) -> Result<GenerationRequest, InvalidInput> {
        let size: ImageSize = self.size.parse()?;
        let seed = match self.seed.trim() {
            "" => None,
            raw => Some(raw.parse::<u64>().map_err(|_| {
                InvalidInput::new("seed", "must be a whole number from 0 to 4294967295")
            })?),
        };
        GenerationRequest::parse(&GenerationInput {
            prompt: self.prompt.clone(),
            negative_prompt: Some(self.negative_prompt.clone()).filter(|n| !n.trim().is_empty()),
            width: Some(size.width()),
            height: Some(size.height()),
            seed,
            provider: None,
        })
    }
}

pub async fn create(
    State(jobs): State<Arc<Jobs>>,
    MemberForm { member, form }: MemberForm<GenerationForm>,
) -> Response {
    let chrome = Visitor(Some(member.clone())).chrome().at("/studio");
    let key = form.idempotency_key.trim();
    if key.is_empty() || key.len() > 100 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return problem_page(chrome, StudioError::KeyRequired);
    }
    let request = match form.request() {
        Ok(request) => request,
        Err(invalid) => return problem_page(chrome, Problem::from(StudioError::from(invalid))),
    };
    match jobs.create(member.user_id(), key, request).await {
        Ok(_) => see_other("/studio?done=queued"),
        Err(e) => problem_page(chrome, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_read_as_major_units_and_zero_is_free() {
        assert_eq!(price_label(150), "1.50");
        assert_eq!(price_label(5), "0.05");
        assert_eq!(price_label(0), "free");
    }

    #[test]
    fn the_form_names_its_first_bad_field() {
        let form = |size: &str, seed: &str, prompt: &str| GenerationForm {
            size: size.into(),
            seed: seed.into(),
            prompt: prompt.into(),
            ..GenerationForm::default()
        };
        assert!(form("512x512", "", "a cat").request().is_ok());
        assert_eq!(
            form("512x512", "42", "a cat")
                .request()
                .map(|r| r.seed.value()),
            Ok(42)
        );
        assert_eq!(
            form("13x13", "", "a cat").request().unwrap_err().field,
            "size"
        );
        assert_eq!(
            form("512x512", "-1", "a cat").request().unwrap_err().field,
            "seed"
        );
        assert_eq!(
            form("512x512", "", "  ").request().unwrap_err().field,
            "prompt"
        );
    }
}
