//! Tags: `key:value` strings that index events for queries.

use std::fmt;
use std::sync::Arc;

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
    /// A tag parsed from text had no `:` separator.
    #[error("tag `{tag}` has no `:` between key and value")]
    MissingSeparator {
        /// The offending tag text.
        tag: String,
    },
}

/// Checks a tag key: non-empty, without `:`, whitespace or control characters.
pub fn validate_tag_key(key: &str) -> Result<(), TagError> {
    if key.is_empty() {
        return Err(TagError::EmptyKey {
            tag: format!("{key}:"),
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

/// One tag of an event, stored as the text `key:value`.
///
/// The key never contains `:`, so the value is everything after the first `:` and may itself
/// contain colons. Cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Arc<str>);

impl Tag {
    /// Builds the tag `key:value`, rejecting an invalid key.
    ///
    /// ```
    /// # use krescent_core::Tag;
    /// let tag = Tag::new("product", "WIDGET-42").unwrap();
    /// assert_eq!(tag.as_str(), "product:WIDGET-42");
    /// assert!(Tag::new("a:b", "x").is_err());
    /// ```
    pub fn new(key: &str, value: impl fmt::Display) -> Result<Self, TagError> {
        validate_tag_key(key)?;
        Ok(Self::from_valid_key(key, &value))
    }

    /// Parses `key:value` text.
    pub fn parse(text: &str) -> Result<Self, TagError> {
        let Some((key, _)) = text.split_once(':') else {
            return Err(TagError::MissingSeparator { tag: text.into() });
        };
        if key.is_empty() {
            return Err(TagError::EmptyKey { tag: text.into() });
        }
        validate_tag_key(key)?;
        Ok(Tag(Arc::from(text)))
    }

    fn from_valid_key(key: &str, value: &dyn fmt::Display) -> Self {
        Tag(Arc::from(format!("{key}:{value}")))
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

/// `key:value` for a key the derive checked at compile time. Used by generated code.
#[doc(hidden)]
pub fn static_key_tag<V: TagValue + ?Sized>(key: &'static str, value: &V) -> Tag {
    let mut text = String::with_capacity(key.len() + 16);
    text.push_str(key);
    text.push(':');
    value.write_tag_value(&mut text);
    Tag(Arc::from(text))
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

/// Collects the tags of one event; used by derived [`Event::tags`](crate::Event::tags).
#[derive(Debug, Default)]
pub struct TagsBuilder {
    tags: Vec<Tag>,
}

impl TagsBuilder {
    /// A builder with room for `n` tags.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            tags: Vec::with_capacity(n),
        }
    }

    /// Adds `key:value`. The key must already be valid: the derive checks it at compile time.
    pub fn push<V: TagValue + ?Sized>(&mut self, key: &'static str, value: &V) {
        self.tags.push(static_key_tag(key, value));
    }

    /// The finished set.
    pub fn build(self) -> Tags {
        Tags::from_tags(self.tags)
    }
}
