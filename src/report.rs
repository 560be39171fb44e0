//! One line for an error and its causes, for every place an error reaches an operator: the
//! command's exit message, `check`, reload answers and log fields.
//!
//! Our messages often quote their cause (`cannot read x.pem: No such file or directory`) and
//! also chain it as their `source`, which a plain walk prints two or three times; a cause
//! whose text the line already holds is skipped (its own causes are still looked at).

/// An error and its sources as one line, each cause said once.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read key.pem: {source}")]
    struct Quoting {
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("poynt.private_key_file")]
    struct Naming {
        #[source]
        source: Quoting,
    }

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
    }

    #[test]
    fn a_quoted_cause_is_said_once() {
        let error = Quoting {
            source: not_found(),
        };
        assert_eq!(
            error_chain(&error),
            "cannot read key.pem: No such file or directory"
        );
    }

    #[test]
    fn a_cause_not_quoted_is_appended_and_its_own_cause_looked_at() {
        let error = Naming {
            source: Quoting {
                source: not_found(),
            },
        };
        assert_eq!(
            error_chain(&error),
            "poynt.private_key_file: cannot read key.pem: No such file or directory"
        );
    }
}
