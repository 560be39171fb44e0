//! Building responses: every answer is JSON and echoes the request's `Poynt-Request-Id`
//! (header and, for errors, `requestId`), generating one when the caller sent none.

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use uuid::Uuid;

use super::body::ResponseBody;
use super::error::ApiError;
use poynt_wire::REQUEST_ID_HEADER;

/// The request's correlation id: the caller's `Poynt-Request-Id` when it is printable, else
/// a fresh UUID.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(HeaderValue);

impl RequestId {
    /// Takes the caller's id or makes one.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        match headers.get(REQUEST_ID_HEADER) {
            Some(value) if value.to_str().is_ok_and(|text| !text.is_empty()) => Self(value.clone()),
            _ => {
                let mut buffer = Uuid::encode_buffer();
                let text = Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
                Self(HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("unknown")))
            }
        }
    }

    /// The id as text (always printable ASCII).
    pub(crate) fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    pub(crate) fn header(&self) -> &HeaderValue {
        &self.0
    }
}

/// A response with `status`, a JSON `body` and the request id.
pub(crate) fn json(
    status: StatusCode,
    body: ResponseBody,
    request_id: &RequestId,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(REQUEST_ID_HEADER, request_id.header().clone());
    response
}

/// A 200 with a JSON body held in memory.
pub(crate) fn ok_json(body: Bytes, request_id: &RequestId) -> Response<ResponseBody> {
    json(StatusCode::OK, ResponseBody::full(body), request_id)
}

/// The Poynt error response for `error`.
pub(crate) fn error(error: &ApiError, request_id: &RequestId) -> Response<ResponseBody> {
    json(
        error.status(),
        ResponseBody::full(error.body(request_id.as_str())),
        request_id,
    )
}

/// A 302 to `location`, with a small JSON body naming it (every answer is JSON).
pub(crate) fn redirect(
    location: &str,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, ApiError> {
    let value = HeaderValue::from_str(location).map_err(|_| {
        ApiError::InvalidRequest(format!(
            "expected a redirect URL usable as a header; found {location:?}"
        ))
    })?;
    let body = serde_json::json!({ "location": location }).to_string();
    let mut response = json(
        StatusCode::FOUND,
        ResponseBody::full(Bytes::from(body)),
        request_id,
    );
    response.headers_mut().insert(LOCATION, value);
    Ok(response)
}

/// The value of query parameter `name` (first occurrence, percent-decoded).
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_echoed_or_generated() {
        let mut headers = HeaderMap::new();
        let generated = RequestId::from_headers(&headers);
        assert!(Uuid::try_parse(generated.as_str()).is_ok());
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc"));
        assert_eq!(RequestId::from_headers(&headers).as_str(), "abc");
    }

    #[test]
    fn query_param_decodes_first_occurrence() {
        assert_eq!(
            query_param(Some("a=1&b=x%20y&b=2"), "b").as_deref(),
            Some("x y")
        );
        assert_eq!(query_param(None, "b"), None);
    }
}
