//! Where store keys come from: a file holding the base64 of 32 random bytes
//! (`store.key_file`, `store.previous_key_files`), the [`STORE_KEY_ENV`] environment variable
//! (which overrides `store.key_file`, so a secret store can supply the key without a file),
//! or — embedded backend only, when neither is set — a key created beside the data file on
//! first start. Key text is read into zeroizing buffers and never printed.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::zeroize::Zeroizing;
use secrecy::{SecretBox, SecretString};

use super::seal::{KEY_LEN, Key};

/// Environment variable that may carry the current store key (base64 of 32 bytes); it
/// overrides `store.key_file`.
pub const STORE_KEY_ENV: &str = "POYNT_PROXY_STORE_KEY";

/// Where a key came from, so an error can name the setting to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `store.key_file` (resolved path).
    File(PathBuf),
    /// [`STORE_KEY_ENV`].
    Env,
    /// The key the embedded backend keeps beside its data file.
    Beside(PathBuf),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "store.key_file ({})", path.display()),
            Self::Env => f.write_str(STORE_KEY_ENV),
            Self::Beside(path) => write!(
                f,
                "{} (the key kept beside store.path; set store.key_file or {STORE_KEY_ENV} to use another)",
                path.display()
            ),
        }
    }
}

/// The current store key and where it came from.
#[derive(Debug, Clone)]
pub struct StoreKey {
    /// Where it came from.
    pub origin: KeyOrigin,
    /// The key.
    pub key: Key,
}

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StoreKeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not the base64 of 32 bytes.
    #[error(
        "expected the base64 of {KEY_LEN} random bytes (`poynt-proxy store keygen` prints one); found {found}"
    )]
    Format {
        /// What was found, without the key text.
        found: String,
    },
    /// A key could not be created beside the data.
    #[error("cannot create key file {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The data file exists but the key beside it does not: a new key would not open it.
    #[error(
        "store.path {data} holds data but its key {key} is missing; restore the key file (or set store.key_file / {STORE_KEY_ENV}), or remove the data file to start empty"
    )]
    Missing {
        /// The data file.
        data: PathBuf,
        /// The key file that should be beside it.
        key: PathBuf,
    },
}

/// Parses key text: the base64 of exactly 32 bytes, surrounding whitespace ignored.
pub fn parse(text: &str) -> Result<Key, StoreKeyError> {
    let decoded =
        Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| StoreKeyError::Format {
                    found: "text that is not base64".into(),
                })?,
        );
    let bytes: [u8; KEY_LEN] =
        decoded
            .as_slice()
            .try_into()
            .map_err(|_| StoreKeyError::Format {
                found: format!("{} bytes", decoded.len()),
            })?;
    Ok(Key::new(&SecretBox::new(Box::new(bytes))))
}

/// Reads and parses a key file.
pub fn read_file(path: &Path) -> Result<Key, StoreKeyError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| StoreKeyError::Read {
                path: path.to_owned(),
                source,
            })?,
        );
    parse(&text)
}

/// A new key's text: the base64 of 32 bytes from the system's random number generator.
pub fn generate() -> SecretString {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(bytes.as_mut_slice()).expect("system random number generator");
    STANDARD.encode(bytes.as_slice()).into()
}

/// Where the embedded backend keeps its key when none is configured: `<path>.key`.
pub fn beside(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// The key beside `data` as it is now, creating nothing: read when present; `None` when
/// neither it nor the data exists (the first start creates it); an error when the data
/// exists without it, since a new key would not open that data.
pub fn load_beside(data: &Path) -> Result<Option<StoreKey>, StoreKeyError> {
    let path = beside(data);
    if path.exists() {
        return Ok(Some(StoreKey {
            key: read_file(&path)?,
            origin: KeyOrigin::Beside(path),
        }));
    }
    if std::fs::metadata(data).is_ok_and(|m| m.len() > 0) {
        return Err(StoreKeyError::Missing {
            data: data.to_owned(),
            key: path,
        });
    }
    Ok(None)
}

/// The key beside `data`: read when present; created (mode 0600) when neither it nor the data
/// exists. Returns the key and whether it was just created.
pub fn load_or_create_beside(data: &Path) -> Result<(StoreKey, bool), StoreKeyError> {
    if let Some(key) = load_beside(data)? {
        return Ok((key, false));
    }
    let path = beside(data);
    let origin = KeyOrigin::Beside(path.clone());
    let text = generate();
    let create = |source| StoreKeyError::Create {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(create)?;
    {
        use secrecy::ExposeSecret as _;
        writeln!(file, "{}", text.expose_secret()).map_err(create)?;
    }
    file.sync_all().map_err(create)?;
    Ok((
        StoreKey {
            key: read_file(&path)?,
            origin,
        },
        true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        let key = parse(&format!("  {}\n", a.expose_secret())).unwrap();
        assert_eq!(key.id(), parse(a.expose_secret()).unwrap().id());
    }

    #[test]
    fn wrong_text_says_what_was_found_without_echoing_it() {
        let short = STANDARD.encode([9u8; 16]);
        let err = parse(&short).err().unwrap().to_string();
        assert!(err.contains("found 16 bytes"), "{err}");
        assert!(!err.contains(&short), "{err}");
        let err = parse("not base64 at all!").err().unwrap().to_string();
        assert!(err.contains("not base64"), "{err}");
        assert!(!err.contains("at all"), "{err}");
    }

    #[test]
    fn a_key_beside_existing_data_is_not_invented() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("tokens.redb");
        std::fs::write(&data, b"data").unwrap();
        let err = load_or_create_beside(&data).err().unwrap().to_string();
        assert!(err.contains("tokens.redb.key is missing"), "{err}");
        assert!(!beside(&data).exists());
    }
}
