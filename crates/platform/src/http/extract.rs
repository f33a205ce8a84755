//! `ApiJson<T>`: axum's `Json` whose rejections are problem+json with a useful sentence
//! (which field, what type, where the syntax broke) instead of text/plain; and `ClientIp`,
//! the client's address as the edge resolved it.

use axum::{
    extract::{rejection::JsonRejection, FromRequest, Request},
    response::{IntoResponse, Response},
    Json,
};
use http::StatusCode;
use serde::{de::DeserializeOwned, Serialize};

use super::{ClientInfo, Problem};

/// JSON in (with problem+json rejections) and out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    /// A request body is a JSON object: serde would otherwise read `[100]` as a struct
    /// whose first field is 100.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE)
                    .detail("The request body is larger than this endpoint accepts."))
            }
            Err(e) => return Err(Problem::bad_request(clean(e.body_text()))),
        };
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b == b'[' || b.is_ascii_digit() || *b == b'"' || *b == b'-') {
            return Err(Problem::validation("The body must be a JSON object."));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn unsupported_media_type() -> Problem {
    Problem::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .detail("Send the body as JSON with `Content-Type: application/json`.")
}

/// `application/json` or any `application/*+json`, as axum's `Json` accepts.
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(mime) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
    else {
        return false;
    };
    let mime = mime.trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde_path_to_error's message names the field: "missing field `email`",
            // "display_name: invalid type: integer `3`, expected a string".
            Problem::validation(clean(e.body_text()))
        }
        JsonRejection::JsonSyntaxError(e) => Problem::bad_request(format!(
            "The body is not valid JSON: {}",
            clean(e.body_text())
        )),
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE)
                .detail("The request body is larger than this endpoint accepts.")
        }
        other => Problem::bad_request(clean(other.body_text())),
    }
}

/// axum prefixes its messages with "Failed to deserialize the JSON body into the target type: ".
fn clean(text: String) -> String {
    text.split_once(": ")
        .filter(|(head, _)| head.starts_with("Failed to"))
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or(text)
}

/// The client's address, as the edge resolved it ([`ClientInfo`]): the TCP peer, or, when
/// the peer is a trusted proxy, the client it forwarded for. `None` only without connect
/// info (a router tested in process).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let info =
            <ClientInfo as axum::extract::FromRequestParts<S>>::from_request_parts(parts, state)
                .await?;
        Ok(Self(info.ip))
    }
}
