//! [`Name`]: a short, validated, `Copy` name for the things a user defines and an
//! operator reads: a saga's steps, a queue's job types.
//!
//! A name is 1 to [`Name::MAX`] bytes of UTF-8 with no control characters, kept inline
//! (no allocation), so the ids built on it stay `Copy` and cheap to compare, hash and
//! log. It serializes as a plain JSON string and is validated when read back.
//!
//! ```
//! use faultline::name::{Name, NameError};
//!
//! const FLIGHT: Name = Name::from_static("flight");
//! assert_eq!(FLIGHT.as_str(), "flight");
//! assert_eq!(Name::new("flight")?, FLIGHT);
//! assert_eq!(serde_json::to_string(&FLIGHT).unwrap(), "\"flight\"");
//! assert!(matches!(Name::new(""), Err(NameError::Empty)));
//! assert!(matches!(Name::new(&"x".repeat(65)), Err(NameError::TooLong { .. })));
//! # Ok::<(), NameError>(())
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Why a string is not a [`Name`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("a name must not be empty")]
    Empty,
    /// The name is longer than [`Name::MAX`] bytes.
    #[error("the name is {len} bytes long; at most {max} are allowed", max = Name::MAX)]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a control character (a newline, an escape, …).
    #[error("the name holds the control character {0:?}")]
    Control(char),
}

/// A short validated name; see the [module docs](self).
///
/// Equality is structural (every constructor zero-fills the bytes after the name, so
/// equal bytes are equal text), which lets a `const` name be a `match` pattern; order
/// and hash are the text's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    len: u8,
    bytes: [u8; Name::MAX],
}

impl Name {
    /// The longest name, in bytes.
    pub const MAX: usize = 64;

    /// `s` as a name, or why it is not one.
    pub fn new(s: &str) -> Result<Name, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > Name::MAX {
            return Err(NameError::TooLong { len: s.len() });
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(NameError::Control(c));
        }
        Ok(Name::copy(s))
    }

    /// A name from a literal, for constants: `const PAYMENT: Name =
    /// Name::from_static("payment");`. In a `const` an invalid literal (empty, longer
    /// than [`Name::MAX`], or with an ASCII control character) is a compile error;
    /// elsewhere it panics, so use [`Name::new`] for anything not written in the code.
    pub const fn from_static(s: &'static str) -> Name {
        let b = s.as_bytes();
        assert!(
            !b.is_empty() && b.len() <= Name::MAX,
            "a name is 1 to 64 bytes"
        );
        let mut i = 0;
        while i < b.len() {
            assert!(
                b[i] >= 0x20 && b[i] != 0x7f,
                "a name holds no control character"
            );
            i += 1;
        }
        Name::copy(s)
    }

    const fn copy(s: &str) -> Name {
        let b = s.as_bytes();
        let mut bytes = [0u8; Name::MAX];
        let mut i = 0;
        while i < b.len() {
            bytes[i] = b[i];
            i += 1;
        }
        Name {
            len: b.len() as u8,
            bytes,
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Every constructor copies a whole `&str`, so the bytes are UTF-8; the
        // fallback is unreachable but keeps this free of `unsafe` and of panics.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    /// By text, byte by byte. A name holds no NUL (a control character) and every
    /// constructor zero-fills the bytes after it, so comparing the zero-padded arrays
    /// is comparing the texts (a shorter prefix pads with 0, below any byte of a
    /// name); it is done eight bytes at a time, without decoding the UTF-8 (the keys of
    /// the queue's indexes are compared on every step).
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.bytes.chunks_exact(8).zip(other.bytes.chunks_exact(8)) {
            let (a, b) = (chunk(a), chunk(b));
            if a != b {
                return a.cmp(&b);
            }
        }
        Ordering::Equal
    }
}

/// Eight bytes of a name as a big-endian number: numbers in the bytes' order.
fn chunk(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

impl Hash for Name {
    /// The text's hash (what `str`'s `Hash` feeds a hasher: its bytes, then `0xff`),
    /// without decoding the UTF-8.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.bytes[..self.len as usize]);
        state.write_u8(0xff);
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::new(s)
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Name::new(s)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a name of 1 to {} bytes", Name::MAX)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
                Name::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_const_name_is_a_pattern() {
        const HOTEL: Name = Name::from_static("hotel");
        let kind = |n: Name| match n {
            HOTEL => 1,
            _ => 2,
        };
        assert_eq!(kind(Name::new("hotel").unwrap()), 1);
        assert_eq!(kind(Name::new("hotels").unwrap()), 2);
        assert_eq!(kind(serde_json::from_str("\"hotel\"").unwrap()), 1);
    }

    #[test]
    fn equal_names_are_equal_whatever_built_them() {
        let a = Name::new("hotel").unwrap();
        const B: Name = Name::from_static("hotel");
        assert_eq!(a, B);
        assert_eq!(a.cmp(&B), Ordering::Equal);
        assert!(Name::new("car").unwrap() < a);
        assert_eq!(format!("{a} {a:?}"), "hotel \"hotel\"");
    }

    #[test]
    fn order_and_hash_are_the_texts() {
        use std::hash::DefaultHasher;
        let texts = [
            "a",
            "ab",
            "a b",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh~",
            "p10@t0",
            "p1@t0",
            "p1@t1",
            "~",
            "é",
            "e\u{301}",
            "日本",
            "ÿ",
            "x",
            &"z".repeat(64),
            &"z".repeat(63),
        ];
        let hash = |h: &dyn Fn(&mut DefaultHasher)| {
            let mut s = DefaultHasher::new();
            h(&mut s);
            s.finish()
        };
        for a in texts {
            let na = Name::new(a).unwrap();
            assert_eq!(
                hash(&|s| na.hash(s)),
                hash(&|s| a.hash(s)),
                "the hash of {a:?}"
            );
            for b in texts {
                let nb = Name::new(b).unwrap();
                assert_eq!(na.cmp(&nb), a.cmp(b), "{a:?} against {b:?}");
            }
        }
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(
            Name::new(&"é".repeat(33)),
            Err(NameError::TooLong { len: 66 })
        );
        assert!(Name::new(&"é".repeat(32)).is_ok());
        assert_eq!(Name::new("a\nb"), Err(NameError::Control('\n')));
        assert_eq!(Name::new("a\u{1b}"), Err(NameError::Control('\u{1b}')));
    }

    #[test]
    fn serde_round_trips_and_validates() {
        let n = Name::new("send_email").unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"send_email\"");
        assert_eq!(serde_json::from_str::<Name>(&json).unwrap(), n);
        assert!(serde_json::from_str::<Name>("\"\"").is_err());
        assert!(serde_json::from_str::<Name>("7").is_err());
    }
}
