//! Merchant (business) identity: Poynt business IDs are UUIDs, and the proxy keys every
//! token, metric-free log field and admin entry by this one normalised form.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A Poynt business ID. Holding a parsed `Uuid` (not the caller's text) makes the cache key
/// 16 bytes, `Copy`, and canonical: `ABC...` and `abc...` are one merchant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MerchantId(Uuid);

/// Why a string is not a business ID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected a business ID in UUID form (8-4-4-4-12 hex digits); found {found}")]
pub struct InvalidMerchantId {
    /// A printable, length-capped rendering of the rejected input.
    pub found: String,
}

impl MerchantId {
    /// Parses the hyphenated 36-character form only, in any letter case. Other forms the
    /// `uuid` crate accepts (braced, URN, simple) are refused: Poynt never writes them, and
    /// one spelling per merchant keeps logs and paths comparable.
    pub fn parse(text: &str) -> Result<Self, InvalidMerchantId> {
        if text.len() != 36 {
            return Err(InvalidMerchantId::from_input(text));
        }
        Uuid::try_parse(text)
            .map(Self)
            .map_err(|_| InvalidMerchantId::from_input(text))
    }

    /// The merchant a UUID names (any UUID is a well-formed business ID), for keys read
    /// back from the token store.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The parsed UUID.
    pub fn uuid(&self) -> Uuid {
        self.0
    }
}

impl InvalidMerchantId {
    fn from_input(text: &str) -> Self {
        const SHOWN: usize = 40;
        let mut found: String = text.chars().take(SHOWN).collect();
        if text.chars().count() > SHOWN {
            found.push('…');
        }
        Self {
            found: format!("{found:?}"),
        }
    }
}

impl FromStr for MerchantId {
    type Err = InvalidMerchantId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerchantId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case() {
        let upper = MerchantId::parse("C9580C24-B61E-4E0D-AD26-1DD1D3943D2C").unwrap();
        assert_eq!(upper.to_string(), "c9580c24-b61e-4e0d-ad26-1dd1d3943d2c");
    }

    #[test]
    fn refuses_other_uuid_spellings_and_garbage() {
        for bad in [
            "",
            "abc",
            "../x",
            "c9580c24b61e4e0dad261dd1d3943d2c",
            "{c9580c24-b61e-4e0d-ad26-1dd1d3943d2c}",
            "c9580c24-b61e-4e0d-ad26-1dd1d3943d2g",
        ] {
            assert!(MerchantId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn error_names_what_was_found_capped() {
        let long = "x".repeat(300);
        let err = MerchantId::parse(&long).unwrap_err();
        assert!(err.to_string().contains("UUID"));
        assert!(err.found.len() < 60, "{}", err.found);
    }
}
