//! Scope syntax, errors and the scopes a request requires (no `alloc` needed).
//!
//! The granted side, [`Scopes`](crate::Scopes), needs `alloc` and lives in `scopes.rs`; everything
//! here also works on bare metal, so a [`Denial`](crate::Denial) can name the required scopes in
//! its `WWW-Authenticate` header without a heap.

use core::fmt;
use core::str::FromStr;

/// The longest scope, in bytes.
pub const MAX_SCOPE_LEN: usize = 64;

/// The most scopes one request may require.
pub const MAX_REQUIRED_SCOPES: usize = 8;

/// The most bytes the required scopes of one request may take, joined by single spaces.
pub const MAX_REQUIRED_SCOPES_LEN: usize = 64;

/// A scope or list of scopes is not valid.
///
/// `index` is the position of the offending scope in the list, counting from 0 (for a
/// space- or comma-separated string, separators do not count; for an array, its index); `at` is
/// a byte offset within that scope, or within the whole text for [`ScopeError::Json`].
///
/// ```
/// use keygate::Scopes;
/// use keygate::policy::ScopeError;
/// assert_eq!(Scopes::parse("read, wr!te"), Err(ScopeError::InvalidChar { index: 1, at: 2, ch: '!' }));
/// assert_eq!(
///     Scopes::parse("read wr!te").unwrap_err().to_string(),
///     "scope 1 contains '!' at byte 2; allowed are ASCII letters, digits, '.', '_', '-', '/' and ':'"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// An array element is empty or only whitespace.
    #[error("scope {index} is empty")]
    Empty {
        /// The position of the scope in the list.
        index: usize,
    },
    /// The scope is longer than [`MAX_SCOPE_LEN`] bytes.
    #[error("scope {index} is longer than 64 bytes")]
    TooLong {
        /// The position of the scope in the list.
        index: usize,
    },
    /// The scope contains a character outside its alphabet.
    #[error(
        "scope {index} contains {ch:?} at byte {at}; allowed are ASCII letters, digits, '.', '_', '-', '/' and ':'"
    )]
    InvalidChar {
        /// The position of the scope in the list.
        index: usize,
        /// The byte offset of the character in the scope.
        at: usize,
        /// The character.
        ch: char,
    },
    /// A `:`-separated segment is empty (`:read`, `keys:`, `keys::read`).
    #[error("scope {index} has an empty segment (a leading, trailing or doubled ':')")]
    EmptySegment {
        /// The position of the scope in the list.
        index: usize,
    },
    /// A `*` that is not the whole scope or the whole last segment (`keys*`, `*:read`).
    #[error("scope {index} has a '*' that is not the whole scope or the whole last segment (write '*' or 'keys:*')")]
    MisplacedWildcard {
        /// The position of the scope in the list.
        index: usize,
    },
    /// A wildcard in a required scope: a request requires specific scopes.
    #[error("scope {index} is a wildcard, which can be granted but not required")]
    WildcardRequired {
        /// The position of the scope in the list.
        index: usize,
    },
    /// More scopes than the list may hold.
    #[error("more than {max} scopes")]
    TooMany {
        /// The most scopes the list may hold.
        max: usize,
    },
    /// The required scopes, joined by spaces, exceed [`MAX_REQUIRED_SCOPES_LEN`] bytes.
    #[error("the required scopes exceed 64 bytes")]
    ListTooLong,
    /// The text starts with `[` but is not a JSON array of strings.
    #[error("malformed JSON array of scopes at byte {at}")]
    Json {
        /// The byte offset in the text where parsing failed.
        at: usize,
    },
}

/// Whether a scope is a wildcard, and how it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeKind {
    /// Grants exactly itself.
    Exact,
    /// `*` or `prefix:*`: grants every scope starting with the text before the `*`.
    Wildcard,
}

fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/')
}

/// Validates one scope (already trimmed, not yet folded).
pub(crate) fn check_scope(s: &str, index: usize) -> Result<ScopeKind, ScopeError> {
    if s.is_empty() {
        return Err(ScopeError::Empty { index });
    }
    if s.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::TooLong { index });
    }
    if s == "*" {
        return Ok(ScopeKind::Wildcard);
    }
    let b = s.as_bytes();
    let mut kind = ScopeKind::Exact;
    let mut seg_start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b':' {
            if i == seg_start {
                return Err(ScopeError::EmptySegment { index });
            }
            seg_start = i + 1;
        } else if c == b'*' {
            // Only `prefix:*`: the star alone in the last segment.
            if i != seg_start || i + 1 != b.len() || i == 0 {
                return Err(ScopeError::MisplacedWildcard { index });
            }
            kind = ScopeKind::Wildcard;
        } else if !is_segment_byte(c) {
            let ch = s.get(i..).and_then(|t| t.chars().next()).unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(ScopeError::InvalidChar { index, at: i, ch });
        }
    }
    if seg_start == b.len() {
        return Err(ScopeError::EmptySegment { index });
    }
    Ok(kind)
}

