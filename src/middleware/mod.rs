//! Tower middleware of RoomControl's own, one file per service. Each is
//! stacked in `server` with `tower::layer::layer_fn`, in the order the
//! comments there explain.

mod branch;
pub mod browser_cors;
mod call_log;
mod end_watches;
mod limit;
mod read_request;

pub use branch::Branch;
pub use browser_cors::BrowserCors;
pub use call_log::CallLog;
pub use end_watches::EndWatches;
pub use limit::{Budgets, Holding, LimitCalls};
pub use read_request::{ReadRequest, RequestLimits};
