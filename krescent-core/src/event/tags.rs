//! Tags: `key:value` strings that index events for queries.
//!
//! Every constructor of a [`Tag`] checks one rule for keys and one for values (see [`Tag`]),
//! so a tag that exists can be stored and indexed alike by every store.

use std::fmt;
use std::sync::Arc;

/// The longest tag key, in bytes.
///
/// With [`MAX_TAG_VALUE_LEN`] it bounds the text `key:value` at 1,280 bytes, which every
/// store's tag index holds: see [`Tag`] for the arithmetic.
pub const MAX_TAG_KEY_LEN: usize = 255;

/// The longest tag value, in bytes (of UTF-8, not characters).
///
/// PostgreSQL refuses an index row over 2,704 bytes (a third of an 8 KB page). Its widest tag
/// index row is a primary key of `(seg bigint, tag text, type text, position bigint)`: 8 + 8
/// bytes of integers, a `key:value` of at most 255 + 1 + 1,024 = 1,280 bytes, a type name of
/// at most 255 bytes ([`MAX_TYPE_NAME_LEN`](crate::event::MAX_TYPE_NAME_LEN)), two 4-byte
/// length headers and an 8-byte row header: about 1,570 bytes, uncompressed, well under the
/// limit. SQLite and the in-memory store have no lower limit.
pub const MAX_TAG_VALUE_LEN: usize = 1024;

/// Why a tag could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// The key was empty.
    #[error("tag key is empty (in tag `{tag}`)")]
    EmptyKey {
        /// The offending tag text.
        tag: String,
    },
    /// The key contained `:`, whitespace or a control character.
    #[error(
        "tag key `{key}` is invalid: keys may not contain `:`, whitespace or control characters"
    )]
    InvalidKey {
        /// The offending key.
        key: String,
    },
    /// The key was longer than [`MAX_TAG_KEY_LEN`] bytes.
    #[error("tag key `{key}` is {len} bytes long; keys hold at most {MAX_TAG_KEY_LEN} bytes")]
    KeyTooLong {
        /// The offending key.
        key: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The value contained a NUL character, which PostgreSQL cannot store in text.
    #[error("the value of tag key `{key}` contains a NUL character (at byte {at})")]
    ValueContainsNul {
        /// The key of the offending tag.
        key: String,
        /// The byte offset of the first NUL in the value.
        at: usize,
    },
    /// The value was longer than [`MAX_TAG_VALUE_LEN`] bytes.
    #[error(
        "the value of tag key `{key}` is {len} bytes long; tag values hold at most \
         {MAX_TAG_VALUE_LEN} bytes"
    )]
    ValueTooLong {
        /// The key of the offending tag.
        key: String,
        /// The value's length in bytes.
        len: usize,
    },
    /// A tag parsed from text had no `:` separator.
    #[error("tag `{tag}` has no `:` between key and value")]
    MissingSeparator {
        /// The offending tag text.
        tag: String,
    },
}

/// Checks a tag key: 1 to [`MAX_TAG_KEY_LEN`] bytes, without `:`, whitespace or control
/// characters.
pub fn validate_tag_key(key: &str) -> Result<(), TagError> {
    if key.is_empty() {
        return Err(TagError::EmptyKey {
            tag: format!("{key}:"),
        });
    }
    if key.len() > MAX_TAG_KEY_LEN {
        return Err(TagError::KeyTooLong {
            key: key.into(),
            len: key.len(),
        });
    }
    if key
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(TagError::InvalidKey { key: key.into() });
    }
    Ok(())
}

/// Checks a tag value: at most [`MAX_TAG_VALUE_LEN`] bytes and no NUL character. `key` only
/// names the tag in the error. (A value is a `str`, so it is valid UTF-8 already.)
pub fn validate_tag_value(key: &str, value: &str) -> Result<(), TagError> {
    if value.len() > MAX_TAG_VALUE_LEN {
        return Err(TagError::ValueTooLong {
            key: key.into(),
            len: value.len(),
        });
    }
    if let Some(at) = value.bytes().position(|b| b == 0) {
        return Err(TagError::ValueContainsNul {
            key: key.into(),
            at,
        });
    }
    Ok(())
}

