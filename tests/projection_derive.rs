//! `#[derive(Projection)]`: generated queries and dispatch, without a projector.

use std::sync::Arc;

use krescent::prelude::*;
use krescent::{HandlerError, RecordedEvent};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(catalog = "warehouse")]
pub enum StockEvent {
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
        quantity: i64,
    },
    #[krescent(name = "stock.counted")]
    Counted {
        #[krescent(tag)]
        product: String,
        #[krescent(tag)]
        warehouse: String,
        counted: i64,
    },
    #[krescent(name = "stock.moved")]
    Moved(Moved),
    Reset,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Moved {
    product: String,
    quantity: i64,
}

#[derive(Projection, Debug, Default)]
#[krescent(events = StockEvent, handles(Added, Picked), savepoint(Counted),
           tags(product = self.product))]
pub struct StockLevel {
    product: String,
    level: i64,
    handled: Vec<u64>,
}

impl StockLevel {
    fn on_added(&mut self, _product: &String, quantity: &i64) {
        self.level += quantity;
    }
    fn on_picked(&mut self, _product: &String, quantity: &i64) -> Result<(), HandlerError> {
        if *quantity > self.level {
            return Err(format!("cannot pick {quantity}, only {} left", self.level).into());
        }
        self.level -= quantity;
        Ok(())
    }
    fn on_counted(&mut self, _product: &String, _warehouse: &String, counted: &i64) {
        self.level = *counted;
    }
}

const MAIN: &str = "main";

/// Custom handler names, a newtype and a unit variant, metadata, a constant tag and
/// overridden init direction and limit.
#[derive(Projection, Default)]
#[krescent(events = StockEvent, handles(Moved = moved, Reset, Counted), savepoint(Counted),
           tags(warehouse = MAIN), init(forward, limit = 3), meta(Moved, Counted))]
pub struct Journal {
    lines: Vec<String>,
}

impl Journal {
    fn moved(&mut self, m: &Moved, meta: &Recorded<StockEvent>) {
        self.lines.push(format!(
            "{}: moved {} {}",
            meta.position, m.quantity, m.product
        ));
    }
    fn on_reset(&mut self) {
        self.lines.clear();
    }
    // A `String` field may arrive as `&str` or as `&String`.
    fn on_counted(
        &mut self,
        product: &str,
        _w: &String,
        counted: &i64,
        meta: &Recorded<StockEvent>,
    ) {
        self.lines.push(format!(
            "{}: {product}={counted} ({})",
            meta.position, meta.event_type
        ));
    }
}

fn recorded(position: u64, data: StockEvent) -> Recorded<StockEvent> {
    RecordedEvent {
        position,
        id: uuid::Uuid::now_v7(),
        event_type: Arc::from(data.event_type().as_str()),
        tags: data.tags(),
        timestamp: chrono_now(),
        data: Default::default(),
    }
    .with_data(data)
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn added(q: i64) -> StockEvent {
    StockEvent::Added {
        product: "W".into(),
        quantity: q,
    }
}
fn picked(q: i64) -> StockEvent {
    StockEvent::Picked {
        product: "W".into(),
        quantity: q,
    }
}

#[test]
fn queries_follow_the_attributes() {
    let level = StockLevel {
        product: "W-1".into(),
        ..Default::default()
    };
    let init = level.init_query().expect("a savepoint gives an init query");
    assert_eq!(init.direction_value(), Direction::Backward);
    assert_eq!(init.limit_value().map(|l| l.get()), Some(1));
    assert_eq!(init.items().len(), 1);
    assert_eq!(init.items()[0].type_names(), ["stock.counted"]);
    assert_eq!(
        init.items()[0].required_tags(),
        [Tag::new("product", "W-1").unwrap()]
    );

    let events = level.event_query();
    assert_eq!(
        events.items()[0].type_names(),
        ["stock.added", "stock.picked"]
    );
    assert_eq!(
        events.items()[0].required_tags(),
        [Tag::new("product", "W-1").unwrap()]
    );

    // Savepoints listed in `handles` too stay out of the event query.
    let journal = Journal::default();
    assert_eq!(
        journal.event_query().items()[0].type_names(),
        ["Reset", "stock.moved"]
    );
    let init = journal.init_query().unwrap();
    assert_eq!(init.direction_value(), Direction::Forward);
    assert_eq!(init.limit_value().map(|l| l.get()), Some(3));
    assert_eq!(
        init.items()[0].required_tags(),
        [Tag::new("warehouse", "main").unwrap()]
    );
}

#[test]
fn dispatch_calls_one_handler_per_variant() {
    let mut level = StockLevel {
        product: "W".into(),
        ..Default::default()
    };
    for (i, e) in [added(100), picked(10), added(5)].into_iter().enumerate() {
        level.when(&recorded(i as u64 + 1, e)).unwrap();
        level.handled.push(i as u64 + 1);
    }
    assert_eq!(level.level, 95);
    level
        .when(&recorded(
            4,
            StockEvent::Counted {
                product: "W".into(),
                warehouse: MAIN.into(),
                counted: 7,
            },
        ))
        .unwrap();
    assert_eq!(level.level, 7);
    // Variants the projection does not list are ignored.
    level.when(&recorded(5, StockEvent::Reset)).unwrap();
    assert_eq!(level.level, 7);
}

#[test]
fn handler_errors_are_returned() {
    let mut level = StockLevel {
        product: "W".into(),
        ..Default::default()
    };
    level.when(&recorded(1, added(3))).unwrap();
    let err = level.when(&recorded(2, picked(10))).unwrap_err();
    assert_eq!(err.to_string(), "cannot pick 10, only 3 left");
    assert_eq!(level.level, 3);
}

#[test]
fn newtype_unit_and_metadata_handlers() {
    let mut j = Journal::default();
    j.when(&recorded(
        7,
        StockEvent::Moved(Moved {
            product: "W".into(),
            quantity: 2,
        }),
    ))
    .unwrap();
    j.when(&recorded(
        8,
        StockEvent::Counted {
            product: "W".into(),
            warehouse: MAIN.into(),
            counted: 1,
        },
    ))
    .unwrap();
    assert_eq!(j.lines, ["7: moved 2 W", "8: W=1 (stock.counted)"]);
    j.when(&recorded(9, StockEvent::Reset)).unwrap();
    assert!(j.lines.is_empty());
}
