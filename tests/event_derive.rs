//! Round trips of `#[derive(Event)]`: names, tags, payloads, decode errors and the registry.

use krescent::prelude::*;
use krescent::{DecodeError, EventRegistration, EventRegistry, NewEvent, RegistryError};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(catalog = "warehouse", revision = 3)]
enum StockEvent {
    #[krescent(name = "stock.added")]
    Added {
        #[krescent(tag)]
        product: String,
        quantity: i64,
    },
    #[krescent(name = "stock.picked")]
    Picked {
        #[krescent(tag)]
        product: String,
        #[krescent(tag = "picker")]
        by: u32,
        quantity: i64,
        #[serde(default)]
        note: Option<String>,
    },
    Cleared,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Opened {
    account: uuid::Uuid,
    owner: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Deposited {
    account: uuid::Uuid,
    cents: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(catalog = "bank")]
enum AccountEvent {
    #[krescent(name = "account.opened", tags(account, owner = "holder"))]
    Opened(Opened),
    #[krescent(name = "account.deposited", tags(account))]
    Deposited(Deposited),
    #[krescent(name = "account.renamed")]
    Renamed(#[krescent(tag = "name")] String),
}

fn added(product: &str, quantity: i64) -> StockEvent {
    StockEvent::Added {
        product: product.into(),
        quantity,
    }
}

#[test]
fn container_attributes_and_type_names() {
    assert_eq!(<StockEvent as Event>::CATALOG, "warehouse");
    assert_eq!(<StockEvent as Event>::REVISION, 3);
    let names: Vec<&str> = StockEvent::TYPES.iter().map(|t| t.as_str()).collect();
    // A variant without `name` is stored under its own name.
    assert_eq!(names, ["stock.added", "stock.picked", "Cleared"]);
    assert_eq!(StockEvent::ADDED.as_str(), "stock.added");
    assert_eq!(StockEvent::PICKED.as_str(), "stock.picked");
    assert_eq!(StockEvent::CLEARED.as_str(), "Cleared");
    assert_eq!(added("a", 1).event_type(), StockEvent::ADDED);
    assert_eq!(StockEvent::Cleared.event_type(), StockEvent::CLEARED);
    // Revision defaults to 1, catalog as given.
    assert_eq!(<AccountEvent as Event>::REVISION, 1);
}

#[test]
fn tags_come_from_marked_fields() {
    let picked = StockEvent::Picked {
        product: "W-1".into(),
        by: 7,
        quantity: 2,
        note: None,
    };
    let tags = picked.tags();
    let tags: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, ["picker:7", "product:W-1"]);
    assert!(StockEvent::Cleared.tags().is_empty());

    let id = uuid::Uuid::nil();
    let opened = AccountEvent::Opened(Opened {
        account: id,
        owner: "ada".into(),
    });
    let tags: Vec<String> = opened.tags().iter().map(|t| t.to_string()).collect();
    assert_eq!(tags, [format!("account:{id}"), "holder:ada".to_string()]);
    let renamed = AccountEvent::Renamed("Bea".into());
    assert_eq!(renamed.tags().as_slice()[0].as_str(), "name:Bea");
}

#[test]
fn payload_is_the_variant_content_only() {
    let e = added("W-1", 5);
    let payload = e.encode().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(json, serde_json::json!({"product": "W-1", "quantity": 5}));
    assert_eq!(StockEvent::decode("stock.added", &payload).unwrap(), e);

    let d = AccountEvent::Deposited(Deposited {
        account: uuid::Uuid::nil(),
        cents: 250,
    });
    let payload = d.encode().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(json["cents"], 250);
    assert!(json.get("account.deposited").is_none());
    assert_eq!(
        AccountEvent::decode("account.deposited", &payload).unwrap(),
        d
    );

    let cleared = StockEvent::Cleared.encode().unwrap();
    assert_eq!(&cleared[..], b"null");
    assert_eq!(
        StockEvent::decode("Cleared", &cleared).unwrap(),
        StockEvent::Cleared
    );
}

#[test]
fn older_payload_without_a_defaulted_field_still_decodes() {
    let old = br#"{"product":"W-1","by":1,"quantity":3}"#;
    let e = StockEvent::decode("stock.picked", old).unwrap();
    assert_eq!(
        e,
        StockEvent::Picked {
            product: "W-1".into(),
            by: 1,
            quantity: 3,
            note: None
        }
    );
}

#[test]
fn unknown_type_and_malformed_payload_are_typed_errors() {
    let err = StockEvent::decode("stock.vanished", b"{}").unwrap_err();
    assert!(err.is_unknown_event_type());
    assert_eq!(err.type_name(), "stock.vanished");

    let err = StockEvent::decode("stock.added", br#"{"product":1}"#).unwrap_err();
    assert!(
        matches!(err, DecodeError::MalformedPayload { .. }),
        "{err:?}"
    );
    assert_eq!(err.type_name(), "stock.added");

    // Trailing garbage is malformed too.
    let err = StockEvent::decode("stock.added", br#"{"product":"a","quantity":1} x"#).unwrap_err();
    assert!(matches!(err, DecodeError::MalformedPayload { .. }));
}

#[tokio::test]
async fn recorded_decode_names_the_position() {
    let store = InMemoryEventStore::new();
    store.append_events(&[added("W-1", 1)], None).await.unwrap();
    let bad = NewEvent::new("stock.added", Tags::empty(), &b"[]"[..]).unwrap();
    store.append(vec![bad], None).await.unwrap();
    let foreign = NewEvent::new("other.thing", Tags::empty(), &b"{}"[..]).unwrap();
    store.append(vec![foreign], None).await.unwrap();

    let all = store.read(&EventQuery::match_all()).await.unwrap();
    assert_eq!(all[0].decode::<StockEvent>().unwrap().data, added("W-1", 1));
    let err = all[1].decode::<StockEvent>().unwrap_err();
    assert_eq!(err.position(), Some(2));
    assert!(
        err.to_string().contains("stock.added") && err.to_string().contains("position 2"),
        "{err}"
    );
    let err = all[2].decode::<StockEvent>().unwrap_err();
    assert!(err.is_unknown_event_type());
    assert_eq!(err.position(), Some(3));

    // Typed reads by the enum's own types never meet the foreign event.
    let mine = store
        .read_events::<StockEvent>(&EventQuery::item(QueryItem::types([StockEvent::ADDED])))
        .await;
    assert!(mine.is_err(), "position 2 is malformed");
}

#[test]
fn registry_holds_every_derived_enum() {
    let registry = EventRegistry::global().unwrap();
    let reg = registry.lookup("warehouse", "stock.added").unwrap();
    assert_eq!(reg.revision, 3);
    assert!(reg.rust_type.ends_with("StockEvent"), "{}", reg.rust_type);
    assert!(registry.lookup("bank", "account.opened").is_some());
    assert!(registry.lookup("bank", "stock.added").is_none());
    let names: Vec<&str> = registry.type_names("warehouse").collect();
    assert_eq!(names, ["Cleared", "stock.added", "stock.picked"]);
}

#[test]
fn registry_rejects_a_type_name_claimed_twice() {
    const A: &[krescent::EventType] = &[krescent::EventType::new("x.happened")];
    const B: &[krescent::EventType] = &[
        krescent::EventType::new("x.happened"),
        krescent::EventType::new("y"),
    ];
    let a = EventRegistration {
        catalog: "c",
        revision: 1,
        rust_type: "crate::A",
        types: A,
    };
    let b = EventRegistration {
        catalog: "c",
        revision: 1,
        rust_type: "crate::B",
        types: B,
    };
    let err = EventRegistry::from_registrations([b, a]).unwrap_err();
    assert_eq!(
        err,
        RegistryError::DuplicateTypeName {
            catalog: "c",
            type_name: "x.happened",
            first: "crate::A",
            second: "crate::B"
        }
    );
    // Same name in another catalog is fine; the same registration twice counts once.
    let other = EventRegistration { catalog: "d", ..b };
    let reg = EventRegistry::from_registrations([a, a, other]).unwrap();
    assert_eq!(reg.lookup("d", "y").unwrap().rust_type, "crate::B");
    // One catalog, two revisions.
    let newer = EventRegistration {
        revision: 2,
        rust_type: "crate::C",
        types: &[],
        ..a
    };
    assert!(matches!(
        EventRegistry::from_registrations([a, newer]),
        Err(RegistryError::ConflictingRevision { .. })
    ));
    assert_eq!(
        EventRegistration::of::<StockEvent>().types,
        StockEvent::TYPES
    );
}

#[tokio::test]
async fn typed_queries_by_type_and_tag() {
    let store = InMemoryEventStore::new();
    store
        .append_events(
            &[
                added("A", 1),
                added("B", 2),
                StockEvent::Picked {
                    product: "A".into(),
                    by: 1,
                    quantity: 1,
                    note: None,
                },
                StockEvent::Cleared,
            ],
            None,
        )
        .await
        .unwrap();
    let q = EventQuery::item(
        QueryItem::types([StockEvent::ADDED, StockEvent::PICKED])
            .and_tag(Tag::new("product", "A").unwrap()),
    );
    let got = store.read_events::<StockEvent>(&q).await.unwrap();
    assert_eq!(got.iter().map(|r| r.position).collect::<Vec<_>>(), [1, 3]);
    let all = store
        .read_events::<StockEvent>(&EventQuery::of::<StockEvent>())
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
}