/// One tag of an event, stored as the text `key:value`.
///
/// The key never contains `:`, so the value is everything after the first `:` and may itself
/// contain colons. Cloning is a reference-count increment.
///
/// # The rule every tag follows
///
/// Every constructor ([`Tag::new`], [`Tag::parse`], deserializing, [`TagsBuilder`]) checks it,
/// so a `Tag` that exists is stored and found alike by every store:
///
/// - the **key** holds 1 to [`MAX_TAG_KEY_LEN`] (255) bytes, without `:`, whitespace or
///   control characters;
/// - the **value** is UTF-8 text (it is a `str`) of at most [`MAX_TAG_VALUE_LEN`] (1,024)
///   bytes, without a NUL character. It may be empty and may contain `:`, whitespace and other
///   control characters.
///
/// Why these limits: PostgreSQL cannot store a NUL in text, and refuses an index row over
/// 2,704 bytes; its widest tag index row with the longest key, the longest value and the
/// longest type name is about 1,570 bytes (see [`MAX_TAG_VALUE_LEN`]). SQLite and the
/// in-memory store would accept more; they refuse the same tags so that an application can
/// move between stores.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Arc<str>);

impl Tag {
    /// Builds the tag `key:value`, rejecting a key or a value that breaks
    /// [the rule](Tag#the-rule-every-tag-follows).
    ///
    /// ```
    /// # use krescent_core::{Tag, TagError};
    /// let tag = Tag::new("product", "WIDGET-42").unwrap();
    /// assert_eq!(tag.as_str(), "product:WIDGET-42");
    /// assert!(Tag::new("a:b", "x").is_err());
    /// assert!(matches!(Tag::new("note", "a\0b"), Err(TagError::ValueContainsNul { .. })));
    /// assert!(matches!(Tag::new("note", "x".repeat(1025)), Err(TagError::ValueTooLong { .. })));
    /// ```
    pub fn new(key: &str, value: impl fmt::Display) -> Result<Self, TagError> {
        validate_tag_key(key)?;
        let text = format!("{key}:{value}");
        validate_tag_value(key, &text[key.len() + 1..])?;
        Ok(Tag(Arc::from(text)))
    }

    /// Parses `key:value` text (the value is everything after the first `:`), checking
    /// [the rule](Tag#the-rule-every-tag-follows).
    pub fn parse(text: &str) -> Result<Self, TagError> {
        let Some((key, value)) = text.split_once(':') else {
            return Err(TagError::MissingSeparator { tag: text.into() });
        };
        if key.is_empty() {
            return Err(TagError::EmptyKey { tag: text.into() });
        }
        validate_tag_key(key)?;
        validate_tag_value(key, value)?;
        Ok(Tag(Arc::from(text)))
    }

    /// The whole `key:value` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `:`.
    pub fn key(&self) -> &str {
        self.0.split_once(':').map_or(&*self.0, |(k, _)| k)
    }

    /// The part after the first `:`.
    pub fn value(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, v)| v)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Tag {
    type Err = TagError;
    fn from_str(s: &str) -> Result<Self, TagError> {
        Tag::parse(s)
    }
}

impl serde::Serialize for Tag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Tag::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The tags of one event: a sorted set without duplicates. Cloning is a reference-count
/// increment.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Tags(Arc<[Tag]>);

impl Tags {
    /// No tags.
    pub fn empty() -> Self {
        Tags(Arc::from(Vec::new()))
    }

    /// Builds a set from any tags; sorts and removes duplicates.
    pub fn from_tags(tags: impl IntoIterator<Item = Tag>) -> Self {
        let mut v: Vec<Tag> = tags.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Tags(Arc::from(v))
    }

    /// Parses each `key:value` text.
    pub fn parse<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Self, TagError> {
        let tags = texts
            .into_iter()
            .map(Tag::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_tags(tags))
    }

    /// Whether `tag` is in the set.
    pub fn contains(&self, tag: &Tag) -> bool {
        self.0.binary_search(tag).is_ok()
    }

    /// Whether every tag of `required` is in the set.
    pub fn contains_all<'a>(&self, required: impl IntoIterator<Item = &'a Tag>) -> bool {
        required.into_iter().all(|t| self.contains(t))
    }

    /// The tags in sorted order.
    pub fn iter(&self) -> std::slice::Iter<'_, Tag> {
        self.0.iter()
    }

    /// The tags as a slice.
    pub fn as_slice(&self) -> &[Tag] {
        &self.0
    }

    /// How many tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = &'a Tag;
    type IntoIter = std::slice::Iter<'a, Tag>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<Tag> for Tags {
    fn from_iter<I: IntoIterator<Item = Tag>>(iter: I) -> Self {
        Tags::from_tags(iter)
    }
}

