//! [`TypeName`]: an event type name that has passed the one rule every store and the derive
//! apply.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

/// The longest type name accepted, in bytes.
pub const MAX_TYPE_NAME_LEN: usize = 255;

/// Why a type name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypeNameError {
    /// The name was empty.
    #[error("event type name is empty")]
    Empty,
    /// The name was longer than [`MAX_TYPE_NAME_LEN`].
    #[error("event type name `{name}` is longer than 255 bytes")]
    TooLong {
        /// The offending name.
        name: String,
    },
    /// The name contained whitespace or a control character.
    #[error("event type name `{name}` contains whitespace or a control character")]
    InvalidCharacter {
        /// The offending name.
        name: String,
    },
}

/// Checks a type name: 1 to 255 bytes, no whitespace and no control characters. The derive
/// applies the same rule at compile time (a test of `krescent-derive` runs both on the same
/// names).
pub fn validate_type_name(name: &str) -> Result<(), TypeNameError> {
    if name.is_empty() {
        return Err(TypeNameError::Empty);
    }
    if name.len() > MAX_TYPE_NAME_LEN {
        return Err(TypeNameError::TooLong { name: name.into() });
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TypeNameError::InvalidCharacter { name: name.into() });
    }
    Ok(())
}

/// An event type name that follows the rule of [`validate_type_name`]: 1 to 255 bytes, no
/// whitespace, no control characters.
///
/// A [`NewEvent`](crate::NewEvent) holds one, so a store never sees an invalid name and does
/// not check again. Cloning is a reference-count increment; it derefs to `str`.
///
/// ```
/// use krescent_core::event::TypeName;
///
/// let name = TypeName::new("stock.added")?;
/// assert_eq!(name, "stock.added");
/// assert!(TypeName::new("stock added").is_err());
/// # Ok::<(), krescent_core::event::TypeNameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeName(Arc<str>);

impl TypeName {
    /// Checks `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, TypeNameError> {
        validate_type_name(name)?;
        Ok(TypeName(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, for stores that keep names as `Arc<str>`.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// The shared string.
    pub fn into_arc(self) -> Arc<str> {
        self.0
    }
}

impl Deref for TypeName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TypeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TypeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for TypeName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for TypeName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl TryFrom<&str> for TypeName {
    type Error = TypeNameError;
    fn try_from(name: &str) -> Result<Self, TypeNameError> {
        TypeName::new(name)
    }
}

impl TryFrom<String> for TypeName {
    type Error = TypeNameError;
    fn try_from(name: String) -> Result<Self, TypeNameError> {
        validate_type_name(&name)?;
        Ok(TypeName(Arc::from(name)))
    }
}

impl FromStr for TypeName {
    type Err = TypeNameError;
    fn from_str(name: &str) -> Result<Self, TypeNameError> {
        TypeName::new(name)
    }
}

impl From<TypeName> for Arc<str> {
    fn from(name: TypeName) -> Arc<str> {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses_by_the_rule() {
        assert_eq!(
            TypeName::new("stock.added").unwrap().as_str(),
            "stock.added"
        );
        assert_eq!(TypeName::new(""), Err(TypeNameError::Empty));
        assert!(matches!(
            TypeName::new("a b"),
            Err(TypeNameError::InvalidCharacter { .. })
        ));
        assert!(matches!(
            TypeName::new("a\u{7}"),
            Err(TypeNameError::InvalidCharacter { .. })
        ));
        assert!(TypeName::new(&"x".repeat(255)).is_ok());
        assert!(matches!(
            TypeName::new(&"x".repeat(256)),
            Err(TypeNameError::TooLong { .. })
        ));
        assert_eq!(TypeName::try_from(String::from("é.ü")).unwrap(), "é.ü");
        assert!("bad name".parse::<TypeName>().is_err());
    }
}
