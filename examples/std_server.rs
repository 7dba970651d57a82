//! keygate in a server with no framework and no async runtime: std's `TcpListener`, a small pool
//! of threads, a bounded HTTP/1.1 parser, [`Gate::check`] over a [`MemoryStore`], and denials
//! written with [`Denial::headers`] and [`Denial::body`].
//!
//! `cargo run --example std_server -- [--addr 127.0.0.1:3004] [--key-file PATH]`
//!
//! A teaching example, kept correct and bounded rather than fast: one request per connection
//! (`connection: close`), at most 8 KiB of request line and headers (else 431), 64 headers (431),
//! a 64 KiB body (413), no `Transfer-Encoding` (501), 10 s to send the head (408) and for each
//! read or write; anything malformed gets 400, and nothing a client sends can make it panic.
//! Use a real HTTP server in production.
//!
//! Routes: `GET /health` (public), `GET /hello` (scope `hello:read`, answers with the caller's
//! kid), `GET /admin` (scope `admin`, which the demo key lacks). The flags and the demo key are
//! the same in the four server examples: see `examples/support/demo.rs`; the token goes to the
//! key file, whose path the example prints.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

#[path = "support/demo.rs"]
mod demo;

use std::fmt::Display;
use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use keygate::http::{ErrorBody, Realm};
use keygate::limit::MemoryLimitStore;
use keygate::{Denial, Gate, MemoryStore, RequiredScopes, Requirements, Timestamp};

const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;
const MAX_BODY: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);
const WORKERS: usize = 8;

type DemoGate = Gate<MemoryStore, Arc<MemoryLimitStore>>;

fn main() -> demo::Result<()> {
    let demo = demo::start("std_server", "127.0.0.1:3004")?;
    let gate = Arc::clone(demo.keys.gate());
    let scopes = [RequiredScopes::new(demo::HELLO_SCOPE)?, RequiredScopes::new(demo::ADMIN_SCOPE)?];
    let realm = Realm::new(demo::REALM)?;

    let listener = TcpListener::bind(demo.addr)?;
    demo.key.announce(listener.local_addr()?);
    // A fixed pool: each worker accepts on its own handle of the listener and serves one
    // connection at a time, so a flood of connections waits in the backlog instead of
    // spawning threads without bound.
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (listener, gate) = (listener.try_clone()?, Arc::clone(&gate));
        workers.push(thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // An error here means the client went away: nothing left to answer.
                let _ = serve(&gate, &scopes, realm, stream);
            }
        }));
    }
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

/// The parts of a request the routes need.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// Why a request is not served: a status to answer with, or an I/O error (no answer).
enum Refusal {
    Status(u16),
    Io(io::Error),
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn serve(gate: &DemoGate, scopes: &[RequiredScopes; 2], realm: Realm<'_>, stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut out = BufWriter::new(&stream);
    let request = match read_request(&mut &stream) {
        Ok(request) => request,
        Err(Refusal::Status(status)) => {
            write_response(&mut out, status, "text/plain", no_headers(), "")?;
            // A lingering close: the client may still be sending what was refused, and closing
            // with unread input resets the connection, which can destroy the response in flight.
            stream.shutdown(Shutdown::Write)?;
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            io::copy(&mut (&stream).take(MAX_BODY as u64), &mut io::sink())?;
            return Ok(());
        }
        Err(Refusal::Io(e)) => return Err(e),
    };
    let required = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/health") => return write_response(&mut out, 200, "text/plain", no_headers(), "ok\n"),
        ("GET", "/hello") => &scopes[0],
        ("GET", "/admin") => &scopes[1],
        (_, "/health" | "/hello" | "/admin") => return write_response(&mut out, 405, "text/plain", no_headers(), ""),
        _ => return write_response(&mut out, 404, "text/plain", no_headers(), ""),
    };

