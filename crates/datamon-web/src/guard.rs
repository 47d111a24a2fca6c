//! What every request passes: read-only methods, the `Host` check on loopback, the token, and
//! the security headers every response carries.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::State as AppState;

/// The name of the cookie that carries the token.
pub(crate) const TOKEN_COOKIE: &str = "datamon_token";

/// Scripts and styles from this server only, no inline script, no plugins, no framing; images
/// from this server (previews) only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn presented_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> (Option<&'a str>, bool) {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return (Some(t), false);
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for c in cookies.split(';') {
            if let Some(t) = c
                .trim()
                .strip_prefix(TOKEN_COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                return (Some(t), false);
            }
        }
    }
    let from_query = query
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("token="));
    (from_query, from_query.is_some())
}

/// Whether `Host` names loopback (`localhost`, `127.x.y.z`, `[::1]`, with any port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host: only a local client gets here on loopback.
        return true;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The middleware.
pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = check(&state, req, next).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Downloads set their own, stricter policy.
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn check(state: &AppState, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            kind: "InvalidInput",
            message: "this server is read-only: only GET and HEAD are served".into(),
        }
        .into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if state.loopback && !loopback_host(req.headers()) {
        return ApiError {
            status: StatusCode::FORBIDDEN,
            kind: "PermissionDenied",
            message: "this server answers only requests addressed to loopback".into(),
        }
        .into_response();
    }
    let mut set_cookie = None;
    if let Some(expected) = &state.token {
        let (given, from_query) = presented_token(req.headers(), req.uri().query());
        if !given.is_some_and(|g| same(g.as_bytes(), expected.as_bytes())) {
            let mut r = ApiError {
                status: StatusCode::UNAUTHORIZED,
                kind: "PermissionDenied",
                message: "a valid token is required".into(),
            }
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"datamon\""),
            );
            return r;
        }
        if from_query {
            set_cookie = HeaderValue::from_str(&format!(
                "{TOKEN_COOKIE}={expected}; Path=/; HttpOnly; SameSite=Strict"
            ))
            .ok();
        }
    }
    let mut response = next.run(req).await;
    if let Some(c) = set_cookie {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_tokens() {
        let mut h = HeaderMap::new();
        for (host, ok) in [
            ("localhost:8080", true),
            ("127.0.0.1:1", true),
            ("[::1]:80", true),
            ("evil.example:8080", false),
            ("127.0.0.1.evil.example", false),
        ] {
            h.insert(header::HOST, HeaderValue::from_static(host));
            assert_eq!(loopback_host(&h), ok, "{host}");
        }
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; datamon_token=s3cret"),
        );
        assert_eq!(presented_token(&h, None), (Some("s3cret"), false));
        assert_eq!(
            presented_token(&HeaderMap::new(), Some("x=1&token=t")),
            (Some("t"), true)
        );
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