impl serde::Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Tags::from_tags(Vec::<Tag>::deserialize(d)?))
    }
}

/// A value that can be the value of a tag. Every `Display` type is one: strings, integers,
/// UUIDs and your own identifier types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the value of a krescent tag",
    label = "this field is marked `#[krescent(tag)]`",
    note = "a tag value is written with `Display`: implement `std::fmt::Display` for `{Self}` or tag another field"
)]
pub trait TagValue {
    /// Appends the value's text to `out`.
    fn write_tag_value(&self, out: &mut String);
}

impl<T: fmt::Display + ?Sized> TagValue for T {
    fn write_tag_value(&self, out: &mut String) {
        use fmt::Write;
        // Writing into a String cannot fail.
        let _ = write!(out, "{self}");
    }
}

/// `key:value` for a key the derive checked at compile time. Used by generated code for the
/// tags of a derived projection's *queries*.
///
/// The value is not checked, as the derive's query functions cannot fail: a query tag whose
/// value breaks the rule matches no stored event, since no such event can be appended
/// (PostgreSQL fails a read whose tag holds a NUL with a backend error). Tags of events
/// being appended go through [`TagsBuilder`], which checks values.
#[doc(hidden)]
pub fn static_key_tag<V: TagValue + ?Sized>(key: &'static str, value: &V) -> Tag {
    Tag(Arc::from(static_key_text(key, value)))
}

fn static_key_text<V: TagValue + ?Sized>(key: &'static str, value: &V) -> String {
    let mut text = String::with_capacity(key.len() + 16);
    text.push_str(key);
    text.push(':');
    value.write_tag_value(&mut text);
    text
}

