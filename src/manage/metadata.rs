//! Caller-defined key metadata: a bounded JSON object, validated and kept as compact text.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

/// The longest metadata, in bytes of compact JSON text.
pub const MAX_METADATA_LEN: usize = 4096;

/// The deepest nesting of objects and arrays in metadata (the top-level object is depth 1).
pub const MAX_METADATA_DEPTH: usize = 16;

/// The text is not acceptable metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Valid JSON, but not an object.
    #[error("must be a JSON object")]
    NotObject,
    /// Not valid JSON (RFC 8259).
    #[error("is not valid JSON at byte {at}")]
    Syntax {
        /// The byte offset where the text stops being JSON.
        at: usize,
    },
    /// Longer than [`MAX_METADATA_LEN`] bytes once compacted.
    #[error("is longer than 4096 bytes")]
    TooLong,
    /// Nested deeper than [`MAX_METADATA_DEPTH`].
    #[error("nests objects and arrays deeper than 16 levels")]
    TooDeep,
}

/// Metadata of a key: a JSON object of at most [`MAX_METADATA_LEN`] bytes (compact) and
/// [`MAX_METADATA_DEPTH`] levels, stored as text in [`KeyRecord::metadata`](crate::KeyRecord).
///
/// [`Metadata::parse`] validates the full JSON grammar (RFC 8259) without a JSON library, so the
/// rule is the same with or without the `json` feature, and keeps the text compact: whitespace between
/// tokens is dropped, while strings and numbers are kept exactly as written (no number is ever
/// rounded through a float).
///
/// ```
/// use keygate::manage::Metadata;
/// let m = Metadata::parse(r#"{ "team": "search", "cost_center": 4711, "tags": ["a", "b"] }"#)?;
/// assert_eq!(m.as_str(), r#"{"team":"search","cost_center":4711,"tags":["a","b"]}"#);
/// assert!(Metadata::parse("[1, 2]").is_err());
/// # Ok::<(), keygate::manage::MetadataError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Metadata(Box<str>);

impl Metadata {
    /// Validates `text` as a JSON object within the bounds and compacts it.
    ///
    /// # Errors
    ///
    /// A [`MetadataError`]: not JSON, not an object, too long or too deep.
    pub fn parse(text: &str) -> Result<Self, MetadataError> {
        // Whitespace aside, the compact text is no longer than the input: bound the work first.
        if text.len() > 4 * MAX_METADATA_LEN {
            return Err(MetadataError::TooLong);
        }
        let mut p = Compactor { b: text.as_bytes(), text, i: 0, out: String::with_capacity(text.len()) };
        p.ws();
        if p.b.get(p.i) != Some(&b'{') {
            // Report an invalid document as such, and a valid non-object as `NotObject`.
            p.value(1)?;
            p.ws();
            return Err(if p.i == p.b.len() { MetadataError::NotObject } else { MetadataError::Syntax { at: p.i } });
        }
        p.value(1)?;
        p.ws();
        if p.i != p.b.len() {
            return Err(MetadataError::Syntax { at: p.i });
        }
        if p.out.len() > MAX_METADATA_LEN {
            return Err(MetadataError::TooLong);
        }
        Ok(Self(p.out.into_boxed_str()))
    }

    /// The compact JSON text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The compact JSON text, owned (for [`KeyRecord::metadata`](crate::KeyRecord)).
    #[must_use]
    pub fn into_string(self) -> String {
        self.0.into()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metadata({})", self.0)
    }
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A recursive-descent validator that copies every token, and no whitespace, to `out`.
struct Compactor<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    out: String,
}

