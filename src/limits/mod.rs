//! Rate limits per caller and per kind of call (`limits.*`): GCRA with a
//! configurable burst, in this process ([`gcra::LocalLimits`]) or, with
//! `redis.url` set, in Redis, shared by every replica (`redis`).
//!
//! Which limit a call counts against is the registry's decision
//! ([`crate::rpc::Rpc::rate_limit`]); who the caller is, the credential's
//! ([`crate::auth::Caller::limit_key`]: the API key's name, the JWT's issuer
//! and subject, or the one anonymous caller). The layer that asks, and why
//! it sits where it does, is `crate::middleware::rate_limit`.
//!
//! A refused call is RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo`
//! ([`crate::error::ApiError::RateLimited`]), counted in
//! `roomcontrol_rate_limited_total{limit}` and logged at debug only: a
//! flood must not flood the log. When Redis fails, calls go on as
//! `limits.on_redis_error` says, each counted in
//! `roomcontrol_rate_limit_store_errors_total`; the failure is logged once
//! (warn), and so is the recovery (info).

pub mod gcra;
mod rate;
mod redis;

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

pub use self::rate::{ACCEPTED_FORMS, Per, Rate, RateSetting};
use self::redis::RedisLimits;
pub use self::redis::{RETRY_AFTER_FAILURE, RedisFailure, SCRIPT};
use crate::auth::Caller;
use crate::config::{LimitsConfig, OnRedisError, RedisConfig};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The kinds of call limited apart, each a `limits.*` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// CreateToken by a caller that may mint only for itself
    /// (`tokens:create:self` without `tokens:create`): a browser.
    SelfServiceTokens,
    /// CreateToken by any other caller: a backend.
    Tokens,
    /// Every other RPC that changes something.
    Writes,
    /// The RPCs that change nothing (WatchEvents counts when it starts).
    Reads,
}

impl Limit {
    pub const ALL: [Limit; 4] = [Limit::SelfServiceTokens, Limit::Tokens, Limit::Writes, Limit::Reads];

    /// The metrics label and the key within `limits`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::SelfServiceTokens => "self_service_tokens",
            Limit::Tokens => "tokens",
            Limit::Writes => "writes",
            Limit::Reads => "reads",
        }
    }

    /// The setting, as messages name it: `limits.writes`.
    pub fn setting(self) -> &'static str {
        match self {
            Limit::SelfServiceTokens => "limits.self_service_tokens",
            Limit::Tokens => "limits.tokens",
            Limit::Writes => "limits.writes",
            Limit::Reads => "limits.reads",
        }
    }
}

impl LimitsConfig {
    /// The configured rate of one limit, `None` when it is off.
    pub fn rate(&self, limit: Limit) -> Option<Rate> {
        match limit {
            Limit::SelfServiceTokens => self.self_service_tokens,
            Limit::Tokens => self.tokens,
            Limit::Writes => self.writes,
            Limit::Reads => self.reads,
        }
        .rate()
    }
}

/// Every caller's budgets: where they are kept, and what happens when
/// that is Redis and Redis fails.
#[derive(Debug)]
pub struct RateLimiter {
    /// By [`Limit`] index; `None`: off.
    rates: [Option<Rate>; 4],
    local: gcra::LocalLimits,
    redis: Option<RedisLimits>,
    on_redis_error: OnRedisError,
    /// Redis failed and has not answered since: the failure was logged.
    redis_failing: AtomicBool,
    /// `rate_limited_total` by [`Limit`] index.
    limited: [Counter; 4],
    store_errors: Counter,
}

impl RateLimiter {
    /// The limits of `limits.*`, kept in Redis when `redis.url` is set.
    /// Fails only on a Redis URL the client cannot use; a Redis that is down
    /// is handled per call.
    pub fn new(limits: &LimitsConfig, redis: &RedisConfig, metrics: &Metrics) -> Result<RateLimiter, String> {
        let redis = match &redis.url {
            Some(url) => Some(RedisLimits::new(url.expose(), redis)?),
            None => None,
        };
        let series = metrics.rate_limits();
        Ok(RateLimiter {
            rates: Limit::ALL.map(|limit| limits.rate(limit)),
            local: gcra::LocalLimits::new(),
            redis,
            on_redis_error: limits.on_redis_error,
            redis_failing: AtomicBool::new(false),
            limited: Limit::ALL.map(|limit| series.limited(limit.name())),
            store_errors: series.store_errors,
        })
    }

    /// The rate a limit holds calls to; `None` when it is off (the call
    /// passes without a check).
    pub fn rate(&self, limit: Limit) -> Option<Rate> {
        self.rates[limit as usize]
    }

