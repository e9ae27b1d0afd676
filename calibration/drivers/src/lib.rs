//! The workload shared by the driver calibration benches (`benches/sqlite_drivers.rs`,
//! `benches/postgres_drivers.rs`): a stock ledger whose events carry a ≈120-byte JSON payload,
//! two tags each (`sku:…`, `warehouse:…`) and one of three types, plus the fold that a read
//! model would run over them.
//!
//! Everything here is driver-neutral, so that both drivers of a pair see the same rows, the
//! same SQL text and the same decoding work; only the calls into the driver differ.

use std::collections::HashMap;

use serde::Deserialize;

/// The event types, drawn uniformly.
pub const TYPES: [&str; 3] = ["StockAdded", "StockRemoved", "StockMoved"];
/// Distinct SKUs (so about 40 events per SKU tag in a 200k-event store).
pub const SKUS: u64 = 5_000;
/// Distinct warehouses.
pub const WAREHOUSES: u64 = 8;
/// Events appended per transaction.
pub const BATCH: usize = 1_000;
/// Rows read per page of a paged scan.
pub const PAGE: i64 = 1_000;
/// Events in the store that the scan and point-query benches read.
pub const SCAN_EVENTS: i64 = 200_000;
/// Events per multi-row `INSERT` on SQLite (6 parameters each), as krescent's SQLite writer.
pub const EVENT_ROWS_PER_INSERT: usize = 64;
/// Tag rows per multi-row `INSERT` on SQLite (3 parameters each), as krescent's SQLite writer.
pub const TAG_ROWS_PER_INSERT: usize = 128;

/// One event as the store writes it.
#[derive(Debug, Clone)]
pub struct Event {
    pub position: i64,
    pub id: [u8; 16],
    pub event_type: &'static str,
    /// The tags as stored in the events table (a JSON array).
    pub tags: String,
    /// Microseconds since the epoch.
    pub ts: i64,
    pub payload: Vec<u8>,
}

/// A row of the tag index: `(tag, type, position)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TagRow {
    pub tag: String,
    pub event_type: &'static str,
    pub position: i64,
}

/// One transaction's worth of writes: the events and their tag rows in key order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub events: Vec<Event>,
    pub tags: Vec<TagRow>,
}

/// A deterministic generator of ledger events (splitmix64; no `rand` dependency).
#[derive(Debug, Clone)]
pub struct Workload {
    state: u64,
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A tag/type pair that exists in a store generated with the same `SKUS` and `TYPES`.
    pub fn lookup_key(&mut self) -> (String, &'static str) {
        let sku = self.below(SKUS);
        let ty = TYPES[self.below(TYPES.len() as u64) as usize];
        (format!("sku:sku-{sku:04}"), ty)
    }

    /// The `n` events from position `first` on, with their tag rows sorted by key.
    pub fn batch(&mut self, first: i64, n: usize) -> Batch {
        let mut events = Vec::with_capacity(n);
        let mut tags = Vec::with_capacity(2 * n);
        for k in 0..n {
            let position = first + k as i64;
            let sku = self.below(SKUS);
            let warehouse = self.below(WAREHOUSES);
            let event_type = TYPES[self.below(TYPES.len() as u64) as usize];
            let qty = 1 + self.below(60);
            let reason = ["restock", "sale", "damage", "transfer"][self.below(4) as usize];
            let order = self.below(100_000_000);
            let clerk = self.below(40);
            let payload = format!(
                "{{\"sku\":\"sku-{sku:04}\",\"warehouse\":\"w-{warehouse}\",\"qty\":{qty},\
                 \"reason\":\"{reason}\",\"order\":\"po-{order:08}\",\"by\":\"clerk-{clerk:02}\",\
                 \"lot\":\"L{position:09}\"}}"
            )
            .into_bytes();
            let sku_tag = format!("sku:sku-{sku:04}");
            let warehouse_tag = format!("warehouse:w-{warehouse}");
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&self.next().to_be_bytes());
            id[8..].copy_from_slice(&self.next().to_be_bytes());
            events.push(Event {
                position,
                id,
                event_type,
                tags: format!("[\"{sku_tag}\",\"{warehouse_tag}\"]"),
                ts: 1_780_000_000_000_000 + position * 1_000,
                payload,
            });
            tags.push(TagRow {
                tag: sku_tag,
                event_type,
                position,
            });
            tags.push(TagRow {
                tag: warehouse_tag,
                event_type,
                position,
            });
        }
        tags.sort_unstable();
        Batch { events, tags }
    }
}

