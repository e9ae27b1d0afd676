//! Tag values of derived events follow the rule of `Tag`: an event whose tagged field holds a
//! NUL or too long a value fails `NewEvent::from_event` with `EncodeError::Tag` naming the
//! type and the key, so it never reaches a store; `tags()` leaves the tag out.

use krescent_core::event::MAX_TAG_VALUE_LEN;
use krescent_core::{
    EncodeError, Event, EventStore, EventStoreExt, InMemoryEventStore, NewEvent, StoreError,
    TagError, Tags,
};
use serde::{Deserialize, Serialize};

#[derive(krescent_derive::Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(crate = "krescent_core", catalog = "tag.values", revision = 1)]
pub enum NoteEvent {
    #[krescent(name = "note.written")]
    Written {
        #[krescent(tag)]
        author: String,
        #[krescent(tag = "topic")]
        subject: String,
        text: String,
    },
}

fn written(author: &str, subject: &str) -> NoteEvent {
    NoteEvent::Written {
        author: author.into(),
        subject: subject.into(),
        text: "hello".into(),
    }
}

#[test]
fn a_nul_in_a_tagged_field_fails_to_encode_with_a_typed_error() {
    let event = written("ada", "a\0b");
    match NewEvent::from_event(&event) {
        Err(EncodeError::Tag {
            type_name,
            source: TagError::ValueContainsNul { key, at },
        }) => {
            assert_eq!((type_name, key.as_str(), at), ("note.written", "topic", 1));
        }
        other => panic!("expected EncodeError::Tag with a NUL, got {other:?}"),
    }
    assert!(matches!(
        event.try_tags(),
        Err(TagError::ValueContainsNul { .. })
    ));
    // `tags()` cannot fail: it keeps the valid tags and leaves the invalid one out.
    assert_eq!(event.tags(), Tags::parse(["author:ada"]).expect("valid"));
}

#[test]
fn a_value_over_the_limit_fails_to_encode_and_one_at_it_does_not() {
    let over = "x".repeat(MAX_TAG_VALUE_LEN + 1);
    match NewEvent::from_event(&written(&over, "fine")) {
        Err(EncodeError::Tag {
            source: TagError::ValueTooLong { key, len },
            ..
        }) => assert_eq!((key.as_str(), len), ("author", MAX_TAG_VALUE_LEN + 1)),
        other => panic!("expected EncodeError::Tag with a long value, got {other:?}"),
    }
    let at = "x".repeat(MAX_TAG_VALUE_LEN);
    let encoded = NewEvent::from_event(&written(&at, "fine")).expect("a value at the limit");
    assert_eq!(encoded.tags.len(), 2);
}

#[tokio::test]
async fn an_invalid_event_never_reaches_the_store() {
    let store = InMemoryEventStore::new();
    let events = [written("ada", "fine"), written("ada", "nul\0")];
    let err = store
        .append_events(&events, None)
        .await
        .expect_err("a batch with an invalid tag value");
    assert!(
        matches!(err, StoreError::Encode(EncodeError::Tag { .. })),
        "{err:?}"
    );
    assert_eq!(store.head().await.expect("head"), 0);
}
