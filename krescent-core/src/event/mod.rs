//! The event model: the [`Event`] trait that `#[derive(Event)]` implements, event type names,
//! [`Tags`], recorded events with their metadata, the payload codec and the registry of
//! catalogs.

pub(crate) mod codec;
pub(crate) mod ids;
mod registry;
pub(crate) mod tags;
mod type_name;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use registry::{EventRegistration, EventRegistry, RegistryError};
pub use tags::{
    MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN, Tag, TagError, TagValue, Tags, TagsBuilder,
    validate_tag_key, validate_tag_value,
};
pub use type_name::{MAX_TYPE_NAME_LEN, TypeName, TypeNameError, validate_type_name};

/// The encoded content of an event (JSON by default). Cloning is a reference-count increment.
pub type Payload = bytes::Bytes;

/// A domain event type: an enum whose variants are the event types of one catalog.
///
/// Implement it with `#[derive(Event)]`; see the derive's documentation in the `krescent`
/// crate for the attributes. The payload stored for an event is the content of its variant,
/// encoded with serde; the type name is stored beside the payload, not inside it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a krescent event type",
    note = "consider adding `#[derive(Event)]` to `{Self}`"
)]
pub trait Event: Sized + Send + Sync + 'static {
    /// The catalog (a namespace of type names) this enum belongs to.
    const CATALOG: &'static str;
    /// The catalog revision; changing it invalidates checkpoints built from these events.
    const REVISION: u32;
    /// Every type name of the enum, in variant order.
    const TYPES: &'static [EventType];

    /// The stored type name of this value.
    fn event_type(&self) -> EventType;

    /// The tags of this value. A tag whose value breaks [the rule of tags](Tag) is left out
    /// (a derived implementation logs a warning); [`try_tags`](Event::try_tags) reports it.
    fn tags(&self) -> Tags;

    /// The tags of this value, or the error of a tag value that breaks
    /// [the rule of tags](Tag) (a field holding a NUL or more than
    /// [`MAX_TAG_VALUE_LEN`] bytes). [`NewEvent::from_event`] calls it, so such an event
    /// fails to encode before any I/O. The default returns [`tags`](Event::tags), whose
    /// [`Tag`]s are valid by construction; `#[derive(Event)]` implements it.
    fn try_tags(&self) -> Result<Tags, TagError> {
        Ok(self.tags())
    }

    /// Encodes the variant's content (not the type name).
    fn encode(&self) -> Result<Payload, EncodeError>;

    /// Decodes the content stored under `type_name`.
    ///
    /// A type name that the enum does not have gives [`DecodeError::UnknownEventType`].
    fn decode(type_name: &str, payload: &[u8]) -> Result<Self, DecodeError>;
}

/// The stored name of an event type, such as `stock.added`.
///
/// `#[derive(Event)]` generates one associated constant per variant (`StockEvent::ADDED`), so
/// queries never spell type names as string literals.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(&'static str);

impl EventType {
    /// Wraps a static type name. The derive checks names at compile time; a hand-written name
    /// is checked when an event of it is encoded ([`NewEvent::from_event`]), and names read at
    /// run time become a [`TypeName`] with [`TypeName::new`].
    pub const fn new(name: &'static str) -> Self {
        EventType(name)
    }

