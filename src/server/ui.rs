//! The status page (`GET /ui`): one static HTML page, its script and its style sheet, compiled
//! into the binary. The page holds no data and needs no key to load: it asks the admin API
//! (`/admin/status`, `/admin/keys`, `/admin/stats`) with the admin key the operator types in,
//! which it keeps in the tab's `sessionStorage` only. Without admin keys the admin API is off
//! (404), and the page says so.
//!
//! Every answer is locked down: a content security policy that allows only this origin's
//! script, style sheet and admin API (no inline script, nothing external), no framing, no
//! sniffing, no referrer, and `no-cache` so a new binary's page is picked up at once.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/ui.js");
const STYLE: &str = include_str!("ui/ui.css");

/// The page's content security policy: its own script, style sheet and API, nothing else
/// (the empty `data:` icon keeps the browser from asking for `/favicon.ico`).
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /ui`.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/ui.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/ui.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `body` with its content type and the page's security headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
    .map(|(name, value)| (name, HeaderValue::from_static(value)));
    (headers, body).into_response()
}
