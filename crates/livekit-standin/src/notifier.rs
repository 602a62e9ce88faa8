//! Webhook delivery as livekit-server does it: protocol v1.50
//! `webhook/notifier.go` (`DefaultNotifier`), `resource_url_notifier.go`,
//! `resource_queue.go`, over hashicorp `go-retryablehttp` v0.7.8.
//!
//! - Each event gets its `id` (`EV_` + 12 base57 characters, `guid.New`) and
//!   `createdAt` (unix seconds) once, when it is raised (`NotifyEvent`).
//! - Per URL, one FIFO queue per room (the event's key: the room name, or
//!   for egress events the egress id), each
//!   with one worker: a room's events reach a URL in order, rooms go in
//!   parallel. URLs are queued in configuration order, and the first URL
//!   whose queue refuses an event (it already holds `max_depth` waiting
//!   events) ends the event's queueing: later URLs never see it
//!   (`DefaultNotifier.QueueNotify` returns at the first error).
//! - A worker drops (logs) an event that waited longer than `max_age`.
//! - A send: body and token made once, then up to 5 attempts; after a
//!   connection error, 429 or 5xx other than 501 it waits 1, 2, 4, 8 s
//!   (`DefaultBackoff`; a 429 or 503 with `Retry-After: N` waits N s
//!   instead). Any other status is final. There is no response timeout
//!   (a receiver that never answers holds its room's queue), the connect
//!   timeout is Go's dialer's 30 s, and the response body is ignored.
//!
//! Not reproduced: redirects (Go's client follows them; here a 3xx is a
//! final answer), HTTPS URLs (refused), `Retry-After` as an HTTP date, the
//! event filters (`filter_params`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use livekit_protocol as proto;
use tokio::sync::watch;

use crate::webhook::{WEBHOOK_CONTENT_TYPE, WEBHOOK_USER_AGENT, WebhookDelivery, WebhookOutcome};
use crate::{lock, state, webhook};

/// `DefaultResourceURLNotifierConfig`.
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_MAX_DEPTH: usize = 200;
/// `retryablehttp.NewClient`: `RetryMax` 4, `RetryWaitMin` 1 s.
const MAX_ATTEMPTS: u32 = 5;
/// `cleanhttp.DefaultPooledTransport`'s dialer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the notifier behaves; see [`crate::StandInConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) api_key: String,
    pub(crate) api_secret: String,
    pub(crate) max_age: Duration,
    pub(crate) max_depth: usize,
    /// The backoff unit: 1 s on a real server (a test knob).
    pub(crate) retry_unit: Duration,
}

/// An event ready to send: encoded once for every URL and attempt.
#[derive(Debug)]
struct Prepared {
    name: String,
    id: String,
    room: String,
    body: Bytes,
}

struct Queued {
    event: Arc<Prepared>,
    queued_at: Instant,
}

/// `(url, room)`: one queue and one worker each.
type QueueKey = (String, String);

struct DropRule {
    event: Option<String>,
    remaining: usize,
}