    /// The type name.
    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// Why an event could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// serde refused the value.
    #[error("cannot encode event of type `{type_name}`: {source}")]
    Serialize {
        /// The type name of the event.
        type_name: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A tag value of the event breaks [the rule of tags](Tag) (see [`Event::try_tags`]).
    #[error("cannot encode event of type `{type_name}`: {source}")]
    Tag {
        /// The type name of the event.
        type_name: &'static str,
        /// Which tag and what is wrong with its value.
        #[source]
        source: TagError,
    },
    /// The event's type name breaks the rule of [`TypeName`] (a hand-written
    /// [`EventType::new`]; derived names are checked at compile time).
    #[error("cannot encode event of type `{type_name}`: {source}")]
    TypeName {
        /// The type name of the event.
        type_name: &'static str,
        /// What is wrong with it.
        #[source]
        source: TypeNameError,
    },
}

/// Why stored bytes could not become an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The type name is not one of the enum's. Readers that share a store with other event
    /// enums meet this for events that are not theirs.
    #[error("unknown event type `{type_name}`{}", at(*.position))]
    UnknownEventType {
        /// The stored type name.
        type_name: String,
        /// The position of the stored event, when known.
        position: Option<u64>,
    },
    /// The payload does not decode as the variant's content.
    #[error("malformed payload for event type `{type_name}`{}: {source}", at(*.position))]
    MalformedPayload {
        /// The stored type name.
        type_name: String,
        /// The position of the stored event, when known.
        position: Option<u64>,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

fn at(position: Option<u64>) -> String {
    position.map_or_else(String::new, |p| format!(" at position {p}"))
}

impl DecodeError {
    /// An unknown type name, position not yet known.
    pub fn unknown(type_name: &str) -> Self {
        DecodeError::UnknownEventType {
            type_name: type_name.into(),
            position: None,
        }
    }

    /// Sets the position of the stored event the error is about.
    pub fn at_position(mut self, at: u64) -> Self {
        match &mut self {
            DecodeError::UnknownEventType { position, .. }
            | DecodeError::MalformedPayload { position, .. } => *position = Some(at),
        }
        self
    }

    /// Whether this is [`DecodeError::UnknownEventType`].
    pub fn is_unknown_event_type(&self) -> bool {
        matches!(self, DecodeError::UnknownEventType { .. })
    }

    /// The stored type name the error is about.
    pub fn type_name(&self) -> &str {
        match self {
            DecodeError::UnknownEventType { type_name, .. }
            | DecodeError::MalformedPayload { type_name, .. } => type_name,
        }
    }

    /// The position of the stored event, when known.
    pub fn position(&self) -> Option<u64> {
        match self {
            DecodeError::UnknownEventType { position, .. }
            | DecodeError::MalformedPayload { position, .. } => *position,
        }
    }
}

/// An event with the metadata the store gave it.
///
/// `Recorded<Payload>` ([`RecordedEvent`]) is what stores return; [`RecordedEvent::decode`]
/// turns it into a `Recorded<E>` of your event enum.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded<D = Payload> {
    /// Global position, strictly increasing from 1.
    pub position: u64,
    /// Unique id (UUID v7, time ordered).
    pub id: Uuid,
    /// The stored type name.
    pub event_type: Arc<str>,
    /// The event's tags.
    pub tags: Tags,
    /// When the store recorded it (UTC).
    pub timestamp: DateTime<Utc>,
    /// The event: encoded bytes, or a decoded value.
    pub data: D,
}

/// A recorded event whose data is still encoded.
pub type RecordedEvent = Recorded<Payload>;

impl RecordedEvent {
    /// Decodes the payload into `E`, naming this event's type and position on failure.
    pub fn decode<E: Event>(&self) -> Result<Recorded<E>, DecodeError> {
        let data =
            E::decode(&self.event_type, &self.data).map_err(|e| e.at_position(self.position))?;
        Ok(self.with_data(data))
    }
}

impl<D> Recorded<D> {
    /// The same metadata with other data.
    pub fn with_data<T>(&self, data: T) -> Recorded<T> {
        Recorded {
            position: self.position,
            id: self.id,
            event_type: self.event_type.clone(),
            tags: self.tags.clone(),
            timestamp: self.timestamp,
            data,
        }
    }

    /// Borrows the data.
    pub fn as_ref(&self) -> Recorded<&D> {
        self.with_data(&self.data)
    }
}

/// An event ready to append: type name, tags and encoded payload.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// The type name to store, checked when it was made.
    pub event_type: TypeName,
    /// The tags to index.
    pub tags: Tags,
    /// The encoded content.
    pub payload: Payload,
}

impl NewEvent {
    /// Encodes a domain event. Its type name is checked (the derive's names always pass), and
    /// its tag values ([`Event::try_tags`]): a value that breaks the rule of [`Tag`] is
    /// [`EncodeError::Tag`], so the event never reaches a store.
    pub fn from_event<E: Event>(event: &E) -> Result<Self, EncodeError> {
        let name = event.event_type().as_str();
        let event_type = TypeName::new(name).map_err(|source| EncodeError::TypeName {
            type_name: name,
            source,
        })?;
        let tags = event.try_tags().map_err(|source| EncodeError::Tag {
            type_name: name,
            source,
        })?;
        Ok(NewEvent {
            event_type,
            tags,
            payload: event.encode()?,
        })
    }

    /// An event from raw parts, checking the type name.
    pub fn new(
        event_type: &str,
        tags: Tags,
        payload: impl Into<Payload>,
    ) -> Result<Self, TypeNameError> {
        Ok(NewEvent {
            event_type: TypeName::new(event_type)?,
            tags,
            payload: payload.into(),
        })
    }
}
