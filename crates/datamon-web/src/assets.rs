//! The UI's files, embedded in the binary: one page (`index.html`) for every UI URL, which
//! loads `app.js` and `style.css` and renders the page its URL names from the JSON API.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../assets/index.html");
const APP: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

fn with_type(body: &'static str, mime: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /assets/{name}`
pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => with_type(APP, "text/javascript; charset=utf-8"),
        "style.css" => with_type(STYLE, "text/css; charset=utf-8"),
        _ => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Every other `GET`: the page, which renders what its URL names.
pub(crate) async fn page() -> Response {
    with_type(INDEX, "text/html; charset=utf-8")
}
