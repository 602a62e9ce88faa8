//! The bounds on RoomControl calls served at once, in two budgets
//! (bulkheads): calls that wait on LiveKit (`server.max_concurrent_calls`)
//! and calls that never do (`server.max_concurrent_local_calls`:
//! CreateToken), so a slow or hung LiveKit cannot starve token minting.
//! Health, reflection and the console take no slot at all.
//!
//! A call without a free slot waits in its budget's queue, at most
//! `server.max_queue_wait` and only while fewer than
//! `server.max_queued_calls` wait; otherwise it is refused at once with
//! RESOURCE_EXHAUSTED and a `google.rpc.RetryInfo`, so overload is shed in
//! microseconds instead of piling up. A budget whose queue overflowed
//! turns readiness NOT_SERVING until its queue has drained to half.
//!
//! Written by hand rather than with tower's `ConcurrencyLimit`: that one
//! waits for a slot in `poll_ready`, before it sees the request, so a full
//! limit would hold up every call on the connection, health probes
//! included, and it has neither a queue bound nor a wait deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic_types::{ErrorDetails, StatusExt};
use tower::Service;

use super::take_ready;
use crate::config::ServerConfig;
use crate::health::{Blocker, Readiness};
use crate::metrics::{BudgetMetrics, Metrics};
use crate::rpc::Rpc;

/// One budget of call slots and its wait queue.
#[derive(Debug)]
pub struct Budget {
    /// For metrics: "livekit" or "local".
    name: &'static str,
    /// For messages: the settings that size this budget.
    settings: &'static str,
    slots: Arc<Semaphore>,
    capacity: usize,
    queued: AtomicUsize,
    max_queued: usize,
    max_wait: Duration,
    /// The queue overflowed and has not drained to half since.
    full: AtomicBool,
    blocker: Blocker,
    readiness: Readiness,
    metrics: BudgetMetrics,
}

/// Both budgets, shared by every connection.
#[derive(Debug, Clone)]
pub struct Budgets {
    livekit: Arc<Budget>,
    local: Arc<Budget>,
}

impl Budgets {
    pub fn new(config: &ServerConfig, readiness: Readiness, metrics: Arc<Metrics>) -> Self {
        let budget = |name, settings, capacity, blocker| {
            Arc::new(Budget {
                name,
                settings,
                slots: Arc::new(Semaphore::new(capacity)),
                capacity,
                queued: AtomicUsize::new(0),
                max_queued: config.max_queued_calls,
                max_wait: config.max_queue_wait,
                full: AtomicBool::new(false),
                blocker,
                readiness: readiness.clone(),
                metrics: metrics.budget(name),
            })
        };
        Self {
            livekit: budget(
                "livekit",
                "server.max_concurrent_calls, server.max_queued_calls",
                config.max_concurrent_calls,
                Blocker::LiveKitCallsFull,
            ),
            local: budget(
                "local",
                "server.max_concurrent_local_calls, server.max_queued_calls",
                config.max_concurrent_local_calls,
                Blocker::LocalCallsFull,
            ),
        }
    }

    fn of(&self, rpc: Rpc) -> &Arc<Budget> {
        if rpc.info().calls_livekit { &self.livekit } else { &self.local }
    }
}

impl Budget {
    /// Records whether the queue overflowed, for readiness.
    fn set_full(&self, full: bool) {
        if self.full.swap(full, Ordering::Relaxed) != full {
            self.readiness.set(self.blocker, full);
        }
    }

    /// A call now has a slot: if the queue had overflowed and has drained
    /// to half since, the budget takes calls again.
    fn recovered_if_drained(&self, queued: usize) {
        if self.full.load(Ordering::Relaxed) && queued <= self.max_queued / 2 {
            self.set_full(false);
        }
    }

    /// RESOURCE_EXHAUSTED for a call this budget cannot take, with a
    /// RetryInfo: how long a slot may take to free up.
    fn refuse(&self, why: &str) -> Response<Body> {
        let message = format!(
            "RoomControl is at capacity: {} calls in flight in the {} budget and {why} ({}); retry shortly",
            self.capacity, self.name, self.settings
        );
        tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            message,
            ErrorDetails::with_retry_info(Some(self.max_wait)),
        )
        .into_http()
    }

    /// Waits for a slot within the queue's bounds; the refusal otherwise.
    async fn wait(self: Arc<Self>) -> Result<OwnedSemaphorePermit, Response<Body>> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.set_full(true);
            self.metrics.queue_full.inc();
            return Err(self.refuse(&format!("{} waiting, the most allowed", self.max_queued)));
        }
        let waiting = Waiting::enter(&self);
        let acquired = tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await;
        drop(waiting);
        match acquired {
            // The semaphore is never closed.
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) | Err(_) => {
                self.metrics.queue_wait.inc();
                let waited = crate::duration::display(self.max_wait);
                Err(self.refuse(&format!("no slot freed within {waited} (server.max_queue_wait)")))
            }
        }
    }
}

/// A place in the queue (already counted in `queued`), left when dropped,
/// however the wait ended: a client that gives up drops it too.
struct Waiting<'a>(&'a Budget);

impl<'a> Waiting<'a> {
    fn enter(budget: &'a Budget) -> Self {
        budget.metrics.queued.inc();
        Self(budget)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let budget = self.0;
        budget.metrics.queued.dec();
        let left = budget.queued.fetch_sub(1, Ordering::Relaxed) - 1;
        budget.recovered_if_drained(left);
    }
}

/// Gives each RoomControl call a slot from its budget before it is
/// served; everything else passes. Placed after authentication and after
/// the request message was read, so a call holds a slot only while
/// RoomControl works on it.
#[derive(Debug, Clone)]
pub struct LimitCalls<S> {
    inner: S,
    budgets: Budgets,
}

impl<S> LimitCalls<S> {
    pub fn new(inner: S, budgets: Budgets) -> Self {
        Self { inner, budgets }
    }
}

impl<S, ReqBody> Service<Request<ReqBody>> for LimitCalls<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    /// Served now (the usual case, unboxed), or boxed while it waits.
    type Future = Either<Holding<S::Future>, Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Some(rpc) = Rpc::from_path(request.uri().path()) else {
            return Either::Left(Holding { future: self.inner.call(request), slot: None });
        };
        let budget = self.budgets.of(rpc);
        // A free slot (the usual case): serve now, holding the slot until
        // the answer is ready.
        if let Ok(slot) = budget.slots.clone().try_acquire_owned() {
            budget.recovered_if_drained(budget.queued.load(Ordering::Relaxed));
            return Either::Left(Holding { future: self.inner.call(request), slot: Some(slot) });
        }
        // Wait for a slot, in a future of its own.
        let mut inner = take_ready(&mut self.inner);
        let budget = budget.clone();
        Either::Right(Box::pin(async move {
            match budget.wait().await {
                Ok(slot) => Holding { future: inner.call(request), slot: Some(slot) }.await,
                Err(refused) => Ok(refused),
            }
        }))
    }
}

pin_project_lite::pin_project! {
    /// A call's future and the concurrency slot it holds until it is ready.
    pub struct Holding<F> {
        #[pin]
        future: F,
        slot: Option<OwnedSemaphorePermit>,
    }
}

impl<F: Future> Future for Holding<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.future.poll(cx));
        this.slot.take();
        Poll::Ready(output)
    }
}
