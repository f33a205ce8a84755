//! Studio's public HTTP API: create a generation (202, idempotent per key), follow it, list
//! one's own. `StudioError` becomes problem+json here, in one place.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use futures_util::stream;
use rendermart_platform::{
    auth::Principal,
    http::{ApiJson, Problem},
    live::{json_event, LiveStreams},
};
use rendermart_studio_api::GenerationId;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::{
    jobs::{Job, Jobs, StudioError},
    GenerationInput, GenerationRequest,
};

#[derive(OpenApi)]
#[openapi(
    paths(create, show, mine, events),
    components(schemas(GenerationBody, JobView, JobList, Problem)),
    tags((name = "studio", description = "Image generation"))
)]
pub struct StudioApiDoc;

impl From<StudioError> for Problem {
    fn from(e: StudioError) -> Self {
        match e {
            StudioError::Invalid(invalid) => {
                Problem::validation(format!("{invalid}.")).field(invalid.field, invalid.reason)
            }
            StudioError::KeyRequired => Problem::bad_request(
                "Send an Idempotency-Key header (1 to 100 visible ASCII characters) so a retried request makes one image.",
            ),
            StudioError::TooManyActive { limit } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-generations",
                "Too many generations at once",
            )
            .detail(format!(
                "You have {limit} generations queued or running. Wait for one to finish."
            ))
            .retry_after(5),
            StudioError::NotFound => Problem::not_found("No such generation."),
            StudioError::Unavailable(why) => {
                tracing::warn!(%why, "studio unavailable");
                Problem::unavailable(2, "The studio is unavailable right now. Try again shortly.")
            }
            StudioError::Internal(e) => Problem::internal(&format!("{e:#}")),
        }
    }
}

pub fn router(jobs: Arc<Jobs>, streams: LiveStreams) -> Router {
    Router::new()
        .route("/api/v1/generations", get(mine).post(create))
        .route("/api/v1/generations/{id}", get(show))
        .route("/api/v1/generations/{id}/events", get(events))
        .with_state(Studio { jobs, streams })
}

#[derive(Clone)]
struct Studio {
    jobs: Arc<Jobs>,
    streams: LiveStreams,
}

/// How often one open generation stream reads its job.
const JOB_EVERY: Duration = Duration::from_millis(300);

/// A generation's progress as it happens (server-sent events): `event: job` with the job's
/// JSON now and at each change of its status; the stream ends once it succeeded or failed.
#[utoipa::path(get, path = "/api/v1/generations/{id}/events", tag = "studio",
    params(("id" = String, Path, description = "The generation's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "`text/event-stream` of `job` events (the generation's JSON)"),
        (status = 404, description = "No such generation of yours", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many live connections", body = Problem, content_type = "application/problem+json"),
    ))]
async fn events(
    State(studio): State<Studio>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id: GenerationId = id.parse().map_err(|_| StudioError::NotFound)?;
    let user = principal.user_id;
    // Someone else's generation does not exist for them, live or not.
    let first = studio.jobs.get(user, id).await?;
    let jobs = studio.jobs.clone();
    // State: the job to send next (if any), the last one sent, and whether it ended.
    let events = stream::unfold(
        (Some(first), None::<Job>, false),
        move |(next, last, ended)| {
            let jobs = jobs.clone();
            async move {
                if ended {
                    return None;
                }
                let mut next = next;
                loop {
                    if let Some(job) = next.take() {
                        // A change people can see: its status or its error.
                        let seen = last
                            .as_ref()
                            .is_some_and(|l| l.status == job.status && l.error == job.error);
                        if !seen {
                            let done = matches!(job.status.as_str(), "succeeded" | "failed");
                            let event = json_event("job", &JobView::from(job.clone()))?;
                            return Some((event, (None, Some(job), done)));
                        }
                    }
                    tokio::time::sleep(JOB_EVERY).await;
                    match jobs.get(user, id).await {
                        Ok(job) => next = Some(job),
                        Err(e) => {
                            tracing::debug!(error = %e, "reading a job for its stream failed")
                        }
                    }
                }
            }
        },
    );
    Ok(studio.streams.respond(events)?.into_response())
}

/// The body of `POST /api/v1/generations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationBody {
    /// 1–1000 characters.
    #[schema(example = "a lighthouse at dusk over a calm ocean")]
    prompt: String,
    negative_prompt: Option<String>,
    /// 512, 768 or 1024 (square), or 1024×576 / 576×1024; default 768×768.
    width: Option<u32>,
    height: Option<u32>,
    /// 0–4294967295; random when absent.
    seed: Option<u64>,
    /// `procedural` (default), `openai` or `bedrock`, as configured.
    provider: Option<String>,
}

/// A generation as its owner sees it.
#[derive(Serialize, ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    job: Job,
    /// The asset the image became, once `succeeded`.
    asset_id: Option<GenerationId>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        Self {
            asset_id: job.asset_id(),
            job,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    /// Newest first, at most 50.
    items: Vec<JobView>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, StudioError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .ok_or(StudioError::KeyRequired)?;
    if key.is_empty() || key.len() > 100 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StudioError::KeyRequired);
    }
    Ok(key.to_owned())
}

/// Queue a generation. Answers 202 with the job; the same `Idempotency-Key` again answers
/// 200 with the same job and makes no second image.
#[utoipa::path(post, path = "/api/v1/generations", tag = "studio", request_body = GenerationBody,
    params(("Idempotency-Key" = String, Header, description = "required; 1–100 visible ASCII characters")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "Queued", body = JobView),
        (status = 200, description = "The job an earlier request with this key made", body = JobView),
        (status = 400, description = "No Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input, naming the field", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many generations queued or running", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create(
    State(Studio { jobs, .. }): State<Studio>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<GenerationBody>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let input = GenerationInput {
        prompt: body.prompt,
        negative_prompt: body.negative_prompt,
        width: body.width,
        height: body.height,
        seed: body.seed,
        provider: body.provider,
    };
    let request = GenerationRequest::parse(&input).map_err(StudioError::from)?;
    let created = jobs.create(principal.user_id, &key, request).await?;
    let status = if created.replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, ApiJson(JobView::from(created.job))).into_response())
}

/// A generation of the caller's: its status, the reason if it failed, its asset once done.
#[utoipa::path(get, path = "/api/v1/generations/{id}", tag = "studio",
    params(("id" = String, Path, description = "The generation's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The generation", body = JobView),
        (status = 404, description = "No such generation of the caller's", body = Problem, content_type = "application/problem+json"),
    ))]
async fn show(
    State(Studio { jobs, .. }): State<Studio>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<JobView>, Problem> {
    let id: GenerationId = id.parse().map_err(|_| StudioError::NotFound)?;
    Ok(ApiJson(jobs.get(principal.user_id, id).await?.into()))
}

/// The caller's latest generations.
#[utoipa::path(get, path = "/api/v1/generations", tag = "studio",
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, description = "Newest first", body = JobList)))]
async fn mine(
    State(Studio { jobs, .. }): State<Studio>,
    principal: Principal,
) -> Result<ApiJson<JobList>, Problem> {
    let items = jobs.mine(principal.user_id, 50).await?;
    Ok(ApiJson(JobList {
        items: items.into_iter().map(JobView::from).collect(),
    }))
}
