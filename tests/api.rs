//! Properties of the public API: thread safety, object safety, shared handles.

use std::sync::Arc;

use krescent::prelude::*;
use krescent::{
    DecodeError, EncodeError, NewEvent, QueryError, RegistryError, StoreError, Subscription,
    TagError,
};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn runtime_types_are_thread_safe() {
    assert_send_sync::<InMemoryEventStore>();
    assert_send_sync::<Arc<dyn EventStore>>();
    assert_send_sync::<EventQuery>();
    assert_send_sync::<Tags>();
    assert_send_sync::<NewEvent>();
    assert_send::<Subscription>();
    assert_error::<StoreError>();
    assert_error::<DecodeError>();
    assert_error::<EncodeError>();
    assert_error::<QueryError>();
    assert_error::<TagError>();
    assert_error::<RegistryError>();
}

#[tokio::test]
async fn a_store_works_behind_arc_dyn() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let e = NewEvent::new("thing.happened", Tags::parse(["k:v"]).unwrap(), &b"{}"[..]).unwrap();
    let recorded = store.append(vec![e], None).await.unwrap();
    assert_eq!(recorded[0].position, 1);
    assert_eq!(store.head().await.unwrap(), 1);
    // The Arc itself is a store too, so the typed extensions apply.
    let again = store.read(&EventQuery::match_all()).await.unwrap();
    assert_eq!(again, recorded);
}

#[test]
fn invalid_names_and_limits_are_typed_errors() {
    assert_eq!(
        EventQuery::match_all().limit(0).unwrap_err(),
        QueryError::ZeroLimit
    );
    assert!(matches!(
        Tag::new("a:b", 1),
        Err(TagError::InvalidKey { .. })
    ));
    assert!(matches!(Tag::new("", 1), Err(TagError::EmptyKey { .. })));
    assert!(matches!(
        Tag::parse("novalue"),
        Err(TagError::MissingSeparator { .. })
    ));
    assert_eq!(Tag::parse("url:http://x").unwrap().value(), "http://x");
    assert!(NewEvent::new("has space", Tags::empty(), Vec::new()).is_err());
    assert!(NewEvent::new("", Tags::empty(), Vec::new()).is_err());
    assert!(NewEvent::new(&"x".repeat(256), Tags::empty(), Vec::new()).is_err());
}
