//! Model allowlists: exact names and `family*` patterns, with `:free` variants (needs `alloc`).

#![cfg(feature = "alloc")]

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use super::scope::list_items;

/// The suffix that names the free variant of a model (`llama-3-8b:free`).
pub const FREE_SUFFIX: &str = ":free";

/// The longest model pattern, in bytes.
pub const MAX_MODEL_PATTERN_LEN: usize = 256;

/// A model pattern or allowlist is not valid.
///
/// `index` is the position of the offending pattern in the list, counting from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ModelPatternError {
    /// The pattern is empty (or only `:free`).
    #[error("model pattern {index} is empty")]
    Empty {
        /// The position of the pattern in the list.
        index: usize,
    },
    /// The pattern is longer than [`MAX_MODEL_PATTERN_LEN`] bytes.
    #[error("model pattern {index} is longer than 256 bytes")]
    TooLong {
        /// The position of the pattern in the list.
        index: usize,
    },
    /// The pattern contains whitespace, a comma, a control or a non-ASCII character.
    #[error("model pattern {index} contains {ch:?} at byte {at}; allowed are visible ASCII characters except ','")]
    InvalidChar {
        /// The position of the pattern in the list.
        index: usize,
        /// The byte offset of the character in the pattern.
        at: usize,
        /// The character.
        ch: char,
    },
    /// A `*` other than one at the end of the name (`gpt-4*`, `llama*:free`, `*`).
    #[error("model pattern {index} has a '*' that is not at the end of the name")]
    MisplacedWildcard {
        /// The position of the pattern in the list.
        index: usize,
    },
    /// More patterns than an allowlist may hold.
    #[error("more than {max} model patterns")]
    TooMany {
        /// The most patterns an allowlist may hold.
        max: usize,
    },
}

/// One entry of a model allowlist, parsed once so that matching does no parsing.
///
/// Model names are compared byte for byte, case-sensitively, as upstream APIs compare them:
/// write them as the gateway will receive them. The forms:
///
/// | pattern | permits | does not permit |
/// |---|---|---|
/// | `gpt-4o` | `gpt-4o`, `gpt-4o:free` | `gpt-4o-mini`, `GPT-4o` |
/// | `llama-3:free` | `llama-3:free` | `llama-3` |
/// | `claude-3*` | `claude-3-opus`, `claude-3.5-sonnet:free` | `claude-2` |
/// | `llama*:free` | `llama-3:free`, `llama-2-70b:free` | `llama-3` |
/// | `*:free` | every `…:free` model | every paid model |
/// | `*` | every model | |
///
/// The `:free` rule: a model's free variant (its name followed by [`FREE_SUFFIX`]) is the same
/// model at no cost, so a pattern without `:free` permits both the model and its free variant,
/// while a pattern ending in `:free` permits only free variants (a key limited to free models
/// never reaches a paid one). Other suffixes (`:nitro`, `:beta`) are part of the name.
///
/// ```
/// use keygate::policy::ModelPattern;
/// let p = ModelPattern::new("llama-3*:free")?;
/// assert!(p.permits("llama-3.1-8b:free"));
/// assert!(!p.permits("llama-3.1-8b"));
/// # Ok::<(), keygate::policy::ModelPatternError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelPattern {
    /// The name, or the prefix before `*`, without the `:free` suffix.
    base: Box<str>,
    /// `family*`: any name starting with `base`.
    prefix: bool,
    /// Ends in `:free`: only free variants.
    free_only: bool,
}

/// A model name split once per request: the whole name, the name without `:free`, and whether
/// it had the suffix.
#[derive(Clone, Copy)]
struct Model<'a> {
    name: &'a str,
    base: &'a str,
    free: bool,
}

impl<'a> Model<'a> {
    #[inline]
    fn new(name: &'a str) -> Self {
        match name.strip_suffix(FREE_SUFFIX) {
            Some(base) => Self { name, base, free: true },
            None => Self { name, base: name, free: false },
        }
    }
}

impl ModelPattern {
    /// Parses one pattern.
    ///
    /// # Errors
    ///
    /// A [`ModelPatternError`] with index 0 saying what is wrong.
    pub fn new(pattern: &str) -> Result<Self, ModelPatternError> {
        Self::parse_at(pattern, 0)
    }

    fn parse_at(pattern: &str, index: usize) -> Result<Self, ModelPatternError> {
        if pattern.len() > MAX_MODEL_PATTERN_LEN {
            return Err(ModelPatternError::TooLong { index });
        }
        if let Some((at, ch)) = pattern.char_indices().find(|&(_, c)| !c.is_ascii_graphic() || c == ',') {
            return Err(ModelPatternError::InvalidChar { index, at, ch });
        }
        let (rest, free_only) = match pattern.strip_suffix(FREE_SUFFIX) {
            Some(rest) => (rest, true),
            None => (pattern, false),
        };
        let (base, prefix) = match rest.strip_suffix('*') {
            Some(base) => (base, true),
            None => (rest, false),
        };
        if base.contains('*') {
            return Err(ModelPatternError::MisplacedWildcard { index });
        }
        if base.is_empty() && !prefix {
            return Err(ModelPatternError::Empty { index });
        }
        Ok(Self { base: base.into(), prefix, free_only })
    }

    /// Whether this pattern permits `model`.
    #[must_use]
    pub fn permits(&self, model: &str) -> bool {
        self.permits_split(Model::new(model))
    }

