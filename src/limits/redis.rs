//! Limits shared by every replica through Redis: one EVALSHA per call of a
//! Lua script that takes the GCRA step of `super::gcra` atomically, on
//! Redis's clock (replicas' clocks never enter into it), and stores the new
//! TAT with a TTL, so an idle caller's key disappears by itself.
//!
//! Redis must never stall a call: each check is bounded by
//! `redis.timeout`, and after a failure Redis is left alone for
//! [`RETRY_AFTER_FAILURE`] (calls are decided by `limits.on_redis_error`
//! meanwhile, without waiting), then one call tries it again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;

/// The GCRA step (`super::gcra::step`) in Lua, in microseconds of Redis's
/// own clock. KEYS[1]: the caller's key for one limit; ARGV[1]: the
/// interval; ARGV[2]: the tolerance (burst x interval). Answers
/// `{1, 0}` (allowed, the TAT stored) or `{0, microseconds to wait}`.
pub const SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  tat = math.max(tonumber(stored), now)
end
local new_tat = tat + interval
local allowed_at = new_tat - tolerance
if now < allowed_at then
  return {0, allowed_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, 0}
";

/// After a failure, how long calls skip Redis before one tries it again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Why Redis could not decide a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisFailure {
    #[error("Redis at {url} did not answer within {timeout} (redis.timeout)")]
    Timeout { url: String, timeout: String },
    #[error("Redis at {url} failed: {error}")]
    Failed { url: String, error: String },
    #[error("Redis at {url} failed moments ago; not asked again for up to 1s")]
    Resting { url: String },
}

/// The connection to Redis, and when it may be asked again.
pub struct RedisLimits {
    connection: ConnectionManager,
    script: redis::Script,
    /// The URL as logs and messages show it: any password hidden.
    shown_url: String,
    /// The URL's password, if any, scrubbed from Redis's error messages.
    password: Option<String>,
    key_prefix: String,
    timeout: Duration,
    started: Instant,
    /// Microseconds since `started` before which Redis is not asked (after
    /// a failure); 0: ask.
    resting_until: AtomicU64,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits")
            .field("url", &self.shown_url)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLimits {
    /// A client for `redis.url`; it connects on first use (and again after
    /// a failure, in the background), so a Redis that is down at start-up
    /// does not stop RoomControl. Fails only on a URL the client cannot use.
    pub fn new(url: &str, config: &RedisConfig) -> Result<RedisLimits, String> {
        let shown_url = crate::store::redacted_url(url);
        let client = match &config.ca_file {
            Some(path) => {
                let root_cert =
                    std::fs::read(path).map_err(|error| format!("redis.ca_file {}: {error}", path.display()))?;
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) };
                redis::Client::build_with_tls(url, certificates)
            }
            None => redis::Client::open(url),
        }
        .map_err(|error| format!("redis.url {shown_url:?}: {error}"))?;
        let manager = ConnectionManagerConfig::new()
            // A reconnection runs in the background; calls never wait for it
            // beyond redis.timeout.
            .set_connection_timeout(Some(config.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(config.timeout.max(Duration::from_secs(1))))
            // One attempt per reconnection: after a failure calls leave Redis
            // alone for RETRY_AFTER_FAILURE, then one call tries again.
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|error| format!("redis.url {shown_url:?}: {error}"))?;
        Ok(RedisLimits {
            connection,
            script: redis::Script::new(SCRIPT),
            shown_url,
            password: url::Url::parse(url).ok().and_then(|url| url.password().map(str::to_owned)),
            key_prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            started: Instant::now(),
            resting_until: AtomicU64::new(0),
        })
    }

    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// The Redis key of one caller's budget in one limit.
    pub fn key(&self, limit_name: &str, caller_key: &str) -> String {
        format!("{}rate:{limit_name}:{caller_key}", self.key_prefix)
    }

    /// A Redis error as a message: never with the URL's password in it.
    fn failed(&self, error: &redis::RedisError) -> RedisFailure {
        let mut error = error.to_string();
        if let Some(password) = self.password.as_deref().filter(|password| !password.is_empty()) {
            error = error.replace(password, "***");
        }
        RedisFailure::Failed { url: self.shown_url.clone(), error }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// One call of `key` now: `Ok(Ok(()))` allowed, `Ok(Err(us))` refused
    /// for that many microseconds, `Err` when Redis could not say.
    pub async fn check(&self, key: &str, interval: u64, tolerance: u64) -> Result<Result<(), u64>, RedisFailure> {
        let now = self.now();
        let resting_until = self.resting_until.load(Ordering::Relaxed);
        if now < resting_until {
            return Err(RedisFailure::Resting { url: self.shown_url.clone() });
        }
        // One call retries a resting Redis; the others go on without it.
        if resting_until != 0
            && self
                .resting_until
                .compare_exchange(
                    resting_until,
                    now + RETRY_AFTER_FAILURE.as_micros() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return Err(RedisFailure::Resting { url: self.shown_url.clone() });
        }
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(key);
        invocation.arg(interval).arg(tolerance);
        let answer = tokio::time::timeout(self.timeout, invocation.invoke_async::<(i64, i64)>(&mut connection)).await;
        let failure = match answer {
            Ok(Ok((allowed, wait))) => {
                self.resting_until.store(0, Ordering::Relaxed);
                return Ok(if allowed == 1 { Ok(()) } else { Err(wait.max(1) as u64) });
            }
            Ok(Err(error)) => self.failed(&error),
            Err(_) => {
                RedisFailure::Timeout { url: self.shown_url.clone(), timeout: crate::duration::display(self.timeout) }
            }
        };
        self.resting_until.store(self.now() + RETRY_AFTER_FAILURE.as_micros() as u64, Ordering::Relaxed);
        Err(failure)
    }

    /// Asks Redis once (PING), bounded like a check: at start-up, so a
    /// Redis that is down is reported before the first call needs it.
    pub async fn ping(&self) -> Result<(), RedisFailure> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(
            self.timeout.max(Duration::from_secs(1)),
            ping.query_async::<String>(&mut connection),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(self.failed(&error)),
            Err(_) => Err(RedisFailure::Timeout {
                url: self.shown_url.clone(),
                timeout: crate::duration::display(self.timeout.max(Duration::from_secs(1))),
            }),
        }
    }
}