/// Whether one of `lists` holds `key`; evaluated at compile time by `#[derive(Projection)]`
/// to check that a tag filter's key is carried by a handled variant.
#[doc(hidden)]
pub const fn has_tag_key(lists: &[&[&str]], key: &str) -> bool {
    let mut i = 0;
    while i < lists.len() {
        let mut j = 0;
        while j < lists[i].len() {
            if str_eq(lists[i][j], key) {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Collects the tags of one event; used by derived [`Event::tags`](crate::Event::tags) and
/// [`Event::try_tags`](crate::Event::try_tags).
///
/// Each value is checked against [the rule](Tag#the-rule-every-tag-follows) as it is pushed:
/// a value that breaks it is left out of the set and remembered, and
/// [`try_build`](Self::try_build) returns the first such error.
///
/// ```
/// # use krescent_core::event::{TagError, TagsBuilder};
/// let mut tags = TagsBuilder::with_capacity(2);
/// tags.push("product", "W-1");
/// tags.push("note", "a\0b");
/// let error = tags.try_build().unwrap_err();
/// assert!(matches!(error, TagError::ValueContainsNul { key, .. } if key == "note"));
/// ```
#[derive(Debug, Default)]
pub struct TagsBuilder {
    tags: Vec<Tag>,
    error: Option<TagError>,
}

impl TagsBuilder {
    /// A builder with room for `n` tags.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            tags: Vec::with_capacity(n),
            error: None,
        }
    }

    /// Adds `key:value`. The key must already be valid: the derive checks it at compile time.
    /// A value that breaks the rule is left out, and its error kept for
    /// [`try_build`](Self::try_build).
    pub fn push<V: TagValue + ?Sized>(&mut self, key: &'static str, value: &V) {
        let text = static_key_text(key, value);
        match validate_tag_value(key, &text[key.len() + 1..]) {
            Ok(()) => self.tags.push(Tag(Arc::from(text))),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
        }
    }

    /// The finished set, or the error of the first value that broke the rule.
    pub fn try_build(self) -> Result<Tags, TagError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Tags::from_tags(self.tags)),
        }
    }

    /// The finished set of the valid tags. A value that broke the rule is left out, with a
    /// warning; use [`try_build`](Self::try_build) to see it as an error.
    pub fn build(self) -> Tags {
        if let Some(e) = &self.error {
            tracing::warn!(error = %e, "a tag value breaks the tag rule; the tag is left out");
        }
        Tags::from_tags(self.tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_at_the_limit_are_accepted_in_bytes() {
        let ascii = "v".repeat(MAX_TAG_VALUE_LEN);
        // 'é' is two bytes: 512 of them are exactly the limit.
        let multibyte = "é".repeat(MAX_TAG_VALUE_LEN / 2);
        for value in [&ascii, &multibyte, &String::new()] {
            let tag = Tag::new("k", value).expect("a value at the limit");
            assert_eq!(tag.value(), value);
            assert_eq!(Tag::parse(tag.as_str()), Ok(tag.clone()));
        }
        let key = "k".repeat(MAX_TAG_KEY_LEN);
        let tag = Tag::new(&key, &ascii).expect("longest key and value");
        assert_eq!((tag.key(), tag.value()), (key.as_str(), ascii.as_str()));
    }

    #[test]
    fn a_value_one_byte_over_is_refused_by_every_constructor() {
        let over = format!("{}é", "v".repeat(MAX_TAG_VALUE_LEN - 1));
        assert_eq!(over.len(), MAX_TAG_VALUE_LEN + 1);
        let error = TagError::ValueTooLong {
            key: "k".into(),
            len: MAX_TAG_VALUE_LEN + 1,
        };
        assert_eq!(Tag::new("k", &over), Err(error.clone()));
        assert_eq!(Tag::parse(&format!("k:{over}")), Err(error.clone()));
        assert_eq!(
            Tags::parse([format!("k:{over}").as_str()]),
            Err(error.clone())
        );
        let json = serde_json::to_string(&format!("k:{over}")).expect("json");
        let err = serde_json::from_str::<Tag>(&json).expect_err("deserialized");
        assert!(err.to_string().contains("1025 bytes"), "{err}");
        let mut builder = TagsBuilder::with_capacity(1);
        builder.push("k", over.as_str());
        assert_eq!(builder.try_build(), Err(error));
        let huge = "v".repeat(1 << 20);
        assert!(matches!(
            Tag::new("k", &huge),
            Err(TagError::ValueTooLong { len, .. }) if len == 1 << 20
        ));
    }

    #[test]
    fn a_nul_is_refused_and_named() {
        let error = TagError::ValueContainsNul {
            key: "note".into(),
            at: 1,
        };
        assert_eq!(Tag::new("note", "a\0b"), Err(error.clone()));
        assert_eq!(Tag::parse("note:a\0b"), Err(error.clone()));
        let message = error.to_string();
        assert!(
            message.contains("`note`") && message.contains("NUL"),
            "{message}"
        );
        // Other control characters stay valid in values.
        assert!(Tag::new("note", "tab\tand\nnewline\u{1}").is_ok());
    }

    #[test]
    fn keys_longer_than_the_limit_are_refused() {
        let key = "k".repeat(MAX_TAG_KEY_LEN + 1);
        assert!(matches!(
            Tag::new(&key, "v"),
            Err(TagError::KeyTooLong { len, .. }) if len == MAX_TAG_KEY_LEN + 1
        ));
        assert!(matches!(
            Tag::parse(&format!("{key}:v")),
            Err(TagError::KeyTooLong { .. })
        ));
    }

    #[test]
    fn the_builder_keeps_valid_tags_and_reports_the_first_invalid_value() {
        let mut builder = TagsBuilder::with_capacity(3);
        builder.push("a", "fine");
        builder.push("b", "nul\0");
        builder.push("c", "v".repeat(MAX_TAG_VALUE_LEN + 1).as_str());
        assert_eq!(
            builder.try_build(),
            Err(TagError::ValueContainsNul {
                key: "b".into(),
                at: 3
            })
        );
        let mut builder = TagsBuilder::with_capacity(2);
        builder.push("a", "fine");
        builder.push("b", "nul\0");
        assert_eq!(builder.build(), Tags::parse(["a:fine"]).expect("valid"));
        let mut builder = TagsBuilder::with_capacity(2);
        builder.push("a", &42);
        builder.push("b", "x:y");
        assert_eq!(
            builder.try_build(),
            Ok(Tags::parse(["a:42", "b:x:y"]).expect("valid"))
        );
    }
}
