//! The line format and its hash chain. A line is one JSON object:
//! `{"audit":<sequence>,"prev":"<SHA-256 hex of the previous line>","ts":"<RFC 3339>",
//! "event":"<kind>",<the event's fields>}`, with `"dropped":<n>` after `ts` when `n` events
//! were dropped since the line before (the queue was full). The hash covers the previous
//! line's bytes without its newline; the first line ever written carries [`GENESIS`].
//! `audit` leads every line so the lines can be picked out of a shared stream
//! (`grep '^{"audit":'`) without changing a byte.

use std::time::SystemTime;

use aws_lc_rs::digest::{SHA256, digest};

use super::event::Event;

/// The `prev` of the first line of a new chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The SHA-256 of `line` (without its newline), in lowercase hex.
pub fn hash(line: &[u8]) -> String {
    let sum = digest(&SHA256, line);
    let mut hex = String::with_capacity(64);
    for byte in sum.as_ref() {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    hex
}

/// Where the chain stands: the next line's sequence number and the previous line's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The sequence number the next line gets.
    pub next: u64,
    /// The hash the next line carries as `prev`.
    pub prev: String,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            next: 1,
            prev: GENESIS.to_owned(),
        }
    }
}

impl Chain {
    /// Continues after `line`, the last line already written (a restart, a new file):
    /// `None` when it is not an audit line.
    pub fn after(line: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let seq = value.get("audit")?.as_u64()?;
        Some(Self {
            next: seq + 1,
            prev: hash(line.as_bytes()),
        })
    }

    /// The next line for `event` (without a newline), `dropped` events noted, `at` its time;
    /// the chain moves past it.
    pub fn seal(&mut self, event: &Event, dropped: u64, at: SystemTime) -> String {
        let fields = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
        let fields = fields
            .strip_prefix('{')
            .and_then(|f| f.strip_suffix('}'))
            .unwrap_or_default();
        let ts = humantime::format_rfc3339_millis(at);
        let dropped = if dropped > 0 {
            format!(",\"dropped\":{dropped}")
        } else {
            String::new()
        };
        let line = format!(
            "{{\"audit\":{},\"prev\":\"{}\",\"ts\":\"{ts}\"{dropped},{fields}}}",
            self.next, self.prev
        );
        self.next += 1;
        self.prev = hash(line.as_bytes());
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eviction() -> Event {
        Event::Eviction {
            merchant: "m".into(),
            evicted: true,
        }
    }

    #[test]
    fn each_line_carries_the_hash_of_the_one_before() {
        let mut chain = Chain::default();
        let first = chain.seal(&eviction(), 0, SystemTime::UNIX_EPOCH);
        let second = chain.seal(&eviction(), 3, SystemTime::UNIX_EPOCH);
        let first_value: serde_json::Value = serde_json::from_str(&first).unwrap();
        let second_value: serde_json::Value = serde_json::from_str(&second).unwrap();
        assert_eq!(first_value["prev"], GENESIS);
        assert_eq!(second_value["prev"], hash(first.as_bytes()));
        assert_eq!(second_value["audit"], 2);
        assert_eq!(second_value["dropped"], 3);
        assert_eq!(second_value["event"], "eviction");
        assert!(second.starts_with("{\"audit\":2,"));
    }

    #[test]
    fn a_chain_continues_after_its_last_line() {
        let mut chain = Chain::default();
        let line = chain.seal(&eviction(), 0, SystemTime::UNIX_EPOCH);
        assert_eq!(Chain::after(&line), Some(chain));
        assert_eq!(Chain::after("not json"), None);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
