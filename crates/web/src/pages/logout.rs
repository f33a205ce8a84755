//! `POST /logout` (the button in the header): ends the session on the server, so the old
//! cookie stops working even if it was copied, then clears it from the browser.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use rendermart_platform::{auth, http::ClientInfo};

use super::{unexpected, with_cookie, CsrfOnly};
use crate::{
    chrome::{see_other, ErrorPage, Visitor},
    form::HtmlForm,
    Site,
};

pub async fn submit(
    State(site): State<Site>,
    visitor: Visitor,
    client: ClientInfo,
    HtmlForm(form): HtmlForm<CsrfOnly>,
) -> Response {
    let secure = auth::wants_secure_cookies(&client, site.config.cookie_secure);
    let clear = Some(auth::clear_session_cookie(secure));
    let chrome = visitor.chrome();
    // Nobody signed in (or a session that already ended): only the stale cookie to clear.
    let Some(member) = visitor.0 else {
        return with_cookie(see_other("/"), clear);
    };
    if !member.csrf_matches(&form.csrf_token) {
        return ErrorPage::session_csrf(chrome).into_response();
    }
    match site.identity.log_out(member.session_id).await {
        Ok(()) => with_cookie(see_other("/"), clear),
        Err(err) => unexpected(chrome, err),
    }
}