impl Compactor<'_> {
    fn err(&self) -> MetadataError {
        MetadataError::Syntax { at: self.i }
    }

    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Copies `self.text[start..self.i]` to the output.
    fn copy_from(&mut self, start: usize) -> Result<(), MetadataError> {
        // Token boundaries are ASCII bytes, so the slice is on char boundaries.
        let token = self.text.get(start..self.i).ok_or(MetadataError::Syntax { at: start })?;
        self.out.push_str(token);
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<(), MetadataError> {
        match self.b.get(self.i) {
            Some(b'{') => self.container(depth, b'}', true),
            Some(b'[') => self.container(depth, b']', false),
            Some(b'"') => self.string(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err()),
        }
    }

    /// An object (`members`: `"key": value` pairs) or an array, after its opening bracket.
    fn container(&mut self, depth: usize, close: u8, members: bool) -> Result<(), MetadataError> {
        if depth > MAX_METADATA_DEPTH {
            return Err(MetadataError::TooDeep);
        }
        self.out.push(char::from(self.b[self.i]));
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&close) {
            self.i += 1;
            self.out.push(char::from(close));
            return Ok(());
        }
        loop {
            self.ws();
            if members {
                if self.b.get(self.i) != Some(&b'"') {
                    return Err(self.err());
                }
                self.string()?;
                self.ws();
                if self.b.get(self.i) != Some(&b':') {
                    return Err(self.err());
                }
                self.i += 1;
                self.out.push(':');
                self.ws();
            }
            self.value(depth + 1)?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.out.push(',');
                }
                Some(&c) if c == close => {
                    self.i += 1;
                    self.out.push(char::from(close));
                    return Ok(());
                }
                _ => return Err(self.err()),
            }
        }
    }

    fn string(&mut self) -> Result<(), MetadataError> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return self.copy_from(start);
                }
                Some(b'\\') => {
                    let escape = self.b.get(self.i + 1).copied();
                    match escape {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or_else(|| self.err())?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(self.err());
                            }
                            // Lone surrogates are valid JSON text (RFC 8259 §8.2 allows them).
                            self.i += 6;
                        }
                        _ => return Err(self.err()),
                    }
                }
                Some(&c) if c >= 0x20 => self.i += 1,
                // A control character or the end of the text.
                _ => return Err(self.err()),
            }
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), MetadataError> {
        if !self.b.get(self.i..).is_some_and(|r| r.starts_with(word.as_bytes())) {
            return Err(self.err());
        }
        self.i += word.len();
        self.out.push_str(word);
        Ok(())
    }

    fn number(&mut self) -> Result<(), MetadataError> {
        let start = self.i;
        let digits = |s: &mut Self| {
            let from = s.i;
            while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                s.i += 1;
            }
            s.i > from
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        if self.b.get(self.i) == Some(&b'0') {
            self.i += 1;
        } else if !digits(self) {
            return Err(self.err());
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(self.err());
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return Err(self.err());
            }
        }
        self.copy_from(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn compacts_valid_objects() {
        for (text, compact) in [
            ("{}", "{}"),
            (" { } ", "{}"),
            (
                "{\"a\" : [ 1 , -2.5e+3 , true , false , null , \"x y\" ] }",
                r#"{"a":[1,-2.5e+3,true,false,null,"x y"]}"#,
            ),
            (
                r#"{"esc":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00","n":0.1000000000000000055511151231257827}"#,
                r#"{"esc":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00","n":0.1000000000000000055511151231257827}"#,
            ),
            ("{\"é\":\"ünïcödé\"}", "{\"é\":\"ünïcödé\"}"),
            ("{\"a\":{\"b\":{}}}", "{\"a\":{\"b\":{}}}"),
        ] {
            assert_eq!(Metadata::parse(text).map(|m| m.to_string()), Ok(compact.to_string()), "{text}");
        }
    }

    #[test]
    fn refusals() {
        for (text, e) in [
            ("", MetadataError::Syntax { at: 0 }),
            ("[]", MetadataError::NotObject),
            (" \"s\" ", MetadataError::NotObject),
            ("42", MetadataError::NotObject),
            ("null", MetadataError::NotObject),
            ("[1,]", MetadataError::Syntax { at: 3 }),
            ("{", MetadataError::Syntax { at: 1 }),
            ("{\"a\"}", MetadataError::Syntax { at: 4 }),
            ("{\"a\":1,}", MetadataError::Syntax { at: 7 }),
            ("{a:1}", MetadataError::Syntax { at: 1 }),
            ("{\"a\":01}", MetadataError::Syntax { at: 6 }),
            ("{\"a\":1.}", MetadataError::Syntax { at: 7 }),
            ("{\"a\":tru}", MetadataError::Syntax { at: 5 }),
            ("{\"a\":\"\\x\"}", MetadataError::Syntax { at: 6 }),
            ("{\"a\":\"\\u12g4\"}", MetadataError::Syntax { at: 6 }),
            ("{\"a\":\"\n\"}", MetadataError::Syntax { at: 6 }),
            ("{} {}", MetadataError::Syntax { at: 3 }),
            ("[] x", MetadataError::Syntax { at: 3 }),
        ] {
            assert_eq!(Metadata::parse(text), Err(e), "{text:?}");
        }
    }

    #[test]
    fn bounds() {
        let deep = |n: usize| {
            let mut s = "{\"a\":".to_string();
            s.push_str(&"[".repeat(n - 1));
            s.push_str(&"]".repeat(n - 1));
            s.push('}');
            s
        };
        assert!(Metadata::parse(&deep(MAX_METADATA_DEPTH)).is_ok());
        assert_eq!(Metadata::parse(&deep(MAX_METADATA_DEPTH + 1)), Err(MetadataError::TooDeep));
        let pad = "x".repeat(MAX_METADATA_LEN - 8);
        let fits = alloc::format!("{{\"k\":\"{pad}\"}}");
        assert_eq!(fits.len(), MAX_METADATA_LEN);
        // Whitespace does not count.
        assert!(Metadata::parse(&alloc::format!("  {{ \"k\" : \"{pad}\" }}  ")).is_ok());
        let over = alloc::format!("{{\"k\":\"{pad}x\"}}");
        assert_eq!(Metadata::parse(&over), Err(MetadataError::TooLong));
        assert_eq!(Metadata::parse(&" ".repeat(4 * MAX_METADATA_LEN + 1)), Err(MetadataError::TooLong));
    }
}
