//! Cluster-wide limits kept in Redis, so replicas behind one Redis hold one limit between
//! them instead of one each: a merchant's (and a caller's) token bucket as GCRA, and a
//! merchant's cool-down after Poynt answered it 429.
//!
//! Keys, under the store's `{prefix}:{app}:`: `limit:merchant:{merchant}` and
//! `limit:caller:{name}` hold a bucket's theoretical arrival time (microseconds on Redis's
//! clock, so replicas' clocks never disagree), expiring when the bucket is full again;
//! `cooldown:{merchant}` exists while the merchant cools down (its `PTTL` is what is left).
//! No key holds a secret: merchant ids and the caller names of `callers.policy` only.
//!
//! One script call per request checks the cool-down and every bucket that applies, and
//! takes from the buckets only when all of them have room: one round trip, atomic.

use std::time::Duration;

use redis::Script;

use super::RedisStore;
use crate::metrics::StoreOp;
use crate::store::{StoreError, ok, timed};
use poynt_wire::MerchantId;

/// `KEYS[1]`: the merchant's cool-down; `KEYS[2..]`: buckets, each with two `ARGV`s: the
/// interval one request occupies and the burst window, in microseconds. Returns
/// `{cooling_ms, refused, retry_after_us, reset_us}`: `cooling_ms` above 0 while the
/// merchant cools down (nothing taken); `refused` the 1-based bucket that had no room
/// (nothing taken), 0 when every bucket took one. `TIME` is Redis's clock: the script is
/// replicated by its effects (Redis 5 and later).
const CHECK_SCRIPT: &str = r"
local cooling = redis.call('PTTL', KEYS[1])
if cooling > 0 then
  return {cooling, 0, 0, 0}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tats = {}
for i = 2, #KEYS do
  local interval = tonumber(ARGV[2 * i - 3])
  local window = tonumber(ARGV[2 * i - 2])
  local stored = redis.call('GET', KEYS[i])
  local tat = stored and tonumber(stored) or now
  if tat < now then
    tat = now
  end
  local next = tat + interval
  if next - now > window then
    return {0, i - 1, next - now - window, tat - now}
  end
  tats[i] = next
end
for i = 2, #KEYS do
  local ttl = math.max(1, math.ceil((tats[i] - now) / 1000))
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
end
return {0, 0, 0, 0}
";

/// Starts or lengthens a cool-down: `KEYS[1]` lives at least `ARGV[1]` ms from now, and a
/// longer one already running is never cut short.
const COOL_DOWN_SCRIPT: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
";

/// Cluster-wide limits through the Redis store. Cloning shares the store.
#[derive(Clone)]
pub struct SharedLimits {
    store: RedisStore,
    check: Script,
    cool_down: Script,
}

/// Whose token bucket a [`SharedBucket`] is.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// A merchant's.
    Merchant(MerchantId),
    /// A caller's, by its `callers.policy` name.
    Caller(&'a str),
}

/// One token bucket to check: whose, and its arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct SharedBucket<'a> {
    /// Whose bucket.
    pub owner: Owner<'a>,
    /// The time one request occupies (one over the rate).
    pub interval: Duration,
    /// Requests allowed back to back.
    pub burst: u32,
}

/// What the cluster-wide limits said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every bucket had room and took one.
    Allowed,
    /// The merchant cools down for this long yet; nothing was taken.
    CoolingDown(Duration),
    /// The bucket at this index (of those asked) had no room; nothing was taken.
    Refused {
        /// Which bucket.
        bucket: usize,
        /// When one request fits again.
        retry_after: Duration,
        /// When the bucket is full again.
        reset: Duration,
    },
}

impl SharedLimits {
    pub(in crate::store) fn new(store: RedisStore) -> Self {
        Self {
            store,
            check: Script::new(CHECK_SCRIPT),
            cool_down: Script::new(COOL_DOWN_SCRIPT),
        }
    }

    /// False while Redis is known to be unreachable: ask nothing then (no caller waits for
    /// a timeout the store already met); the store's probe says when it is back.
    pub fn is_reachable(&self) -> bool {
        self.store.is_reachable()
    }

    /// Checks `merchant`'s cool-down and takes one request from each of `buckets` if all
    /// have room: one script call, bounded by `store.timeout` (EVALSHA, loading the script
    /// again when Redis lost it).
    pub async fn check(
        &self,
        merchant: MerchantId,
        buckets: &[SharedBucket<'_>],
    ) -> Result<Verdict, StoreError> {
        let names = &self.store.inner.names;
        let mut invocation = self.check.key(format!("{}cooldown:{merchant}", names.base));
        for bucket in buckets {
            let key = match bucket.owner {
                Owner::Merchant(merchant) => format!("{}limit:merchant:{merchant}", names.base),
                Owner::Caller(name) => format!("{}limit:caller:{name}", names.base),
            };
            let interval = micros(bucket.interval);
            invocation
                .key(key)
                .arg(interval)
                .arg(interval.saturating_mul(u64::from(bucket.burst)));
        }
        let work = async {
            let mut connection = self.store.connection();
            let (cooling, refused, retry_after, reset): (u64, usize, u64, u64) = self
                .store
                .run(invocation.invoke_async(&mut connection))
                .await?;
            Ok(if cooling > 0 {
                Verdict::CoolingDown(Duration::from_millis(cooling))
            } else if refused > 0 {
                Verdict::Refused {
                    bucket: refused - 1,
                    retry_after: Duration::from_micros(retry_after),
                    reset: Duration::from_micros(reset),
                }
            } else {
                Verdict::Allowed
            })
        };
        timed(self.store.metrics(), StoreOp::Limit, ok, work).await
    }

    /// Starts (or lengthens) `merchant`'s cool-down for every replica: `wait` from now.
    pub async fn cool_down(&self, merchant: MerchantId, wait: Duration) -> Result<(), StoreError> {
        let key = format!("{}cooldown:{merchant}", self.store.inner.names.base);
        let work = async {
            let mut connection = self.store.connection();
            let _: u8 = self
                .store
                .run(
                    self.cool_down
                        .key(key)
                        .arg(super::millis(wait))
                        .invoke_async(&mut connection),
                )
                .await?;
            Ok(())
        };
        timed(self.store.metrics(), StoreOp::Cooldown, ok, work).await
    }
}

/// Whole microseconds, at least one (an interval of zero would let everything through).
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_never_round_to_nothing() {
        assert_eq!(micros(Duration::from_nanos(10)), 1);
        assert_eq!(micros(Duration::from_millis(250)), 250_000);
    }
}
