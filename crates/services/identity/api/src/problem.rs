//! `IdentityError` at the HTTP edge, both ways: the one mapping to problem+json (used by
//! identity's public and internal routes), and its inverse for [`crate::RemoteIdentity`],
//! so an error crosses a process boundary unchanged.

use http::StatusCode;
use rendermart_platform::{
    client::{RemoteError, RemoteProblem},
    http::Problem,
};

use crate::{IdentityError, Invalid};

impl From<IdentityError> for Problem {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::Invalid(invalid) => {
                Problem::validation(invalid.to_string()).field(&invalid.field, invalid.message)
            }
            IdentityError::EmailTaken => Problem::conflict(
                "email-taken",
                "Email already registered",
                "An account with this email already exists. Log in instead.",
            ),
            IdentityError::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "Invalid credentials",
            )
            .detail("Email or password is incorrect."),
            IdentityError::RateLimited { retry_after_secs } => {
                Problem::rate_limited(retry_after_secs)
            }
            IdentityError::NotFound => Problem::not_found("Not found."),
            IdentityError::Forbidden(detail) => Problem::forbidden(detail),
            IdentityError::Busy { retry_after_secs } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Too busy",
            )
            .detail(format!(
                "Too many sign-ins are being checked right now. Try again in {retry_after_secs} seconds."
            ))
            .retry_after(retry_after_secs),
            IdentityError::Unavailable(why) => {
                tracing::warn!(%why, "identity unavailable");
                Problem::unavailable(2, "Accounts are unavailable right now. Try again shortly.")
            }
            IdentityError::Internal(e) => Problem::internal(&format!("{e:#}")),
        }
    }
}

/// A storage failure of the service: the database being unreachable is "unavailable" (503,
/// try again), anything else a bug (500).
impl From<sqlx::Error> for IdentityError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                IdentityError::Unavailable(format!("database: {e}"))
            }
            e => IdentityError::Internal(e.into()),
        }
    }
}

impl From<RemoteError> for IdentityError {
    fn from(err: RemoteError) -> Self {
        match err {
            RemoteError::Unavailable { reason, .. } => IdentityError::Unavailable(reason),
            RemoteError::Problem { problem, .. } => from_problem(problem),
        }
    }
}

fn from_problem(p: RemoteProblem) -> IdentityError {
    let retry_after_secs = p.retry_after.unwrap_or(1);
    let slug = p.slug().to_owned();
    match slug.as_str() {
        "validation" => match p.errors.into_iter().next() {
            Some(f) => IdentityError::Invalid(Invalid {
                field: f.field,
                message: f.message,
            }),
            None => IdentityError::Invalid(Invalid::new(
                "request",
                p.detail.unwrap_or_else(|| "is not valid".into()),
            )),
        },
        "email-taken" => IdentityError::EmailTaken,
        "invalid-credentials" => IdentityError::InvalidCredentials,
        "rate-limited" => IdentityError::RateLimited { retry_after_secs },
        "not-found" => IdentityError::NotFound,
        "forbidden" => IdentityError::Forbidden(p.detail.unwrap_or_default()),
        "busy" => IdentityError::Busy { retry_after_secs },
        "unavailable" => IdentityError::Unavailable(p.detail.unwrap_or_default()),
        other => IdentityError::Internal(anyhow::anyhow!(
            "identity answered {} {other}: {}",
            p.status,
            p.detail.unwrap_or(p.title)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum_response::body_of;

    /// What a remote caller receives for `err`: the problem identity's routes send.
    async fn through_the_wire(err: IdentityError) -> IdentityError {
        let problem = Problem::from(err);
        let status = problem.status();
        let retry_after = {
            use axum::response::IntoResponse;
            let response = problem.clone().into_response();
            response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        let mut remote: RemoteProblem = serde_json::from_slice(&body_of(problem).await).unwrap();
        remote.status = status.as_u16();
        remote.retry_after = retry_after;
        RemoteError::Problem {
            service: "identity",
            problem: remote,
        }
        .into()
    }

    mod axum_response {
        use axum::response::IntoResponse;
        pub async fn body_of(p: rendermart_platform::http::Problem) -> Vec<u8> {
            axum::body::to_bytes(p.into_response().into_body(), 1 << 16)
                .await
                .unwrap()
                .to_vec()
        }
    }

    #[tokio::test]
    async fn every_error_crosses_the_wire_unchanged() {
        let invalid = Invalid::new("email", "must look like name@example.com");
        assert!(matches!(
            through_the_wire(IdentityError::Invalid(invalid.clone())).await,
            IdentityError::Invalid(i) if i == invalid
        ));
        assert!(matches!(
            through_the_wire(IdentityError::EmailTaken).await,
            IdentityError::EmailTaken
        ));
        assert!(matches!(
            through_the_wire(IdentityError::InvalidCredentials).await,
            IdentityError::InvalidCredentials
        ));
        assert!(matches!(
            through_the_wire(IdentityError::RateLimited {
                retry_after_secs: 42
            })
            .await,
            IdentityError::RateLimited {
                retry_after_secs: 42
            }
        ));
        assert!(matches!(
            through_the_wire(IdentityError::NotFound).await,
            IdentityError::NotFound
        ));
        assert!(matches!(
            through_the_wire(IdentityError::Forbidden("use a session".into())).await,
            IdentityError::Forbidden(d) if d == "use a session"
        ));
        assert!(matches!(
            through_the_wire(IdentityError::Busy {
                retry_after_secs: 3
            })
            .await,
            IdentityError::Busy {
                retry_after_secs: 3
            }
        ));
        assert!(matches!(
            through_the_wire(IdentityError::Unavailable("db down".into())).await,
            IdentityError::Unavailable(_)
        ));
        assert!(matches!(
            through_the_wire(IdentityError::Internal(anyhow::anyhow!("boom"))).await,
            IdentityError::Internal(_)
        ));
    }
}
