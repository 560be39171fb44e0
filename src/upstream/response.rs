//! An HTTP/1.1 response head from Poynt, parsed (httparse) into what the caller is sent: the
//! status and a header map whose values share the connection's read buffer (no copy per
//! field), with the hop-by-hop fields left out in the same pass; plus what the connection
//! needs to know — where the body ends and whether the connection can be reused.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::error::SendError;
use super::framing::{Chunk, Framing};
use super::hop::{Nominated, is_hop_by_hop_bytes};

/// Most header fields a response may have (hyper's client has the same limit).
const MAX_HEADERS: usize = 100;

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request once this body is read.
    pub(crate) keep_alive: bool,
}

/// Parses the response head at the start of `buf`, taking it out of the buffer when it is
/// complete (`None`: more bytes are needed). `method` is the request's: a HEAD response
/// has no body whatever its fields say.
pub(crate) fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, SendError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let used = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => {
            return Err(SendError::Malformed(format!(
                "its head is invalid: {error}"
            )));
        }
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| SendError::Malformed(format!("found status {code}")))?;
    let http11 = response.version == Some(1);
    let base = buf.as_ptr() as usize;
    // Where each kept field's name and value sit in the head, to share them after the split.
    let mut kept = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let mut count = 0;
    let mut length: Option<u64> = None;
    // The one Content-Length field forwarded (its index in `kept`), reduced to one value.
    let mut length_field: Option<usize> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = !http11;
    let nominated = Nominated::from_values(response.headers.iter().filter_map(|h| {
        (h.name.len() == 10 && h.name.eq_ignore_ascii_case("connection")).then_some(h.value)
    }));
    for header in response.headers.iter() {
        let name = header.name.as_bytes();
        let mut value = header.value;
        // Compared by length first: most fields are none of these.
        if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
            let this = parse_length(value).ok_or_else(|| {
                SendError::Malformed(format!(
                    "expected Content-Length digits; found {:?}",
                    String::from_utf8_lossy(value)
                ))
            })?;
            if length.is_some_and(|seen| seen != this) {
                return Err(SendError::Malformed(
                    "found two different Content-Length values".into(),
                ));
            }
            length = Some(this);
            if length_field.is_some() || nominated.contains(name) {
                continue;
            }
            // `5, 5` or a repeated field is forwarded as one `5` (RFC 9110 §8.6): its first
            // digit run, trimmed, is that value.
            length_field = Some(count);
            value = value
                .split(|b| *b == b',')
                .next()
                .unwrap_or(value)
                .trim_ascii();
        } else if name.len() == 17 && name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.len() == 10 && name.eq_ignore_ascii_case(b"connection") {
            if value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                close = true;
            }
            continue;
        }
        if is_hop_by_hop_bytes(name) || nominated.contains(name) {
            continue;
        }
        kept[count] = (
            offset(name, base),
            name.len() as u32,
            offset(value, base),
            value.len() as u32,
        );
        count += 1;
    }
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let (framing, reusable_framing) = if no_body {
        (Framing::Done, true)
    } else if transfer_encoding {
        // Transfer-Encoding wins over Content-Length; a message with both is suspect, so its
        // connection is not reused.
        if chunked {
            (Framing::Chunked(Chunk::Size), length.is_none())
        } else {
            (Framing::Close, false)
        }
    } else {
        match length {
            Some(0) => (Framing::Done, true),
            Some(length) => (Framing::Length(length), true),
            None => (Framing::Close, false),
        }
    };
    let head = buf.split_to(used).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    // Transfer-Encoding frames the body: a Content-Length beside it is stale, and an
    // intermediary must not forward it (RFC 9112 §6.3).
    let dropped = if transfer_encoding {
        length_field
    } else {
        None
    };
    for (index, &(name_at, name_len, value_at, value_len)) in kept[..count].iter().enumerate() {
        if Some(index) == dropped {
            continue;
        }
        let name = &head[name_at as usize..(name_at + name_len) as usize];
        let name = HeaderName::from_bytes(name).map_err(|_| {
            SendError::Malformed(format!(
                "found an invalid field name {:?}",
                String::from_utf8_lossy(name)
            ))
        })?;
        let value = head.slice(value_at as usize..(value_at + value_len) as usize);
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| SendError::Malformed(format!("found an invalid value for {name}")))?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive: !close && reusable_framing,
    }))
}

/// Where `bytes`, a slice of the head, starts in it.
fn offset(bytes: &[u8], base: usize) -> u32 {
    (bytes.as_ptr() as usize - base) as u32
}

/// A Content-Length value: digits, or a list of identical digit runs ("42, 42").
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let number = std::str::from_utf8(part).ok()?.parse::<u64>().ok()?;
        if found.is_some_and(|seen| seen != number) {
            return None;
        }
        found = Some(number);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(wire: &str, method: &Method) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(wire.as_bytes());
        let head = parse(&mut buf, method).unwrap().expect("complete head");
        (head, buf)
    }

    #[test]
    fn a_head_is_taken_out_of_the_buffer_without_its_hop_by_hop_fields() {
        let (head, rest) = parsed(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive, X-Hop\r\n\
             X-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 4\r\nX-Kept: a\r\nX-Kept: b\r\n\r\nbody",
            &Method::GET,
        );
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(4));
        assert!(head.keep_alive);
        let names: Vec<&str> = head.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "content-length", "x-kept"]);
        assert_eq!(head.headers.get_all("x-kept").iter().count(), 2);
        assert_eq!(&rest[..], b"body");
    }

    #[test]
    fn content_length_is_forwarded_once_and_only_when_it_frames_the_body() {
        let lengths = |wire: &str| {
            let (head, _) = parsed(wire, &Method::GET);
            head.headers
                .get_all("content-length")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            lengths("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            ["5"]
        );
        assert_eq!(
            lengths("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            ["5"]
        );
        assert!(
            lengths("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .is_empty()
        );
        assert!(
            lengths(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5, 5\r\n\r\n"
            )
            .is_empty()
        );
        assert_eq!(
            lengths("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
            ["10"]
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &Method::GET,
                Framing::Chunked(Chunk::Size),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                &Method::GET,
                Framing::Chunked(Chunk::Size),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                &Method::GET,
                Framing::Close,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                &Method::GET,
                Framing::Close,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                &Method::HEAD,
                Framing::Done,
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                &Method::GET,
                Framing::Done,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                &Method::GET,
                Framing::Done,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                &Method::GET,
                Framing::Done,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
                &Method::GET,
                Framing::Length(7),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\n",
                &Method::GET,
                Framing::Length(7),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\n",
                &Method::GET,
                Framing::Length(7),
                false,
            ),
        ];
        for (wire, method, framing, keep_alive) in cases {
            let (head, _) = parsed(wire, method);
            assert_eq!(
                (head.framing, head.keep_alive),
                (framing, keep_alive),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn partial_heads_wait_and_broken_ones_fail() {
        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le".as_bytes());
        assert!(parse(&mut partial, &Method::GET).unwrap().is_none());
        for wire in [
            "HTTP/1.1 200 OK\r\nContent-Length: 7, 8\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
            "HTTP/1.1 999999 OK\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(wire.as_bytes());
            assert!(parse(&mut buf, &Method::GET).is_err(), "{wire:?}");
        }
    }
}