pub(crate) struct Notifier {
    settings: Settings,
    urls: Mutex<Vec<String>>,
    /// A queue is in the map exactly while its worker runs.
    queues: Mutex<HashMap<QueueKey, VecDeque<Queued>>>,
    drop_rules: Mutex<Vec<DropRule>>,
    deliveries: Mutex<Vec<WebhookDelivery>>,
    /// Bumped on every recorded delivery, for [`Notifier::wait_for`].
    delivery_count: watch::Sender<u64>,
    recording: AtomicBool,
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl Notifier {
    /// Must be called within a Tokio runtime: the workers run there.
    pub(crate) fn new(settings: Settings, urls: Vec<String>) -> Arc<Notifier> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        // Go writes header names in canonical form (Content-Type)
        let client = Client::builder(TokioExecutor::new()).http1_title_case_headers(true).build(connector);
        Arc::new(Notifier {
            settings: Settings {
                max_age: if settings.max_age.is_zero() { DEFAULT_MAX_AGE } else { settings.max_age },
                max_depth: if settings.max_depth == 0 { DEFAULT_MAX_DEPTH } else { settings.max_depth },
                ..settings
            },
            urls: Mutex::new(urls),
            queues: Mutex::new(HashMap::new()),
            drop_rules: Mutex::new(Vec::new()),
            deliveries: Mutex::new(Vec::new()),
            delivery_count: watch::channel(0).0,
            recording: AtomicBool::new(true),
            client,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    pub(crate) fn set_urls(&self, urls: Vec<String>) {
        *lock(&self.urls) = urls;
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        lock(&self.urls).clone()
    }

    pub(crate) fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    pub(crate) fn drop_next(&self, event: Option<&str>, count: usize) {
        if count > 0 {
            lock(&self.drop_rules).push(DropRule { event: event.map(str::to_owned), remaining: count });
        }
    }

    pub(crate) fn deliveries(&self) -> Vec<WebhookDelivery> {
        lock(&self.deliveries).clone()
    }

    pub(crate) fn clear_deliveries(&self) {
        lock(&self.deliveries).clear();
    }

    /// Waits until `done` holds for the deliveries recorded so far, and
    /// returns them.
    pub(crate) async fn wait_for(&self, done: impl Fn(&[WebhookDelivery]) -> bool) -> Vec<WebhookDelivery> {
        let mut bumped = self.delivery_count.subscribe();
        loop {
            {
                let deliveries = lock(&self.deliveries);
                if done(&deliveries) {
                    return deliveries.clone();
                }
            }
            // the sender lives as long as `self`
            let _ = bumped.changed().await;
        }
    }

    fn record(&self, url: &str, event: &Prepared, attempt: u32, outcome: WebhookOutcome, authorization: &str) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        lock(&self.deliveries).push(WebhookDelivery {
            url: url.to_owned(),
            event: event.name.clone(),
            id: event.id.clone(),
            room: event.room.clone(),
            attempt,
            outcome,
            body: event.body.clone(),
            authorization: authorization.to_owned(),
            at: Instant::now(),
        });
        // after releasing `deliveries`: waiters read it when woken
        self.delivery_count.send_modify(|n| *n += 1);
    }

    fn take_drop(&self, event: &str) -> bool {
        let mut rules = lock(&self.drop_rules);
        let Some(i) = rules.iter().position(|r| r.event.as_deref().is_none_or(|e| e == event)) else {
            return false;
        };
        rules[i].remaining -= 1;
        if rules[i].remaining == 0 {
            rules.remove(i);
        }
        true
    }

    /// `NotifyEvent` then `QueueNotify` for each event, in order. Called
    /// under the state lock, so events queue in the order they happened.
    pub(crate) fn notify(self: &Arc<Self>, events: Vec<proto::WebhookEvent>) {
        if events.is_empty() {
            return;
        }
        let urls = self.urls();
        if urls.is_empty() {
            // no `webhook.urls`: no notifier at all
            return;
        }
        for mut event in events {
            event.created_at = state::unix_now(SystemTime::now()).0;
            event.id = state::guid("EV_");
            let prepared = Arc::new(Prepared {
                name: event.event.clone(),
                id: event.id.clone(),
                // `eventKey`: an egress event's queue is its egress's
                room: match &event.egress_info {
                    Some(info) => info.egress_id.clone(),
                    None => event.room.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                },
                body: Bytes::from(webhook::webhook_body(&event)),
            });
            if self.take_drop(&prepared.name) {
                for url in &urls {
                    tracing::info!(event = %prepared.name, id = %prepared.id, %url, "livekit-standin: dropped webhook on purpose");
                    self.record(url, &prepared, 0, WebhookOutcome::Dropped, "");
                }
                continue;
            }
            for url in &urls {
                if !self.enqueue(url, &prepared) {
                    tracing::info!(
                        event = %prepared.name, id = %prepared.id, %url, room = %prepared.room,
                        reason = "queue is full", "livekit-standin: dropped webhook"
                    );
                    self.record(url, &prepared, 0, WebhookOutcome::QueueFull, "");
                    break;
                }
            }
        }
    }

    /// `resourceQueue.Enqueue`; false when the queue is full.
    fn enqueue(self: &Arc<Self>, url: &str, event: &Arc<Prepared>) -> bool {
        let key: QueueKey = (url.to_owned(), event.room.clone());
        let item = Queued { event: event.clone(), queued_at: Instant::now() };
        let mut queues = lock(&self.queues);
        if let Some(queue) = queues.get_mut(&key) {
            if queue.len() >= self.settings.max_depth {
                return false;
            }
            queue.push_back(item);
            return true;
        }
        queues.insert(key.clone(), VecDeque::from([item]));
        drop(queues);
        self.runtime.spawn(self.clone().worker(key));
        true
    }

    /// `resourceQueue.worker`: one event at a time, until the queue is empty.
    async fn worker(self: Arc<Self>, key: QueueKey) {
        loop {
            let next = {
                let mut queues = lock(&self.queues);
                match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(item) => item,
                    None => {
                        queues.remove(&key);
                        return;
                    }
                }
            };
            self.process(&key.0, next).await;
        }
    }

    /// `ResourceURLNotifier.Process` and `send`.
    async fn process(&self, url: &str, item: Queued) {
        let event = &item.event;
        let waited = item.queued_at.elapsed();
        if waited > self.settings.max_age {
            tracing::info!(
                event = %event.name, id = %event.id, %url, room = %event.room, queue_duration = ?waited,
                reason = "age", "livekit-standin: dropped webhook"
            );
            self.record(url, event, 0, WebhookOutcome::Expired, "");
            return;
        }
        let authorization = webhook::sign_webhook(&self.settings.api_key, &self.settings.api_secret, &event.body);
        let uri = match parse_url(url) {
            Ok(uri) => uri,
            Err(e) => {
                // like Go's "unsupported protocol scheme": never retried
                tracing::warn!(event = %event.name, id = %event.id, %url, error = %e, "livekit-standin: failed to send webhook");
                self.record(url, event, 1, WebhookOutcome::ConnectionError(e), &authorization);
                return;
            }
        };
        for attempt in 1..=MAX_ATTEMPTS {
            let (outcome, retry_after) = self.post(uri.clone(), event.body.clone(), &authorization).await;
            let retry = outcome.is_retryable() && attempt < MAX_ATTEMPTS;
            if !retry && outcome.is_retryable() {
                tracing::warn!(event = %event.name, id = %event.id, %url, ?outcome, "livekit-standin: failed to send webhook");
            } else if !retry {
                // an answer that is not retried counts as sent, whatever it is
                tracing::info!(event = %event.name, id = %event.id, %url, ?outcome, "livekit-standin: sent webhook");
            }
            self.record(url, event, attempt, outcome, &authorization);
            if !retry {
                return;
            }
            tokio::time::sleep(self.backoff(attempt, retry_after)).await;
        }
    }

    /// `DefaultBackoff`: `RetryWaitMin * 2^(attempt-1)` (1, 2, 4, 8 s), or
    /// the `Retry-After` seconds of a 429 or 503; in `retry_unit`s.
    fn backoff(&self, attempt: u32, retry_after_secs: Option<u32>) -> Duration {
        let units = retry_after_secs.unwrap_or(1 << (attempt - 1));
        self.settings.retry_unit.saturating_mul(units)
    }

    /// One POST: the outcome, and the `Retry-After` seconds of a 429 or 503.
    async fn post(&self, uri: http::Uri, body: Bytes, authorization: &str) -> (WebhookOutcome, Option<u32>) {
        let request = http::Request::post(uri)
            .header(http::header::USER_AGENT, WEBHOOK_USER_AGENT)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::CONTENT_TYPE, WEBHOOK_CONTENT_TYPE)
            // Go's transport asks for gzip unless told not to
            .header(http::header::ACCEPT_ENCODING, "gzip")
            .body(Full::new(body));
        let request = match request {
            Ok(r) => r,
            Err(e) => return (WebhookOutcome::ConnectionError(format!("invalid webhook request: {e}")), None),
        };
        match self.client.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = if status == 429 || status == 503 {
                    response
                        .headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u32>().ok())
                } else {
                    None
                };
                // the body is never read
                (WebhookOutcome::Status(status), retry_after)
            }
            Err(e) => (WebhookOutcome::ConnectionError(error_chain(&e)), None),
        }
    }
}

fn parse_url(url: &str) -> Result<http::Uri, String> {
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => Ok(uri),
        Ok(_) => Err(format!("livekit-standin sends webhooks to http:// URLs only, not {url:?}")),
        Err(e) => Err(format!("invalid webhook URL {url:?}: {e}")),
    }
}

/// An error and its causes, "a: b: c".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backoff_doubles_from_one_unit_or_follows_retry_after() {
        let n = Notifier::new(
            Settings {
                api_key: "k".into(),
                api_secret: "s".into(),
                max_age: Duration::ZERO,
                max_depth: 0,
                retry_unit: Duration::from_millis(10),
            },
            Vec::new(),
        );
        let waits: Vec<u128> = (1..MAX_ATTEMPTS).map(|a| n.backoff(a, None).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80]);
        assert_eq!(n.backoff(1, Some(3)), Duration::from_millis(30));
        assert_eq!((n.settings.max_age, n.settings.max_depth), (DEFAULT_MAX_AGE, DEFAULT_MAX_DEPTH));
    }
}