    #[inline]
    fn permits_split(&self, m: Model<'_>) -> bool {
        let base = &*self.base;
        match (self.free_only, self.prefix) {
            (true, true) => m.free && m.base.starts_with(base),
            (true, false) => m.free && m.base == base,
            (false, true) => m.name.starts_with(base),
            (false, false) => m.base == base && (m.free || m.name.len() == base.len()),
        }
    }

    /// Whether every model `other` permits, this pattern permits too (a sufficient test: it
    /// never answers yes wrongly, and answers no only for pairs no real list needs).
    pub(crate) fn covers(&self, other: &Self) -> bool {
        let (mine, theirs) = (&*self.base, &*other.base);
        match (self.free_only, self.prefix) {
            // Only `mine…:free`: `other` must also be free-only, its names starting with `mine`.
            (true, true) => other.free_only && theirs.starts_with(mine),
            // Only `mine:free`.
            (true, false) => other.free_only && !other.prefix && theirs == mine,
            // Every name starting with `mine`: `other`'s names all do if its base does, and a
            // free-only exact name may also match as a whole (`mine` = `gpt:fr`, `gpt:free`).
            (false, true) => {
                theirs.starts_with(mine)
                    || (other.free_only
                        && !other.prefix
                        && mine.strip_prefix(theirs).is_some_and(|rest| FREE_SUFFIX.starts_with(rest)))
            }
            // `mine` and `mine:free`.
            (false, false) => !other.prefix && theirs == mine,
        }
    }

    /// Whether this is a `family*` prefix pattern.
    #[must_use]
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// Whether this pattern permits only free variants.
    #[must_use]
    pub fn is_free_only(&self) -> bool {
        self.free_only
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)?;
        if self.prefix {
            f.write_str("*")?;
        }
        if self.free_only {
            f.write_str(FREE_SUFFIX)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelPattern(\"{self}\")")
    }
}

impl FromStr for ModelPattern {
    type Err = ModelPatternError;
    fn from_str(s: &str) -> Result<Self, ModelPatternError> {
        Self::new(s)
    }
}

/// The models a key may use: a list of [`ModelPattern`]s; empty means any model.
///
/// Patterns are parsed when the list is built, deduplicated and sorted; checking a model is a
/// scan of byte comparisons with no parsing and no allocation. With `serde`, the list
/// deserializes from an array of strings or one comma- or space-separated string, and serializes
/// as an array of strings.
///
/// ```
/// use keygate::ModelAllowlist;
/// let models = ModelAllowlist::new(["gpt-4o", "claude-3*", "*:free"])?;
/// assert!(models.permits("gpt-4o") && models.permits("claude-3-haiku") && models.permits("mistral-7b:free"));
/// assert!(!models.permits("gpt-4o-mini") && !models.permits("mistral-7b"));
/// assert!(ModelAllowlist::default().permits("anything"));
/// # Ok::<(), keygate::policy::ModelPatternError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ModelAllowlist(Vec<ModelPattern>);

impl ModelAllowlist {
    /// The most patterns an allowlist may hold.
    pub const MAX: usize = 256;

    /// The empty allowlist: every model is permitted.
    #[must_use]
    pub const fn empty() -> Self {
        Self(Vec::new())
    }

    /// Builds the list from patterns, each exactly one pattern.
    ///
    /// # Errors
    ///
    /// The [`ModelPatternError`] of the first invalid pattern; [`ModelPatternError::TooMany`]
    /// past [`ModelAllowlist::MAX`].
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Result<Self, ModelPatternError> {
        let mut v = patterns
            .into_iter()
            .enumerate()
            .map(|(i, p)| ModelPattern::parse_at(p.as_ref(), i))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort_unstable();
        v.dedup();
        if v.len() > Self::MAX {
            return Err(ModelPatternError::TooMany { max: Self::MAX });
        }
        Ok(Self(v))
    }

    /// Parses a comma- or space-separated list of patterns (empty text is the empty list).
    ///
    /// # Errors
    ///
    /// As [`ModelAllowlist::new`].
    pub fn parse(list: &str) -> Result<Self, ModelPatternError> {
        Self::new(list_items(list))
    }

    /// Whether `model` is permitted: the list is empty or a pattern permits it.
    #[must_use]
    #[inline]
    pub fn permits(&self, model: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let m = Model::new(model);
        self.0.iter().any(|p| p.permits_split(m))
    }

    /// Whether every model `other` permits, this list permits too: an empty list permits
    /// everything; otherwise `other` must be non-empty and each of its patterns covered by one
    /// of this list's (sufficient, never wrongly yes).
    pub(crate) fn covers(&self, other: &Self) -> bool {
        self.0.is_empty() || (!other.0.is_empty() && other.0.iter().all(|p| self.0.iter().any(|q| q.covers(p))))
    }

    /// The patterns, sorted.
    #[must_use]
    pub fn as_slice(&self) -> &[ModelPattern] {
        &self.0
    }

    /// The number of patterns.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty (any model is permitted).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for ModelAllowlist {
    type Err = ModelPatternError;
    fn from_str(s: &str) -> Result<Self, ModelPatternError> {
        Self::parse(s)
    }
}

impl fmt::Debug for ModelAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for ModelAllowlist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(alloc::string::ToString::to_string))
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ModelAllowlist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ModelAllowlist;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("model patterns as an array of strings or a comma-separated string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ModelAllowlist, E> {
                ModelAllowlist::parse(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ModelAllowlist, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<alloc::string::String>()? {
                    if items.len() == ModelAllowlist::MAX {
                        return Err(serde::de::Error::custom(ModelPatternError::TooMany { max: ModelAllowlist::MAX }));
                    }
                    items.push(item);
                }
                ModelAllowlist::new(items).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests;
