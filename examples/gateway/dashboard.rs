//! The operator's dashboard at `/dashboard`: static files compiled into the gateway (plain
//! JavaScript modules, no build step, nothing loaded from elsewhere), served without a key
//! under a strict Content-Security-Policy. The page asks for a key that may manage keys, keeps
//! it in the tab's `sessionStorage` only, and does everything through the management API, by
//! the same rules as any other client.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Scripts and styles from this origin only; no inline code, no frames, no form posts, and
/// API calls to this origin only.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The files: path, media type, contents.
const FILES: &[(&str, &str, &str)] = &[
    ("/dashboard/app.js", "text/javascript; charset=utf-8", include_str!("dashboard/app.js")),
    ("/dashboard/api.js", "text/javascript; charset=utf-8", include_str!("dashboard/api.js")),
    ("/dashboard/charts.js", "text/javascript; charset=utf-8", include_str!("dashboard/charts.js")),
    ("/dashboard/style.css", "text/css; charset=utf-8", include_str!("dashboard/style.css")),
];

const INDEX: &str = include_str!("dashboard/index.html");

/// The dashboard's routes, for any router state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/dashboard", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route("/dashboard/", get(|| async { Redirect::permanent("/dashboard") }));
    for &(path, media_type, body) in FILES {
        router = router.route(path, get(move || async move { file(media_type, body) }));
    }
    router
}

fn file(media_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
