//! keygate in actix-web 4, which is not built on tower: a middleware (`middleware::from_fn`) that
//! calls [`KeyGate::check`], and the denial answered through actix's `ResponseError`.
//!
//! `cargo run --example actix -- [--addr 127.0.0.1:3003] [--key-file PATH]`
//!
//! The middleware wraps each protected resource with the scopes that resource requires. A denial
//! becomes an `actix_web::Error` whose response carries the denial's status, every one of its
//! headers and its JSON body. A request that passes gets its [`Principal`] in the request's
//! extensions (`web::ReqData<Principal>` in the handler); the middleware holds it, and with it
//! the key's concurrency slot, until the handler has answered (a streamed body would have to
//! carry it to its end instead).
//!
//! Routes: `GET /health` (public), `GET /hello` (scope `hello:read`, answers with the caller's
//! kid), `GET /admin` (scope `admin`, which the demo key lacks). The flags and the demo key are
//! the same in the four server examples: see `examples/support/demo.rs`; the token goes to the
//! key file, whose path the example prints.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

#[path = "support/demo.rs"]
mod demo;

use std::fmt;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, Error, HttpMessage, HttpResponse, HttpServer, ResponseError, web};
use keygate::http::{ErrorBody, Realm};
use keygate::{Denial, DenialCode, KeyGate, Principal, RequiredScopes, Requirements};

const REALM: Realm<'static> = match Realm::new(demo::REALM) {
    Ok(realm) => realm,
    Err(_) => panic!("invalid realm"),
};

fn main() -> demo::Result<()> {
    // What `#[actix_web::main]` expands to, without the macros' build cost.
    actix_web::rt::System::new().block_on(serve())
}

async fn serve() -> demo::Result<()> {
    let demo = demo::start("actix", "127.0.0.1:3003")?;
    let gate = web::Data::new(demo.keys);
    let hello = RequiredScopes::new(demo::HELLO_SCOPE)?;
    let admin = RequiredScopes::new(demo::ADMIN_SCOPE)?;

    let listener = std::net::TcpListener::bind(demo.addr)?;
    demo.key.announce(listener.local_addr()?);
    HttpServer::new(move || {
        App::new()
            .app_data(gate.clone())
            .route("/health", web::get().to(|| async { "ok\n" }))
            .service(
                web::resource("/hello")
                    .wrap(from_fn(move |request, next| require_key(hello, request, next)))
                    .get(hello_handler),
            )
            .service(
                web::resource("/admin")
                    .wrap(from_fn(move |request, next| require_key(admin, request, next)))
                    .get(|| async { "welcome, admin\n" }),
            )
    })
    .workers(2)
    .listen(listener)?
    .run()
    .await?;
    Ok(())
}

/// The middleware: run the pipeline for a route requiring `scopes`, then the handler.
async fn require_key(
    scopes: RequiredScopes,
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let keys = request
        .app_data::<web::Data<KeyGate>>()
        .cloned()
        .ok_or_else(|| Denied(Denial::new(DenialCode::AuthUnavailable)))?;
    let authorization = request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    // A denial leaves through `?` as an actix `Error`; see `impl ResponseError for Denied`.
    let principal = keys.check(authorization, &Requirements::new().with_scopes(scopes)).await.map_err(Denied)?;
    request.extensions_mut().insert(principal.clone());

    let mut response = next.call(request).await?;
    for (name, value) in principal.rate_limit().iter().flat_map(keygate::limit::RateLimitStatus::headers) {
        if let Ok(value) = HeaderValue::from_str(value.as_str()) {
            response.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    // The principal is dropped here, once the handler has answered: the request is settled and
    // its concurrency slot released.
    Ok(response)
}

/// `GET /hello`: the middleware let the request through and left its [`Principal`].
async fn hello_handler(caller: web::ReqData<Principal>) -> String {
    format!("hello, {}\n", caller.id())
}

/// A denial as an actix error.
#[derive(Debug)]
struct Denied(Denial);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl ResponseError for Denied {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The denial's status, all its headers (`www-authenticate`, `retry-after`,
    /// `retry-after-ms`, `x-ratelimit-*`) and its OpenAI-compatible JSON body.
    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        for header in self.0.headers().with_realm(REALM) {
            response.append_header((header.name(), header.value().to_string()));
        }
        response.content_type(ErrorBody::CONTENT_TYPE).body(self.0.body().to_string())
    }
}
