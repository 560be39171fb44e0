//! PEM armour checked line by line, for every key the proxy reads from a file (the app's
//! private key, the code key). PEM parsers skip what they do not recognise, so a key pasted
//! with malformed armour — Poynt's merchant-authorization document prints
//! `-----START PUBLIC KEY-----` — reads as "no key" at best; this names the line at fault.

/// A PEM armour line is not `-----BEGIN <LABEL>-----` / `-----END <LABEL>-----`, or an END
/// does not close the BEGIN before it.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: expected a PEM armour line such as \"{expected}\"; found {found:?}")]
pub struct ArmourError {
    /// 1-based line number.
    pub line: usize,
    /// What a correct line looks like here.
    pub expected: String,
    /// The line as written (armour carries no secret), at most 80 characters.
    pub found: String,
}

/// Checks that every line that looks like PEM armour (starts with a dash of any kind) is
/// exactly `-----BEGIN <LABEL>-----` or `-----END <LABEL>-----`, and that each END closes
/// the BEGIN before it. `label` is the block the caller wants, named in the message when a
/// BEGIN line is wrong.
pub fn check(text: &str, label: &str) -> Result<(), ArmourError> {
    let begin = format!("-----BEGIN {label}-----");
    let mut open: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let looks_like_armour = line.starts_with(['-', '\u{2013}', '\u{2014}', '\u{2012}']);
        if !looks_like_armour {
            continue;
        }
        let armour = |expected: String| ArmourError {
            line: index + 1,
            expected,
            found: line.chars().take(80).collect(),
        };
        let inner = line
            .strip_prefix("-----")
            .and_then(|l| l.strip_suffix("-----"));
        match (inner, &open) {
            (Some(inner), None) => match inner.strip_prefix("BEGIN ") {
                Some(found) if valid_label(found) => open = Some(found.to_owned()),
                _ => return Err(armour(begin)),
            },
            (Some(inner), Some(open_label)) => {
                if inner.strip_prefix("END ") != Some(open_label.as_str()) {
                    return Err(armour(format!("-----END {open_label}-----")));
                }
                open = None;
            }
            (None, None) => return Err(armour(begin)),
            (None, Some(open_label)) => return Err(armour(format!("-----END {open_label}-----"))),
        }
    }
    match open {
        Some(open_label) => Err(ArmourError {
            line: text.lines().count(),
            expected: format!("-----END {open_label}-----"),
            found: "the end of the text".to_owned(),
        }),
        None => Ok(()),
    }
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_begin_names_the_line_and_the_wanted_label() {
        let err = check("-----START PRIVATE KEY-----\nAAAA\n", "PRIVATE KEY").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: expected a PEM armour line such as \"-----BEGIN PRIVATE KEY-----\"; found \"-----START PRIVATE KEY-----\""
        );
    }

    #[test]
    fn an_end_must_close_its_begin_and_come_at_all() {
        let err = check("-----BEGIN A-----\nAAAA\n-----END B-----\n", "A").unwrap_err();
        assert_eq!((err.line, err.expected.as_str()), (3, "-----END A-----"));
        let err = check("-----BEGIN A-----\nAAAA\n", "A").unwrap_err();
        assert_eq!((err.line, err.found.as_str()), (2, "the end of the text"));
        assert!(check("-----BEGIN A-----\nAAAA\n-----END A-----\n", "A").is_ok());
    }
}
