//! Routing by a predicate, with no allocation.

use std::task::{Context, Poll};

use futures_util::future::Either;
use tower::Service;

/// Sends each request to `yes` when `choose` says so, else to `no`, with
/// no allocation: how the console's paths leave the gRPC stack.
#[derive(Debug, Clone)]
pub struct Branch<Yes, No, F> {
    choose: F,
    yes: Yes,
    no: No,
}

impl<Yes, No, F> Branch<Yes, No, F> {
    pub fn new(choose: F, yes: Yes, no: No) -> Self {
        Self { choose, yes, no }
    }
}

impl<Yes, No, F, Req> Service<Req> for Branch<Yes, No, F>
where
    Yes: Service<Req>,
    No: Service<Req, Response = Yes::Response, Error = Yes::Error>,
    F: Fn(&Req) -> bool,
{
    type Response = Yes::Response;
    type Error = Yes::Error;
    type Future = Either<Yes::Future, No::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both, since either may get the call.
        std::task::ready!(self.yes.poll_ready(cx))?;
        self.no.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if (self.choose)(&request) {
            Either::Left(self.yes.call(request))
        } else {
            Either::Right(self.no.call(request))
        }
    }
}