/// Separators of the list form: ASCII whitespace and commas.
pub(crate) fn is_list_separator(c: char) -> bool {
    c == ',' || c.is_ascii_whitespace()
}

/// The items of a space- or comma-separated list; runs of separators count as one.
pub(crate) fn list_items(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_list_separator).filter(|t| !t.is_empty())
}

/// Whether a grant (folded, valid, of `kind`) permits the required scope `required` (folded, valid,
/// not a wildcard).
#[cfg(feature = "alloc")]
#[inline]
pub(crate) fn grant_permits(grant: &[u8], kind: ScopeKind, required: &[u8]) -> bool {
    match kind {
        ScopeKind::Exact => grant == required,
        // `*` → prefix ``; `keys:*` → prefix `keys:`.
        ScopeKind::Wildcard => required.starts_with(grant.split_last().map_or(grant, |(_, p)| p)),
    }
}

/// The scopes a request requires, validated and normalised, in a fixed-size value.
///
/// Parsed once (at startup, per route) from a space- or comma-separated list such as
/// `"keys:read keys:write"`, or from separate items with [`RequiredScopes::from_scopes`]. Scopes
/// are ASCII-lowercased and duplicates dropped (first occurrence kept). A required scope cannot be
/// a wildcard. The value holds at most [`MAX_REQUIRED_SCOPES`] scopes of together at most
/// [`MAX_REQUIRED_SCOPES_LEN`] bytes, inline: it is `Copy`, needs no heap, and a
/// [`Denial`](crate::Denial) carries it into the `WWW-Authenticate: Bearer ..., scope="..."`
/// header (RFC 6750 §3).
///
/// ```
/// use keygate::RequiredScopes;
/// let required: RequiredScopes = "Keys:Read, keys:write keys:read".parse()?;
/// assert_eq!(required.as_str(), "keys:read keys:write");
/// assert_eq!(required.iter().collect::<Vec<_>>(), ["keys:read", "keys:write"]);
/// assert!("keys:*".parse::<RequiredScopes>().is_err());
/// # Ok::<(), keygate::policy::ScopeError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequiredScopes {
    /// The folded scopes joined by single spaces; zero past the end.
    text: [u8; MAX_REQUIRED_SCOPES_LEN],
    /// The end offset in `text` of each scope.
    ends: [u8; MAX_REQUIRED_SCOPES],
    count: u8,
}

impl RequiredScopes {
    /// No required scope.
    pub const EMPTY: Self = Self { text: [0; MAX_REQUIRED_SCOPES_LEN], ends: [0; MAX_REQUIRED_SCOPES], count: 0 };

    /// Parses a space- or comma-separated list (empty text means no requirement).
    ///
    /// # Errors
    ///
    /// A [`ScopeError`] naming the first invalid scope; [`ScopeError::WildcardRequired`] for
    /// `*` or `prefix:*`; [`ScopeError::TooMany`] or [`ScopeError::ListTooLong`] past the bounds.
    pub fn new(list: &str) -> Result<Self, ScopeError> {
        Self::from_scopes(list_items(list))
    }

