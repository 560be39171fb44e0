//! The request as the proxy hands it to [`super::Upstream`], and its HTTP/1.1 head: written
//! straight into the connection's write buffer from the caller's parsed header map, with no
//! intermediate map, URI or string built per request.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;

use super::error::BoxError;

/// Body type of requests sent upstream: buffered or streamed, behind one type. The `/token`
/// client (`control`) sends it too.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// The header fields a request carries upstream. Whoever implements it (the proxy's
/// rewrite) decides which of the caller's fields survive, in the one pass that writes them;
/// `each` may be called once per attempt (a retried request is written twice).
pub trait Fields {
    /// Calls `emit` with every field to send, in order.
    fn each(&self, emit: &mut dyn FnMut(&HeaderName, &HeaderValue));
}

/// A request line and its fields. Framing (`Host`, `Content-Length`,
/// `Transfer-Encoding`) is the client's business: such fields from [`Fields`] are ignored.
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The origin-form path, already normalised.
    pub path: &'a str,
    /// The query, without its `?`.
    pub query: Option<&'a str>,
    /// The caller's own request target, when `path` and `query` are exactly its path and
    /// query: HTTP/2 sends it as `:path` as it is, instead of joining and parsing a new one
    /// per request.
    pub target: Option<&'a PathAndQuery>,
    /// The fields.
    pub fields: &'a (dyn Fields + Sync),
}

/// A request body: kept whole (so it can be sent again) or streamed from the caller.
pub enum RequestBody {
    /// Held in memory.
    Full(Bytes),
    /// Read from the caller while it is sent.
    Stream(UpstreamBody),
}

/// How a request body is delimited on an HTTP/1.1 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body and no framing field (an empty GET, HEAD, DELETE or OPTIONS).
    None,
    /// `Content-Length`.
    Known(u64),
    /// `Transfer-Encoding: chunked` (a streamed body of unknown length).
    Chunked,
}

impl RequestBody {
    /// A copy to send again if a reused connection turns out to have been closed under the
    /// request: only a body held whole, and only for a method RFC 9110 (§9.2.2) calls
    /// idempotent, since Poynt may have acted on the first copy before the connection died.
    pub(crate) fn replay(&self, method: &Method) -> Option<Self> {
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        match self {
            Self::Full(bytes) if idempotent => Some(Self::Full(bytes.clone())),
            Self::Full(_) | Self::Stream(_) => None,
        }
    }

    /// The framing this body needs: an empty body of a method that carries one still says
    /// `Content-Length: 0`, as hyper's client did.
    pub fn length(&self, method: &Method) -> BodyLength {
        match self {
            Self::Full(bytes)
                if bytes.is_empty()
                    && !matches!(*method, Method::POST | Method::PUT | Method::PATCH) =>
            {
                BodyLength::None
            }
            Self::Full(bytes) => BodyLength::Known(bytes.len() as u64),
            Self::Stream(body) => body
                .size_hint()
                .exact()
                .map_or(BodyLength::Chunked, BodyLength::Known),
        }
    }
}

/// Appends the HTTP/1.1 head of `head` to `out`: request line, `Host`, the fields, framing.
pub fn encode_head(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    host: &HeaderValue,
    length: BodyLength,
) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path.as_bytes());
    if let Some(query) = head.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    head.fields.each(&mut |name, value| {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == HOST {
            return;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
    match length {
        BodyLength::None => {}
        BodyLength::Known(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        BodyLength::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pairs(Vec<(HeaderName, HeaderValue)>);

    impl Fields for Pairs {
        fn each(&self, emit: &mut dyn FnMut(&HeaderName, &HeaderValue)) {
            for (name, value) in &self.0 {
                emit(name, value);
            }
        }
    }

    fn pairs(list: &[(&'static str, &'static str)]) -> Pairs {
        Pairs(
            list.iter()
                .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
                .collect(),
        )
    }

    fn encoded(method: &Method, query: Option<&str>, fields: &Pairs, length: BodyLength) -> String {
        let mut out = Vec::new();
        let head = RequestHead {
            method,
            path: "/businesses/b/orders",
            query,
            target: None,
            fields,
        };
        encode_head(
            &mut out,
            &head,
            &HeaderValue::from_static("services.poynt.net"),
            length,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_head_is_written_with_host_fields_and_framing_in_order() {
        let fields = pairs(&[("accept", "application/json"), ("x-a", "1"), ("x-a", "2")]);
        assert_eq!(
            encoded(
                &Method::POST,
                Some("limit=10"),
                &fields,
                BodyLength::Known(5)
            ),
            "POST /businesses/b/orders?limit=10 HTTP/1.1\r\nhost: services.poynt.net\r\n\
             accept: application/json\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(
            encoded(&Method::GET, None, &pairs(&[]), BodyLength::Chunked),
            "GET /businesses/b/orders HTTP/1.1\r\nhost: services.poynt.net\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn framing_fields_from_the_caller_are_never_written() {
        let fields = pairs(&[
            ("content-length", "999"),
            ("transfer-encoding", "chunked"),
            ("host", "evil"),
            ("x-kept", "yes"),
        ]);
        let head = encoded(&Method::GET, None, &fields, BodyLength::None);
        assert_eq!(
            head,
            "GET /businesses/b/orders HTTP/1.1\r\nhost: services.poynt.net\r\nx-kept: yes\r\n\r\n"
        );
    }

    #[test]
    fn empty_bodies_are_framed_as_hyper_framed_them() {
        let empty = RequestBody::Full(Bytes::new());
        assert_eq!(empty.length(&Method::GET), BodyLength::None);
        assert_eq!(empty.length(&Method::DELETE), BodyLength::None);
        assert_eq!(empty.length(&Method::POST), BodyLength::Known(0));
        assert_eq!(
            RequestBody::Full(Bytes::from_static(b"abc")).length(&Method::GET),
            BodyLength::Known(3)
        );
    }
}
