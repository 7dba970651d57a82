//! The tower layer in front of a tonic gRPC server (`Server::builder().layer(..)`), called by a
//! tonic client over loopback HTTP/2: a denial reaches the client as the gRPC status of its
//! class (`Unauthenticated`, `PermissionDenied`, `ResourceExhausted`) with the stable code in
//! the message; a request that passes reaches the service, which finds the caller's
//! `Principal` in the request's extensions.
//!
//! The messages are opaque bytes (a five-line codec), so no protobuf code generation is needed.
#![cfg(feature = "tower")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use keygate::format::SelectorFormat;
use keygate::limit::Limiter;
use keygate::secret::{PepperId, Peppers};
use keygate::tower::KeyGateLayer;
use keygate::{
    Gate, KeyId, KeyKind, KeyRecord, KeyStatus, KeyStore, MemoryLimitStore, MemoryStore, Pepper, RequiredScopes,
    Scopes, Timestamp, Verifier,
};
use keygate::{Principal, Requirements};
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};

type TestGate = Gate<MemoryStore, Arc<MemoryLimitStore>>;

const HELLO: &str = "/keygate.test.Greeter/Hello";
const ADMIN: &str = "/keygate.test.Greeter/Admin";

/// Messages as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        Self
    }
    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A gRPC service with two unary methods that answer with the caller's kid.
#[derive(Debug, Clone, Copy)]
struct Greeter;

impl NamedService for Greeter {
    const NAME: &'static str = "keygate.test.Greeter";
}

impl tower::Service<http::Request<Body>> for Greeter {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let method = tower::service_fn(|request: tonic::Request<Bytes>| async move {
                // The layer put the caller's Principal into the extensions; tonic keeps them.
                let caller = request.extensions().get::<Principal>().ok_or_else(|| Status::internal("no principal"))?;
                Ok::<_, Status>(tonic::Response::new(Bytes::from(format!("hello, {}", caller.id()))))
            });
            Ok(tonic::server::Grpc::new(RawCodec).unary(method, request).await)
        })
    }
}

fn gate() -> Arc<TestGate> {
    let verifier = Verifier::new(
        SelectorFormat::new("aistats").unwrap(),
        Peppers::new(Pepper::new(PepperId(1), &[9; 32]).unwrap()),
    );
    Arc::new(Gate::new(verifier, MemoryStore::new(), Limiter::new(Arc::new(MemoryLimitStore::new()))))
}

fn issue(gate: &TestGate, change: impl FnOnce(&mut KeyRecord)) -> (String, KeyId) {
    let (key, mut record) = gate.verifier().issue(&mut keygate::OsRng, KeyKind::STANDARD, Timestamp::now()).unwrap();
    record.scopes = Scopes::parse("hello:read").unwrap();
    change(&mut record);
    gate.store().insert(record).unwrap();
    (key.token().expose_secret().to_owned(), key.id())
}

/// Serves the layered Greeter on a free loopback port.
async fn serve(gate: Arc<TestGate>) -> SocketAddr {
    let hello = RequiredScopes::new("hello:read").unwrap();
    let admin = RequiredScopes::new("admin").unwrap();
    let classify = move |request: &http::Request<Body>| match request.uri().path() {
        ADMIN => Requirements::new().with_scopes(admin),
        _ => Requirements::new().with_scopes(hello),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .layer(KeyGateLayer::new(gate, classify))
        .add_service(Greeter)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    addr
}

async fn call(channel: &Channel, path: &'static str, token: Option<&str>) -> Result<tonic::Response<Bytes>, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let mut request = tonic::Request::new(Bytes::from_static(b"hi"));
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client.unary(request, PathAndQuery::from_static(path), RawCodec).await
}

fn expect_status(outcome: Result<tonic::Response<Bytes>, Status>, code: Code, denial: &str) -> Status {
    let status = outcome.unwrap_err();
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().starts_with(&format!("{denial}: ")), "{status:?}");
    status
}

#[tokio::test]
async fn grpc_clients_get_grpc_statuses_and_the_service_gets_the_principal() {
    let gate = gate();
    let (token, kid) = issue(&gate, |r| r.rate_limit.requests_per_minute = Some(2));
    let addr = serve(Arc::clone(&gate)).await;
    let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();

    let missing = expect_status(call(&channel, HELLO, None).await, Code::Unauthenticated, "missing_api_key");
    assert_eq!(missing.metadata().get("www-authenticate").unwrap(), "Bearer");
    let last = if token.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}{last}", &token[..token.len() - 1]);
    expect_status(call(&channel, HELLO, Some(&tampered)).await, Code::Unauthenticated, "invalid_api_key");
    expect_status(call(&channel, ADMIN, Some(&token)).await, Code::PermissionDenied, "insufficient_scope");

    for remaining in ["1", "0"] {
        let response = call(&channel, HELLO, Some(&token)).await.unwrap();
        assert_eq!(response.metadata().get("x-ratelimit-remaining-requests").unwrap(), remaining);
        assert_eq!(response.into_inner(), format!("hello, {kid}"));
    }
    let limited = expect_status(call(&channel, HELLO, Some(&token)).await, Code::ResourceExhausted, "rate_limited");
    let retry_after: u64 = limited.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");

    // Revocation is seen by the very next call.
    let (other, id) = issue(&gate, |_| {});
    call(&channel, HELLO, Some(&other)).await.unwrap();
    let mut record = (*KeyStore::get(&gate.store(), &id).unwrap().unwrap()).clone();
    record.status = KeyStatus::Revoked;
    gate.store().replace(record.revision, record).unwrap();
    expect_status(call(&channel, HELLO, Some(&other)).await, Code::Unauthenticated, "revoked_api_key");
}
