//! `POST /logout` (the button in the header): ends the session on the server, so the old
//! cookie stops working even if it was copied, then clears it from the browser.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use rendermart_platform::{auth, http::ClientInfo};

use super::{error_page, secure, with_cookie, CsrfOnly};
use crate::{
    chrome::{see_other, Visitor},
    form::{FormRejected, MemberForm},
    Site,
};

pub async fn submit(
    State(site): State<Site>,
    visitor: Visitor,
    client: ClientInfo,
    form: Result<MemberForm<CsrfOnly>, FormRejected>,
) -> Response {
    let clear = Some(auth::clear_session_cookie(secure(
        &client,
        site.config.cookie_secure,
    )));
    let member = match form {
        Ok(MemberForm { member, .. }) => member,
        // Nobody signed in (or a session that already ended): only the stale cookie to clear.
        Err(FormRejected::NotSignedIn(_)) => return with_cookie(see_other("/"), clear),
        Err(refused) => return refused.into_response(),
    };
    match site.identity.log_out(member.session_id).await {
        Ok(()) => with_cookie(see_other("/"), clear),
        Err(err) => error_page(visitor.chrome(), err),
    }
}
