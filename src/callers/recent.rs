//! Which callers acted for a merchant lately, for `/admin/tokens`: an operator asking "who
//! uses this merchant?" gets names without reading the access log. Bounded every way: a
//! few callers per merchant, a cap on merchants, and entries idle for an hour forgotten.
//! Times are kept to the second, as the page shows them: each worker thread writes a
//! caller's use of a merchant down once a second at most, so a caller's every request does
//! not touch the shared map.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use poynt_wire::MerchantId;
use serde::Serialize;

/// Callers kept per merchant; the least recently seen goes first.
const PER_MERCHANT: usize = 8;
/// Merchants kept at most.
const MAX_MERCHANTS: u64 = 100_000;
/// "Recently": a merchant nobody used for this long is forgotten.
const RECENT: Duration = Duration::from_secs(3600);
/// What each worker thread remembers having written down this second: a slot per merchant
/// (by its id's low bits), so a thread serving a few busy merchants skips them all.
const WRITTEN_SLOTS: usize = 64;

/// Numbers the maps, so one's writes are not taken for another's (tests make several).
static MAPS: AtomicU64 = AtomicU64::new(0);

/// A use written down: which map, merchant and caller, and the second it was written in.
type Written = (u64, MerchantId, Arc<str>, u64);

thread_local! {
    static WRITTEN: RefCell<[Option<Written>; WRITTEN_SLOTS]> =
        const { RefCell::new([const { None }; WRITTEN_SLOTS]) };
}

/// One caller's most recent request for a merchant, as `/admin/tokens` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// The caller.
    pub caller: String,
    /// When, RFC 3339.
    pub last_seen: String,
}

/// One merchant's callers and when each was last seen.
type Entries = Arc<Mutex<Vec<(Arc<str>, SystemTime)>>>;

/// Recent callers by merchant. Cloning shares it.
#[derive(Clone)]
pub struct Recent {
    id: u64,
    by_merchant: moka::sync::Cache<MerchantId, Entries>,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            id: MAPS.fetch_add(1, Ordering::Relaxed),
            by_merchant: moka::sync::Cache::builder()
                .max_capacity(MAX_MERCHANTS)
                .time_to_idle(RECENT)
                .build(),
        }
    }
}

impl Recent {
    /// Notes that `caller` acted for `merchant` now.
    pub fn saw(&self, merchant: MerchantId, caller: &Arc<str>) {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let slot = (merchant.uuid().as_u128() % WRITTEN_SLOTS as u128) as usize;
        let written = WRITTEN.with_borrow_mut(|slots| {
            let done = slots[slot].as_ref().is_some_and(|(map, m, c, s)| {
                *map == self.id && *m == merchant && *s == second && c == caller
            });
            if !done {
                slots[slot] = Some((self.id, merchant, caller.clone(), second));
            }
            done
        });
        if written {
            return;
        }
        let entry = self.by_merchant.get_with(merchant, Arc::default);
        let mut seen = entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.iter_mut().find(|(name, _)| name == caller) {
            Some(slot) => slot.1 = now,
            None => {
                if seen.len() == PER_MERCHANT
                    && let Some(oldest) = seen
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (_, at))| *at)
                        .map(|(index, _)| index)
                {
                    seen.swap_remove(oldest);
                }
                seen.push((caller.clone(), now));
            }
        }
    }

    /// The callers seen for `merchant`, most recent first.
    pub fn of(&self, merchant: MerchantId) -> Vec<Seen> {
        let Some(entry) = self.by_merchant.get(&merchant) else {
            return Vec::new();
        };
        let mut seen = entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        seen.sort_unstable_by_key(|(_, at)| std::cmp::Reverse(*at));
        seen.into_iter()
            .map(|(caller, at)| Seen {
                caller: caller.to_string(),
                last_seen: humantime::format_rfc3339_seconds(at).to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchant_keeps_its_most_recent_callers_and_no_more() {
        let recent = Recent::default();
        let merchant = MerchantId::parse("7e57a9a0-0000-4000-8000-0000000000aa").unwrap();
        for n in 0..PER_MERCHANT + 3 {
            recent.saw(merchant, &Arc::from(format!("caller-{n}").as_str()));
        }
        recent.saw(merchant, &Arc::from("caller-5"));
        let seen = recent.of(merchant);
        assert_eq!(seen.len(), PER_MERCHANT);
        assert!(seen.iter().any(|s| s.caller == "caller-5"));
        assert!(
            seen.iter()
                .any(|s| s.caller == format!("caller-{}", PER_MERCHANT + 2))
        );
    }
}