    let attrs = Requirements::new().with_scopes(*required);
    let authorization = request.authorization.as_deref().map(str::as_bytes);
    match gate.check(authorization, &attrs, Timestamp::now()) {
        Err(denial) => write_denial(&mut out, &denial, realm),
        Ok(pass) => {
            let body = match request.path.as_str() {
                "/admin" => "welcome, admin\n".to_owned(),
                _ => format!("hello, {}\n", pass.authorized().id()),
            };
            let headers = pass.rate_limit().into_iter().flat_map(|status| status.headers());
            write_response(&mut out, 200, "text/plain", headers, &body)
            // `pass` is dropped here, after the response is written: the slot is released.
        }
    }
}

/// A denial: its status, its headers and its JSON body. The body is written into a stack buffer
/// with [`keygate::http::write_into`] (as a server without a heap would) to know its length first.
fn write_denial(out: &mut impl Write, denial: &Denial, realm: Realm<'_>) -> io::Result<()> {
    let mut buf = [0u8; ErrorBody::MAX_LEN];
    let body = keygate::http::write_into(&mut buf, denial.body()).map_err(io::Error::other)?;
    let headers = denial.headers().with_realm(realm).map(|header| (header.name(), header.value()));
    write_response(out, denial.status(), ErrorBody::CONTENT_TYPE, headers, body)
}

fn write_response<V: Display>(
    out: &mut impl Write,
    status: u16,
    content_type: &str,
    headers: impl IntoIterator<Item = (&'static str, V)>,
    body: &str,
) -> io::Result<()> {
    write!(out, "HTTP/1.1 {status} {}\r\n", reason(status))?;
    write!(out, "content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len())?;
    for (name, value) in headers {
        write!(out, "{name}: {value}\r\n")?;
    }
    write!(out, "\r\n{body}")?;
    out.flush()
}

fn no_headers() -> [(&'static str, &'static str); 0] {
    []
}

const fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Reads one request: the request line and headers (bounded), then the body its
/// `content-length` announces (bounded), which the routes ignore but a server must consume.
fn read_request(input: &mut impl Read) -> Result<Request, Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + TIMEOUT;
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Refusal::Status(431));
        }
        if Instant::now() > deadline {
            return Err(Refusal::Status(408));
        }
        match input.read(&mut chunk)? {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if head_end > MAX_HEAD {
        return Err(Refusal::Status(431));
    }
    let bad = || Refusal::Status(400);
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if !is_token(method) || !target.starts_with('/') || !visible(target) || !matches!(version, "HTTP/1.1" | "HTTP/1.0")
    {
        return Err(bad());
    }

    let (mut authorization, mut content_length) = (None, None);
    for (index, line) in lines.enumerate() {
        if index == MAX_HEADERS {
            return Err(Refusal::Status(431));
        }
        // A name is a token: this also refuses obsolete line folding (a line starting with a space).
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        let value = value.trim_matches([' ', '\t']);
        if !is_token(name) || !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(bad());
        }
        if name.eq_ignore_ascii_case("authorization") {
            // Two Authorization headers are ambiguous: refuse rather than pick one.
            if authorization.replace(value.to_owned()).is_some() {
                return Err(bad());
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // Digits only (`parse` would take a sign); a repeated header must agree.
            let length: usize =
                value.parse().ok().filter(|_| value.bytes().all(|b| b.is_ascii_digit())).ok_or_else(bad)?;
            if content_length.replace(length).is_some_and(|earlier| earlier != length) {
                return Err(bad());
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked bodies are not implemented here; guessing at them invites request smuggling.
            return Err(Refusal::Status(501));
        }
    }

    let length = content_length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(Refusal::Status(413));
    }
    // The routes ignore the body, but it must be read: see the lingering close in `serve`.
    let buffered = (buf.len() - head_end - 4).min(length);
    let unread = u64::try_from(length - buffered).unwrap_or(u64::MAX);
    if io::copy(&mut input.take(unread), &mut io::sink())? < unread {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Request { method: method.to_owned(), path: path.to_owned(), authorization })
}

/// An HTTP token (RFC 9110 §5.6.2): a method or a header name.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
