//! The workload shared by the backend benchmarks (in-memory, SQLite, PostgreSQL): a stock
//! ledger of JSON events of about 110 bytes, three event types (`stock.added`,
//! `stock.picked`, and `stock.counted`, the savepoint, one event in ten), each tagged with one
//! of 10,000 products (`product:P-01234`), folded into a `HashMap<String, i64>` of levels.

#![allow(dead_code)]

use std::collections::HashMap;

use futures::StreamExt as _;
use krescent_core::{EventQuery, EventStore, Limit, NewEvent, QueryItem, Tag, Tags};
use serde::Deserialize;

/// Events in the ledger.
pub const EVENTS: u64 = 1_000_000;
/// Distinct products (tags).
pub const PRODUCTS: u64 = 10_000;
/// Events per read during a catch-up.
pub const PAGE: u64 = 1_000;
/// The three event types.
pub const TYPES: [&str; 3] = ["stock.added", "stock.picked", "stock.counted"];

/// What a consumer decodes from each payload.
#[derive(Deserialize)]
struct Movement {
    product: String,
    quantity: i64,
}

/// The tag of product number `product`.
pub fn product_tag(product: u64) -> Tag {
    Tag::new("product", format_args!("P-{product:05}")).expect("valid tag")
}

/// Event number `n` of the workload.
pub fn event(n: u64) -> NewEvent {
    let product = (n * 7919) % PRODUCTS;
    let ty = match n % 10 {
        0 => TYPES[2],
        k if k % 2 == 1 => TYPES[0],
        _ => TYPES[1],
    };
    let payload = format!(
        r#"{{"product":"P-{product:05}","quantity":{q},"warehouse":"main-hall-{w}","reason":"scheduled replenishment","seq":{n}}}"#,
        q = n % 97 + 1,
        w = n % 5,
    );
    NewEvent::new(ty, Tags::from_tags([product_tag(product)]), payload).expect("valid event")
}

/// Folds one event into the levels: decode the payload with serde_json, then add, subtract
/// or (for a count) set.
pub fn fold(levels: &mut HashMap<String, i64>, event_type: &str, payload: &[u8]) {
    let m: Movement = serde_json::from_slice(payload).expect("payload decodes");
    let level = levels.entry(m.product).or_insert(0);
    match event_type {
        "stock.added" => *level += m.quantity,
        "stock.picked" => *level -= m.quantity,
        _ => *level = m.quantity,
    }
}

/// The `k`-th product (modulo their number) that has a `stock.counted` event: the counts are
/// the events `n` with `n % 10 == 0`, whose product `n * 7919 % PRODUCTS` ends in 0 too, so
/// only every tenth product has one.
pub fn counted_product(k: u64) -> u64 {
    k % (PRODUCTS / 10) * 10
}

/// The projection init query of product number `product`: its latest `stock.counted`,
/// backwards, limit 1.
pub fn init_query(product: u64) -> EventQuery {
    EventQuery::item(QueryItem::types([TYPES[2]]).and_tag(product_tag(product)))
        .backward()
        .limit(1)
        .expect("limit 1")
}

/// The DCB condition of a single-event append: no event of the event's product after `head`.
pub fn condition_for(e: &NewEvent, head: u64) -> krescent_core::AppendCondition {
    krescent_core::AppendCondition::none_match_after(
        EventQuery::item(QueryItem::types(TYPES).and_tags(e.tags.iter().cloned())),
        head,
    )
}

/// The median of `values` (the upper one of an even count); panics on an empty list or on a
/// value that does not compare (NaN).
pub fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable values"));
    values[values.len() / 2]
}

/// A read model's catch-up: every event of `query`, read through the store's `read_pages` in
/// pages of [`PAGE`], decoded and folded. Returns the levels and how many events it read.
pub async fn catch_up<S: EventStore + ?Sized>(
    store: &S,
    query: &EventQuery,
) -> (HashMap<String, i64>, u64) {
    let mut levels = HashMap::with_capacity(PRODUCTS as usize);
    let mut read = 0;
    let page_size = Limit::new(PAGE).expect("non-zero page");
    let mut pages = store.read_pages(query.clone(), page_size);
    while let Some(page) = pages.next().await {
        let page = page.expect("read");
        read += page.len() as u64;
        for e in &page {
            fold(&mut levels, &e.event_type, &e.data);
        }
    }
    (levels, read)
}