/// The payload, decoded without copying its strings.
#[derive(Debug, Deserialize)]
pub struct StockMove<'a> {
    pub sku: &'a str,
    pub warehouse: &'a str,
    pub qty: i64,
    pub reason: &'a str,
    pub order: &'a str,
    pub by: &'a str,
    pub lot: &'a str,
}

/// A read model folded over the whole store: stock per SKU plus checks that every column
/// was really read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub stock: HashMap<String, i64>,
    pub events: u64,
    pub last_position: i64,
    pub column_check: u64,
}

impl Ledger {
    /// Decodes one row's payload with serde_json and folds it in.
    pub fn apply(
        &mut self,
        position: i64,
        id: &[u8],
        event_type: &str,
        tags: &str,
        ts: i64,
        payload: &[u8],
    ) {
        let m: StockMove<'_> = serde_json::from_slice(payload).expect("a ledger payload");
        let delta = if event_type == "StockRemoved" {
            -m.qty
        } else {
            m.qty
        };
        match self.stock.get_mut(m.sku) {
            Some(v) => *v += delta,
            None => {
                self.stock.insert(m.sku.to_owned(), delta);
            }
        }
        self.events += 1;
        self.last_position = position;
        self.column_check = self
            .column_check
            .wrapping_add(u64::from(id[15]))
            .wrapping_add(tags.len() as u64)
            .wrapping_add(ts as u64 & 0xff);
    }
}

/// `prefix (row), (row), …` with `rows` copies of `row`, remembered per row count so that the
/// benches do not rebuild the text of a statement that the driver then finds in its cache.
#[derive(Debug)]
pub struct MultiRowSql {
    prefix: &'static str,
    row: &'static str,
    built: Vec<(usize, String)>,
}

impl MultiRowSql {
    pub fn new(prefix: &'static str, row: &'static str) -> Self {
        Self {
            prefix,
            row,
            built: Vec::new(),
        }
    }

    pub fn get(&mut self, rows: usize) -> &str {
        let at = match self.built.iter().position(|(n, _)| *n == rows) {
            Some(at) => at,
            None => {
                let mut sql = String::from(self.prefix);
                for k in 0..rows {
                    if k > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(self.row);
                }
                self.built.push((rows, sql));
                self.built.len() - 1
            }
        };
        &self.built[at].1
    }
}

/// The median of some durations, in microseconds.
pub fn median_micros(samples: &mut [std::time::Duration]) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

/// Prints one figure measured interleaved (driver A, driver B, A, B, …): per driver the median
/// and mean time of a sample, the rate they give for `work` items per sample, and the ratio of
/// each driver's median time to the first one's (above 1: slower than the first).
pub fn print_paired(figure: &str, work: f64, results: &mut [(&str, Vec<std::time::Duration>)]) {
    let mut first = None;
    for (driver, samples) in results.iter_mut() {
        let n = samples.len();
        let mean = samples.iter().map(|d| d.as_secs_f64()).sum::<f64>() / n as f64;
        let median = median_micros(samples) / 1e6;
        let base = *first.get_or_insert(median);
        if work > 1.0 {
            println!(
                "PAIRED {figure} {driver}: median {:.2} ms ({:.0} events/s), mean {:.2} ms \
                 ({:.0} events/s), n={n}, time vs first {:.2}x",
                median * 1e3,
                work / median,
                mean * 1e3,
                work / mean,
                median / base
            );
        } else {
            println!(
                "PAIRED {figure} {driver}: median {:.1} µs, mean {:.1} µs, n={n}, \
                 time vs first {:.2}x",
                median * 1e6,
                mean * 1e6,
                median / base
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_about_120_bytes_and_decodes() {
        let b = Workload::new(1).batch(1, 1_000);
        let mean = b.events.iter().map(|e| e.payload.len()).sum::<usize>() / 1_000;
        assert!((100..=120).contains(&mean), "mean payload {mean} bytes");
        let mut l = Ledger::default();
        for e in &b.events {
            l.apply(e.position, &e.id, e.event_type, &e.tags, e.ts, &e.payload);
        }
        assert_eq!(l.events, 1_000);
        assert_eq!(b.tags.len(), 2_000);
    }

    #[test]
    fn multi_row_sql() {
        let mut s = MultiRowSql::new("INSERT INTO t (a, b) VALUES ", "(?, ?)");
        assert_eq!(s.get(2), "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)");
        assert_eq!(s.get(1), "INSERT INTO t (a, b) VALUES (?, ?)");
    }
}
