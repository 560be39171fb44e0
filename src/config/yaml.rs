//! YAML text into the raw schema, with errors that name the file and point at the line at
//! fault. serde_yaml reports a duplicate key at the start of the mapping that holds it (line
//! 1 for a top-level key), so for a top-level duplicate the lines are scanned for the second
//! occurrence and that line is reported instead.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::error::ConfigError;

/// Deserializes `text`; an error starts with `file` (when the text came from one).
pub(super) fn from_str<T: DeserializeOwned>(
    text: &str,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    serde_yaml::from_str(text).map_err(|error| {
        let message = error.to_string();
        let message = duplicate_key(text, &message).unwrap_or(message);
        ConfigError::Syntax(match file {
            Some(file) => format!("{}: {message}", file.display()),
            None => message,
        })
    })
}

/// For a "duplicate" error naming a top-level key, where it is repeated: `line N:
/// duplicate top-level key `k` (first at line M)`; `None` for anything else.
fn duplicate_key(text: &str, message: &str) -> Option<String> {
    if !message.contains("duplicate") {
        return None;
    }
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(key) = top_level_key(line) else {
            continue;
        };
        match seen.iter().find(|(earlier, _)| *earlier == key) {
            Some((_, first)) if message.contains(key) => {
                return Some(format!(
                    "line {}: duplicate top-level key `{key}` (first at line {first}); each key may appear once",
                    index + 1
                ));
            }
            _ => seen.push((key, index + 1)),
        }
    }
    None
}

/// The key a line starts at column 0 (`name:`), if it does.
fn top_level_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once(':')?;
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    plain.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_occurrence_of_a_top_level_key_is_named() {
        let text = "listen: a\npoynt:\n  listen: b\nlog:\n  level: info\nlisten: c\n";
        assert_eq!(
            duplicate_key(text, "duplicate field `listen` at line 1 column 1").as_deref(),
            Some(
                "line 6: duplicate top-level key `listen` (first at line 1); each key may appear once"
            )
        );
        assert_eq!(duplicate_key(text, "unknown field `x`"), None);
    }
}
