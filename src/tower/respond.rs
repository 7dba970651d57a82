//! What a refused request gets: the denial's status, headers and JSON body, or for a gRPC
//! request a trailers-only response with its `grpc-status`; and the headers a passing one gets.

use alloc::string::{String, ToString};
use alloc::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::BodyRefused;
use crate::http::{ErrorBody, Realm};
use crate::limit::RateLimitStatus;
use crate::{Denial, DenialCode};

/// Changes the response for a denial before it is sent: its status, headers or body (see
/// [`KeyGateLayer::on_denial`](super::KeyGateLayer::on_denial)).
pub type DenialHook = Arc<dyn Fn(&Denial, &mut Response<Bytes>) + Send + Sync>;

/// The response for a denial: its status, headers and JSON body, or for a gRPC request a
/// trailers-only response (HTTP 200, `grpc-status`, `grpc-message` starting with the stable code,
/// no body).
#[must_use]
pub fn denial_response(denial: &Denial, realm: Option<&'static str>, grpc: bool) -> Response<Bytes> {
    let mut headers = http::HeaderMap::new();
    let mut all = denial.headers();
    if let Some(realm) = realm.and_then(|r| Realm::new(r).ok()) {
        all = all.with_realm(realm);
    }
    for h in all {
        if let Ok(value) = HeaderValue::from_str(&h.value().to_string()) {
            headers.append(HeaderName::from_static(h.name()), value);
        }
    }
    let (status, body) = if grpc {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static(grpc_status(denial.code())));
        if let Ok(message) = HeaderValue::from_str(&grpc_message(denial)) {
            headers.insert("grpc-message", message);
        }
        (StatusCode::OK, Bytes::new())
    } else {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ErrorBody::CONTENT_TYPE));
        let status = StatusCode::from_u16(denial.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        (status, Bytes::from(denial.body().to_string()))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The response for a body refused before the policy stage.
pub(super) fn body_refused(refused: BodyRefused) -> Response<Bytes> {
    let (status, code, message) = refused.answer();
    let body = alloc::format!(
        r#"{{"error":{{"message":"{message}","type":"invalid_request_error","code":"{code}","param":null}}}}"#
    );
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ErrorBody::CONTENT_TYPE));
    response
}

/// The `x-ratelimit-*` headers of an admission, on a successful response.
pub(super) fn insert_rate_limit_headers(headers: &mut http::HeaderMap, status: RateLimitStatus) {
    for (name, value) in status.headers() {
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// Whether a request is gRPC, to be denied with a `grpc-status`: a `POST` whose one content type
/// is `application/grpc[+codec]` over HTTP/2 (gRPC runs on nothing older), or
/// `application/grpc-web[-text][+codec]` over any version. Media types compare in any case.
pub(super) fn is_grpc<B>(request: &Request<B>) -> bool {
    if request.method() != Method::POST {
        return false;
    }
    let Some(rest) =
        media_type(request.headers()).and_then(|(essence, _)| strip_prefix_ignore_case(essence, "application/grpc"))
    else {
        return false;
    };
    let codec = |rest: &str| rest.is_empty() || rest.starts_with('+');
    if codec(rest) {
        return matches!(request.version(), Version::HTTP_2 | Version::HTTP_3);
    }
    let web = strip_prefix_ignore_case(rest, "-web").map(|web| strip_prefix_ignore_case(web, "-text").unwrap_or(web));
    web.is_some_and(codec)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) { text.get(prefix.len()..) } else { None }
}

/// The media type of a request's `Content-Type` (trimmed, parameters apart) and its parameters;
/// `None` when there is no such header, more than one, or one that is not visible ASCII.
pub(super) fn media_type(headers: &http::HeaderMap) -> Option<(&str, &str)> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (essence, parameters) = value.split_once(';').unwrap_or((value, ""));
    Some((essence.trim_matches([' ', '\t']), parameters))
}

/// The gRPC status code for a denial (grpc/doc/statuscodes.md).
const fn grpc_status(code: DenialCode) -> &'static str {
    match code.status() {
        401 => "16", // UNAUTHENTICATED
        403 => "7",  // PERMISSION_DENIED
        429 => "8",  // RESOURCE_EXHAUSTED
        _ => "14",   // UNAVAILABLE
    }
}

/// `grpc-message`: the stable code and the fixed message, percent-encoded as gRPC requires.
fn grpc_message(denial: &Denial) -> String {
    let text = alloc::format!("{}: {}", denial.code(), denial.code().message());
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&alloc::format!("%{b:02X}"));
        }
    }
    out
}
