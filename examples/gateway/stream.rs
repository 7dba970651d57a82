//! A streamed reply: server-sent events paced like a model writing, as an HTTP body.
//!
//! The body charges the reply when it sends its last event, before it ends: the tower layer
//! reconciles the key's limits with the reported usage at the end of the body, and releases the
//! request's concurrency slot then. A client that hangs up early drops the body, and pays for
//! the tokens sent so far.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::Sleep;

use crate::billing::Meter;

/// The events of one reply, sent one by one with a pause between them.
pub(crate) struct EventStream {
    /// Each event with the completion tokens it carries.
    events: std::vec::IntoIter<(String, u32)>,
    pause: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    meter: Meter,
}

impl EventStream {
    pub(crate) fn new(events: Vec<(String, u32)>, pause: Duration, meter: Meter) -> Self {
        Self { events: events.into_iter(), pause, sleep: None, meter }
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if let Some(sleep) = &mut this.sleep {
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        let Some((event, tokens)) = this.events.next() else {
            this.meter.charge();
            return Poll::Ready(None);
        };
        this.meter.add(tokens);
        if this.events.len() == 0 {
            // The last event: charge before the body ends.
            this.meter.charge();
        } else if !this.pause.is_zero() {
            this.sleep = Some(Box::pin(tokio::time::sleep(this.pause)));
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }
}
