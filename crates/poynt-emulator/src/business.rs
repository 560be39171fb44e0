//! `GET /businesses/{id}`: the business record, reduced to what the proxy's onboarding pages
//! read — its names (`doingBusinessAs`, `legalName`). Every business has a default name made
//! from its ID; a test may give it another, or none (the call then answers 404, as for a
//! business Poynt does not know).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use hyper::Response;
use serde_json::json;

use super::body::ResponseBody;
use super::error::ApiError;
use super::reply::{self, RequestId};
use poynt_wire::MerchantId;

/// Names set for particular businesses; the others have [`default_name`].
#[derive(Default)]
pub(crate) struct BusinessNames(Mutex<HashMap<MerchantId, Option<String>>>);

impl BusinessNames {
    /// Gives `merchant` this name, or none.
    pub(crate) fn set(&self, merchant: MerchantId, name: Option<String>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(merchant, name);
    }

    /// The name `merchant` goes by now.
    fn get(&self, merchant: MerchantId) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&merchant)
            .cloned()
            .unwrap_or_else(|| Some(default_name(merchant)))
    }
}

/// `Business 1a2b3c4d`: the first group of the ID, so a page shows which business it is.
pub fn default_name(merchant: MerchantId) -> String {
    let id = merchant.to_string();
    format!("Business {}", id.split('-').next().unwrap_or(&id))
}

/// Whether `path` is the business record itself (`/businesses/{id}`, nothing after).
pub(crate) fn is_record(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| !rest.trim_end_matches('/').contains('/'))
}

/// The record of `merchant` (already checked against the token), or 404 when it has no name.
pub(crate) fn answer(
    names: &BusinessNames,
    merchant: MerchantId,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, ApiError> {
    let name = names.get(merchant).ok_or_else(|| {
        ApiError::NotFound(format!(
            "expected a business {merchant}; found none on file"
        ))
    })?;
    let body = json!({
        "id": merchant.to_string(),
        "doingBusinessAs": name,
        "legalName": name,
    });
    Ok(reply::ok_json(Bytes::from(body.to_string()), request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_record_itself_is_the_business_route() {
        assert!(is_record("/businesses/x", "/businesses/"));
        assert!(is_record("/businesses/x/", "/businesses/"));
        assert!(!is_record("/businesses/x/orders", "/businesses/"));
    }

    #[test]
    fn a_name_may_be_set_or_removed() {
        let merchant = MerchantId::parse("1a2b3c4d-0000-4000-8000-000000000000").unwrap();
        let names = BusinessNames::default();
        assert_eq!(names.get(merchant).as_deref(), Some("Business 1a2b3c4d"));
        names.set(merchant, Some("Corner Café".into()));
        assert_eq!(names.get(merchant).as_deref(), Some("Corner Café"));
        names.set(merchant, None);
        assert_eq!(names.get(merchant), None);
    }
}