    /// Builds the set from separate scopes, each exactly one scope (surrounding ASCII whitespace
    /// is trimmed).
    ///
    /// ```
    /// use keygate::RequiredScopes;
    /// let required = RequiredScopes::from_scopes(["files:write", "keys:read"])?;
    /// assert_eq!(required.len(), 2);
    /// assert!(RequiredScopes::from_scopes(["files:write keys:read"]).is_err());
    /// # Ok::<(), keygate::policy::ScopeError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`RequiredScopes::new`], and [`ScopeError::Empty`] for an empty item.
    pub fn from_scopes<'s>(scopes: impl IntoIterator<Item = &'s str>) -> Result<Self, ScopeError> {
        let mut out = Self::EMPTY;
        for (index, raw) in scopes.into_iter().enumerate() {
            let s = raw.trim_ascii();
            if check_scope(s, index)? == ScopeKind::Wildcard {
                return Err(ScopeError::WildcardRequired { index });
            }
            out.push(s)?;
        }
        Ok(out)
    }

    /// Appends a valid scope (folding it), unless already present.
    fn push(&mut self, scope: &str) -> Result<(), ScopeError> {
        let mut folded = [0u8; MAX_SCOPE_LEN];
        let folded = folded.get_mut(..scope.len()).ok_or(ScopeError::ListTooLong)?;
        folded.copy_from_slice(scope.as_bytes());
        folded.make_ascii_lowercase();
        if self.iter_bytes().any(|s| s == folded) {
            return Ok(());
        }
        let count = usize::from(self.count);
        if count == MAX_REQUIRED_SCOPES {
            return Err(ScopeError::TooMany { max: MAX_REQUIRED_SCOPES });
        }
        let start = match count {
            0 => 0,
            _ => usize::from(self.ends[count - 1]) + 1,
        };
        let end = start + folded.len();
        let end_u8 = u8::try_from(end).map_err(|_| ScopeError::ListTooLong)?;
        let dst = self.text.get_mut(start.saturating_sub(1)..end).ok_or(ScopeError::ListTooLong)?;
        if start > 0 {
            dst[0] = b' ';
        }
        let skip = usize::from(start > 0);
        dst[skip..].copy_from_slice(folded);
        self.ends[count] = end_u8;
        self.count += 1;
        Ok(())
    }

    /// The number of scopes.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no scope is required.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The scopes joined by single spaces: the value of the `scope` attribute.
    #[must_use]
    pub fn as_str(&self) -> &str {
        let end = match self.count {
            0 => 0,
            n => usize::from(self.ends[usize::from(n) - 1]),
        };
        // Only ASCII is ever written.
        self.text.get(..end).and_then(|t| core::str::from_utf8(t).ok()).unwrap_or("")
    }

    /// The scopes, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.as_str().split(' ').filter(|s| !s.is_empty())
    }

    /// The scopes as bytes, without decoding: the hot path's view.
    #[inline]
    pub(crate) fn iter_bytes(&self) -> impl Iterator<Item = &[u8]> {
        let ends = self.ends.get(..usize::from(self.count)).unwrap_or(&[]);
        let mut start = 0usize;
        ends.iter().map(move |&e| {
            let e = usize::from(e);
            let s = self.text.get(start..e).unwrap_or(&[]);
            start = e + 1;
            s
        })
    }
}

impl Default for RequiredScopes {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl FromStr for RequiredScopes {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, ScopeError> {
        Self::new(s)
    }
}

impl fmt::Display for RequiredScopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequiredScopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequiredScopes({:?})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        for ok in ["read", "keys:read", "keys:admin:write", "a.b_c-d/e", "*", "keys:*", "a:b:*", "https://x.y/z"] {
            assert!(check_scope(ok, 0).is_ok(), "{ok}");
        }
        for (bad, e) in [
            ("", ScopeError::Empty { index: 0 }),
            (":read", ScopeError::EmptySegment { index: 0 }),
            ("keys:", ScopeError::EmptySegment { index: 0 }),
            ("keys::read", ScopeError::EmptySegment { index: 0 }),
            ("keys*", ScopeError::MisplacedWildcard { index: 0 }),
            ("*:read", ScopeError::MisplacedWildcard { index: 0 }),
            ("keys:**", ScopeError::MisplacedWildcard { index: 0 }),
            ("keys:*:x", ScopeError::MisplacedWildcard { index: 0 }),
            ("ré", ScopeError::InvalidChar { index: 0, at: 1, ch: 'é' }),
            ("a\"b", ScopeError::InvalidChar { index: 0, at: 1, ch: '"' }),
        ] {
            assert_eq!(check_scope(bad, 0), Err(e), "{bad}");
        }
        let long = "a".repeat(MAX_SCOPE_LEN + 1);
        assert_eq!(check_scope(&long, 3), Err(ScopeError::TooLong { index: 3 }));
        assert!(check_scope(&long[1..], 3).is_ok());
    }

    #[test]
    fn required_bounds() {
        let eight = "a b c d e f g h";
        assert_eq!(RequiredScopes::new(eight).map(|r| r.len()), Ok(8));
        assert_eq!(RequiredScopes::new("a b c d e f g h i"), Err(ScopeError::TooMany { max: 8 }));
        // The longest scope fits alone.
        let a = "a".repeat(MAX_SCOPE_LEN);
        assert_eq!(RequiredScopes::new(&a).unwrap().as_str(), a);
        assert_eq!(RequiredScopes::from_scopes([a.as_str(), "b"]), Err(ScopeError::ListTooLong));
        // 31 + 1 + 32 = 64 bytes fit; one more does not.
        let (x, y) = ("x".repeat(31), "y".repeat(32));
        let two = RequiredScopes::from_scopes([x.as_str(), y.as_str()]).unwrap();
        assert_eq!(two.as_str().len(), MAX_REQUIRED_SCOPES_LEN);
        assert_eq!(two.iter().collect::<alloc::vec::Vec<_>>(), [x.as_str(), y.as_str()]);
        let y33 = "y".repeat(33);
        assert_eq!(RequiredScopes::from_scopes([x.as_str(), y33.as_str()]), Err(ScopeError::ListTooLong));
        // A Denial carries required scopes or a rate-limit status, never both (one enum); it
        // stays under the 128 bytes past which clippy flags `Result<_, Denial>` as too large.
        assert!(core::mem::size_of::<crate::Denial>() <= 128, "a Denial stays small");
    }
}
