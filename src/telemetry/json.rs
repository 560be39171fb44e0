//! JSON log lines: one object per event, its fields at the top level beside `timestamp`,
//! `level` and `target` (the shape `tracing-subscriber`'s flattened JSON had), except that a
//! list logged with `?` (`changed = ?keys`) is a JSON array rather than a string holding
//! one, and numbers stay numbers. Fields keep the order they were logged in.

use std::fmt;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let time = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        write!(
            writer,
            "{{\"timestamp\":\"{time}\",\"level\":\"{}\"",
            metadata.level()
        )?;
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        for (name, value) in fields.0 {
            write!(writer, ",{}:{value}", Value::from(name))?;
        }
        writeln!(writer, ",\"target\":{}}}", Value::from(metadata.target()))
    }
}

/// Collects an event's fields as JSON values, in order.
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    fn insert(&mut self, field: &Field, value: Value) {
        self.0.push((field.name(), value));
    }
}

/// A `Debug` rendering that is a JSON array (a `Vec<&str>`, say) as that array; anything
/// else as the string it is.
fn debug_value(field: &Field, text: String) -> Value {
    if field.name() != "message"
        && text.starts_with('[')
        && let Ok(array @ Value::Array(_)) = serde_json::from_str(&text)
    {
        return array;
    }
    Value::String(text)
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, debug_value(field, format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lists_are_arrays_and_numbers_numbers() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let changed = vec!["log.format", "tokens"];
            let odd = vec!["a \"quoted\"\0"];
            tracing::warn!(changed = ?changed, odd = ?odd, latency_ms = 30.806, count = 3_u64, "reloaded [x]");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["changed"], serde_json::json!(["log.format", "tokens"]));
        assert!(line["odd"].is_string(), "not JSON, so kept as text: {text}");
        assert_eq!(line["latency_ms"], 30.806);
        assert_eq!(line["count"], 3);
        assert_eq!(line["message"], "reloaded [x]");
        assert_eq!(line["level"], "WARN");
        assert!(line["target"].as_str().unwrap().contains("json"));
        let order = [
            "timestamp",
            "level",
            "message",
            "changed",
            "odd",
            "latency_ms",
            "count",
            "target",
        ];
        let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap();
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{text}");
    }
}
