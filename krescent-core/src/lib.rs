//! Runtime of [krescent](https://docs.rs/krescent), a framework for event-sourced systems.
//!
//! Most users depend on the `krescent` facade crate, which re-exports everything here together
//! with the derive macros. This crate holds the runtime only: the event model ([`event`]), DCB
//! style queries ([`query`]) and event stores ([`store`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod event;
pub mod model;
pub mod projection;
pub mod query;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use event::{
    DecodeError, EncodeError, Event, EventRegistration, EventRegistry, EventType, NewEvent,
    Payload, Recorded, RecordedEvent, RegistryError, Tag, TagError, Tags,
};
pub use projection::{
    BookmarkError, BookmarkReader, BookmarkStorage, InMemoryBookmarkStorage, Projector,
    ProjectorBuilder, ProjectorError, ProjectorMetrics, ReadPolicy,
};
pub use projection::{FieldArg, HandlerError, HandlerResult, Projection};
pub use query::{AppendCondition, Direction, EventQuery, Limit, QueryError, QueryItem};
#[cfg(feature = "postgres")]
pub use store::postgres::{
    PostgresBookmarkStorage, PostgresCheckpointStorage, PostgresError, PostgresEventStore,
    PostgresOptions, PostgresWrites,
};
#[cfg(feature = "sqlite")]
pub use store::sqlite::{
    SqliteBookmarkStorage, SqliteCheckpointStorage, SqliteEventStore, SqliteWrites,
};
pub use store::{EventStore, EventStoreExt, InMemoryEventStore, StoreError, Subscription};

/// Items used by code that `#[derive(...)]` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::codec::{decode_content, encode_content};
    pub use crate::event::tags::{TagsBuilder, has_tag_key, static_key_tag};
}