    /// Whether checks go to Redis (and so must be awaited).
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// What the start-up log says: each limit, and where they are kept.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for limit in Limit::ALL {
            let rate = self.rate(limit).map_or_else(|| "off".to_owned(), |rate| rate.to_string());
            let _ = write!(text, "{}={rate} ", limit.name());
        }
        match &self.redis {
            Some(redis) => {
                let _ = write!(
                    text,
                    "(shared in Redis at {}, on_redis_error={})",
                    redis.shown_url(),
                    self.on_redis_error.name()
                );
            }
            None => text.push_str("(in this process)"),
        }
        text
    }

    /// One call of `caller` against `limit` (at `rate`), in this process.
    pub fn check_local(&self, limit: Limit, rate: Rate, caller: &Caller) -> Result<(), ApiError> {
        let key = format!("{}:{}", limit.name(), caller.limit_key());
        self.local
            .check(&key, rate.interval_micros(), rate.tolerance_micros())
            .map_err(|wait| self.refused(limit, rate, caller, wait))
    }

    /// One call of `caller` against `limit` (at `rate`), wherever the
    /// limits are kept.
    pub async fn check(&self, limit: Limit, rate: Rate, caller: &Caller) -> Result<(), ApiError> {
        let Some(redis) = &self.redis else {
            return self.check_local(limit, rate, caller);
        };
        let key = redis.key(limit.name(), &caller.limit_key());
        match redis.check(&key, rate.interval_micros(), rate.tolerance_micros()).await {
            Ok(answer) => {
                self.redis_answered(redis);
                answer.map_err(|wait| self.refused(limit, rate, caller, wait))
            }
            Err(failure) => {
                self.redis_failed(&failure);
                match self.on_redis_error {
                    OnRedisError::Allow => Ok(()),
                    OnRedisError::Local => self.check_local(limit, rate, caller),
                    OnRedisError::Deny => Err(ApiError::LimitsUnavailable(failure.to_string())),
                }
            }
        }
    }

    /// At start-up: asks Redis once, so a Redis that is down is reported
    /// (once) before a call needs it.
    pub async fn warm_up(&self) {
        let Some(redis) = &self.redis else {
            return;
        };
        match redis.ping().await {
            Ok(()) => tracing::info!(redis = redis.shown_url(), "rate limits: Redis answers"),
            Err(failure) => self.report_failure(&failure),
        }
    }

    fn refused(&self, limit: Limit, rate: Rate, caller: &Caller, wait_micros: u64) -> ApiError {
        self.limited[limit as usize].inc();
        let retry_after = Duration::from_micros(wait_micros);
        tracing::debug!(limit = limit.setting(), %rate, retry_after = %retry_text(retry_after), "rate limited");
        ApiError::RateLimited { limit, rate, caller: caller.to_string(), retry_after }
    }

    fn redis_answered(&self, redis: &RedisLimits) {
        if self.redis_failing.swap(false, Ordering::Relaxed) {
            tracing::info!(redis = redis.shown_url(), "rate limits: Redis answers again; limits are shared again");
        }
    }

    fn redis_failed(&self, failure: &RedisFailure) {
        self.store_errors.inc();
        if matches!(failure, RedisFailure::Resting { .. }) {
            return;
        }
        self.report_failure(failure);
    }

    /// Logs a failure once, until Redis answers again.
    fn report_failure(&self, failure: &RedisFailure) {
        if self.redis_failing.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %failure, "rate limits: Redis still failing");
            return;
        }
        let meanwhile = match self.on_redis_error {
            OnRedisError::Allow => "calls pass without a rate limit",
            OnRedisError::Local => "each replica limits its own calls",
            OnRedisError::Deny => "calls are refused with UNAVAILABLE",
        };
        tracing::warn!(
            error = %failure,
            "rate limits: Redis is failing; until it answers again {meanwhile} (limits.on_redis_error), counted in roomcontrol_rate_limit_store_errors_total"
        );
    }
}

/// A wait as messages write it: `350ms`, `4.2s`, `1m 30s` (rounded up,
/// so a client that waits that long is not refused again).
pub fn retry_text(wait: Duration) -> String {
    let millis = wait.as_micros().div_ceil(1000);
    if millis < 1000 {
        return format!("{}ms", millis.max(1));
    }
    let tenths = millis.div_ceil(100);
    if tenths < 600 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    crate::duration::display(Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_written_rounded_up() {
        assert_eq!(retry_text(Duration::from_micros(1)), "1ms");
        assert_eq!(retry_text(Duration::from_micros(349_001)), "350ms");
        assert_eq!(retry_text(Duration::from_millis(999)), "999ms");
        assert_eq!(retry_text(Duration::from_millis(1000)), "1.0s");
        assert_eq!(retry_text(Duration::from_millis(4_160)), "4.2s");
        assert_eq!(retry_text(Duration::from_millis(59_900)), "59.9s");
        assert_eq!(retry_text(Duration::from_millis(59_950)), "1m");
        assert_eq!(retry_text(Duration::from_millis(90_500)), "1m 31s");
    }

    #[test]
    fn settings_are_named_after_their_keys() {
        for limit in Limit::ALL {
            assert_eq!(limit.setting(), format!("limits.{}", limit.name()));
        }
    }
}
