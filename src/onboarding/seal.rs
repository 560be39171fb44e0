//! The seal that lets the success page show a business's name.
//!
//! The callback's redirect to `/connect/connected` carries the business ID, its name and a
//! seal: `base64url(expiry (u64 unix seconds, big-endian) | HMAC-SHA256)` under the state
//! key, over a purpose label, the ID, the name and the expiry. The page shows the name only
//! under a valid, unexpired seal, so it cannot be made to show text of someone else's
//! choosing, and an address with a business ID alone reveals nothing beyond what it already
//! did (whether that business is connected). After [`SEAL_TTL`] a reload shows the ID.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::state::StateKey;
use poynt_wire::MerchantId;

/// How long a redirect's name stays showable: a reload or a restored tab soon after.
pub const SEAL_TTL: Duration = Duration::from_secs(15 * 60);
/// Starts every sealed message; a state's first byte is its version, never this.
const PURPOSE: &[u8] = b"poynt-proxy connected page name v1\0";
const EXPIRY_LEN: usize = 8;

fn message(merchant: MerchantId, name: &str, expiry: u64) -> Vec<u8> {
    let mut message = PURPOSE.to_vec();
    message.extend_from_slice(merchant.to_string().as_bytes());
    message.push(0);
    message.extend_from_slice(name.as_bytes());
    message.push(0);
    message.extend_from_slice(&expiry.to_be_bytes());
    message
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A seal for showing `name` for `merchant` until `now` + [`SEAL_TTL`].
pub fn seal(key: &StateKey, merchant: MerchantId, name: &str, now: SystemTime) -> String {
    let expiry = unix_secs(now + SEAL_TTL);
    let mut raw = expiry.to_be_bytes().to_vec();
    raw.extend_from_slice(key.tag(&message(merchant, name, expiry)).as_ref());
    URL_SAFE_NO_PAD.encode(raw)
}

/// Whether `seal` is this proxy's for `merchant` and `name`, and unexpired at `now`.
pub fn opens(
    key: &StateKey,
    merchant: MerchantId,
    name: &str,
    seal: &str,
    now: SystemTime,
) -> bool {
    let Ok(raw) = URL_SAFE_NO_PAD.decode(seal) else {
        return false;
    };
    let Some((expiry, tag)) = raw.split_first_chunk::<EXPIRY_LEN>() else {
        return false;
    };
    let expiry = u64::from_be_bytes(*expiry);
    expiry > unix_secs(now) && key.verifies(&message(merchant, name, expiry), tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant() -> MerchantId {
        MerchantId::parse("c9580c24-b61e-4e0d-ad26-1dd1d3943d2c").unwrap()
    }

    #[test]
    fn a_seal_opens_for_its_name_and_business_only_until_it_expires() {
        let key = StateKey::random();
        let now = SystemTime::now();
        let sealed = seal(&key, merchant(), "Corner Café", now);
        assert!(opens(&key, merchant(), "Corner Café", &sealed, now));
        assert!(!opens(&key, merchant(), "Evil Corp", &sealed, now));
        let other = MerchantId::parse("11111111-1111-4111-8111-111111111111").unwrap();
        assert!(!opens(&key, other, "Corner Café", &sealed, now));
        assert!(!opens(
            &StateKey::random(),
            merchant(),
            "Corner Café",
            &sealed,
            now
        ));
        assert!(!opens(
            &key,
            merchant(),
            "Corner Café",
            &sealed,
            now + SEAL_TTL
        ));
        assert!(!opens(&key, merchant(), "Corner Café", "not base64!", now));
    }

    #[test]
    fn a_seal_is_never_a_state() {
        let key = StateKey::random();
        let sealed = seal(&key, merchant(), "x", SystemTime::now());
        assert!(key.open(&sealed, SystemTime::now()).is_err());
    }
}
