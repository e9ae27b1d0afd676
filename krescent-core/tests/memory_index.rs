//! The in-memory store's type and tag indexes select the right events: rare types and tags
//! among many events, backwards limit-1 queries whose match lies far back, and, for many
//! generated queries, exactly what a full scan of the history selects. Behaviour only; the
//! speed of the index is measured in `benches/`.

use krescent_core::{
    Direction, EventQuery, EventStore, InMemoryEventStore, NewEvent, QueryItem, RecordedEvent, Tag,
    Tags,
};

const EVENTS: u64 = 20_000;
/// Positions of the rare `stock.counted` events (the savepoints).
const COUNTED_AT: [u64; 3] = [17, 5_000, 12_345];
/// Positions of the events tagged `audit:yes`.
const AUDITED_AT: [u64; 4] = [2, 9_999, 10_000, 19_998];

fn tag(text: &str) -> Tag {
    Tag::parse(text).unwrap()
}

/// The event stored at `position`: mostly movements of 100 products, a few counts, a few
/// audited events.
fn event_at(position: u64) -> NewEvent {
    let product = format!("product:{}", position % 100);
    let mut tags = vec![product.as_str()];
    if AUDITED_AT.contains(&position) {
        tags.push("audit:yes");
    }
    let event_type = if COUNTED_AT.contains(&position) {
        "stock.counted"
    } else if position % 7 == 0 {
        "stock.picked"
    } else {
        "stock.added"
    };
    let payload = format!(r#"{{"position":{position}}}"#);
    NewEvent::new(event_type, Tags::parse(tags).unwrap(), payload.into_bytes()).unwrap()
}

async fn filled_store() -> (InMemoryEventStore, Vec<RecordedEvent>) {
    let store = InMemoryEventStore::new();
    let mut next = 1;
    while next <= EVENTS {
        let end = (next + 999).min(EVENTS);
        store
            .append((next..=end).map(event_at).collect(), None)
            .await
            .unwrap();
        next = end + 1;
    }
    let all = store.read(&EventQuery::match_all()).await.unwrap();
    assert_eq!(all.len() as u64, EVENTS);
    (store, all)
}

async fn positions(store: &InMemoryEventStore, query: &EventQuery) -> Vec<u64> {
    let events = store.read(query).await.unwrap();
    events.iter().map(|e| e.position).collect()
}

/// What `query` selects, by scanning every event.
fn full_scan(all: &[RecordedEvent], query: &EventQuery) -> Vec<u64> {
    let mut selected: Vec<u64> = all
        .iter()
        .filter(|e| query.matches(e.position, &e.event_type, &e.tags))
        .map(|e| e.position)
        .collect();
    if query.direction_value() == Direction::Backward {
        selected.reverse();
    }
    if let Some(limit) = query.limit_value() {
        selected.truncate(limit.get() as usize);
    }
    selected
}

#[tokio::test]
async fn rare_type_and_rare_tag_among_many_events() {
    let (store, _) = filled_store().await;

    let counted = EventQuery::item(QueryItem::types(["stock.counted"]));
    assert_eq!(positions(&store, &counted).await, COUNTED_AT.to_vec());
    assert_eq!(
        positions(&store, &counted.clone().backward()).await,
        vec![12_345, 5_000, 17]
    );

    let audited = EventQuery::item(QueryItem::tagged([tag("audit:yes")]));
    assert_eq!(positions(&store, &audited).await, AUDITED_AT.to_vec());

    // A rare tag AND a common one: of the audited events only 9_999 is of product 99.
    let audited_99 = EventQuery::item(QueryItem::tagged([tag("audit:yes"), tag("product:99")]));
    assert_eq!(positions(&store, &audited_99).await, vec![9_999]);

    // A rare type OR a rare tag.
    let either = counted.clone().or(QueryItem::tagged([tag("audit:yes")]));
    assert_eq!(
        positions(&store, &either).await,
        vec![2, 17, 5_000, 9_999, 10_000, 12_345, 19_998]
    );

    // Tags nobody uses, and a type nobody uses, select nothing.
    let unused_tag = EventQuery::item(QueryItem::tagged([tag("product:100")]));
    assert_eq!(positions(&store, &unused_tag).await, Vec::<u64>::new());
    let unused_type = EventQuery::item(QueryItem::types(["stock.unknown"]));
    assert_eq!(positions(&store, &unused_type).await, Vec::<u64>::new());
}

#[tokio::test]
async fn backward_limit_one_finds_a_match_far_back() {
    let (store, _) = filled_store().await;

    // The only count of product 17 is at position 17, behind 19_983 later events.
    let latest_count_17 =
        EventQuery::item(QueryItem::types(["stock.counted"]).and_tag(tag("product:17")))
            .backward()
            .limit(1)
            .unwrap();
    let found = store.read(&latest_count_17).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].position, 17);
    assert_eq!(&*found[0].event_type, "stock.counted");
    assert_eq!(&found[0].data[..], br#"{"position":17}"#);

    // The latest count of any product, and the one before it.
    let latest_count = EventQuery::item(QueryItem::types(["stock.counted"]))
        .backward()
        .limit(1)
        .unwrap();
    assert_eq!(positions(&store, &latest_count).await, vec![12_345]);
    assert_eq!(
        positions(&store, &latest_count.clone().before(12_345)).await,
        vec![5_000]
    );
    assert_eq!(
        positions(&store, &latest_count.before(17)).await,
        Vec::<u64>::new()
    );

    // The latest event of product 17, by tag alone.
    let latest_17 = EventQuery::item(QueryItem::tagged([tag("product:17")]))
        .backward()
        .limit(1)
        .unwrap();
    assert_eq!(positions(&store, &latest_17).await, vec![19_917]);
}

/// A small deterministic generator, so that the test needs no extra dependency and fails
/// the same way every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[tokio::test]
async fn index_selects_what_a_full_scan_selects() {
    let (store, all) = filled_store().await;
    let types = [
        "stock.added",
        "stock.picked",
        "stock.counted",
        "stock.unknown",
    ];
    let mut rng = Lcg(42);
    let item = |rng: &mut Lcg| {
        let mut item = QueryItem::any();
        for _ in 0..rng.below(3) {
            item = item.or_types([types[rng.below(types.len() as u64) as usize]]);
        }
        for _ in 0..rng.below(3) {
            let t = match rng.below(4) {
                0 => "audit:yes".to_owned(),
                _ => format!("product:{}", rng.below(101)),
            };
            item = item.and_tag(tag(&t));
        }
        item
    };
    for round in 0..300 {
        let mut query = EventQuery::from_items((0..1 + rng.below(3)).map(|_| item(&mut rng)));
        if rng.below(2) == 0 {
            query = query.backward();
        }
        if rng.below(2) == 0 {
            query = query.limit(1 + rng.below(50)).unwrap();
        }
        if rng.below(3) == 0 {
            query = query.after(rng.below(EVENTS + 10));
        }
        if rng.below(3) == 0 {
            query = query.until(rng.below(EVENTS + 10));
        }
        assert_eq!(
            positions(&store, &query).await,
            full_scan(&all, &query),
            "round {round}: {query:?}"
        );
    }
}
