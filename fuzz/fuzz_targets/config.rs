//! The configuration loader on any text: a checked configuration or an error naming what
//! was wrong; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poynt_proxy::config::{Config, ConfigError, KeySources};

fuzz_target!(|text: &str| {
    match Config::parse(text, &KeySources::default()) {
        Ok(_) => {}
        Err(ConfigError::Invalid { key, problem }) => assert!(!key.is_empty() && !problem.is_empty()),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
