//! Reads: a query's statement run in a read transaction, its rows decoded into one page of
//! events whose payloads share one buffer.

use std::collections::HashMap;

use crate::connection::Conn;
use crate::error::SqliteError;
use crate::query::{self, Kind};
use crate::record::{Order, PageTypes, decode_row};
use krescent_core::event::{Payload, RecordedEvent};
use krescent_core::query::EventQuery;

/// The payload bytes per event assumed by a connection's first read (later reads assume the
/// average of the read before).
const PAYLOAD_GUESS: usize = 128;

/// At most this many payload bytes are reserved before the first row (the buffer grows as
/// needed).
const PAYLOAD_RESERVE: usize = 8 << 20;

impl Conn {
    /// The events `query` selects, in one read transaction.
    pub(crate) fn read(&mut self, query: &EventQuery) -> Result<Vec<RecordedEvent>, SqliteError> {
        self.in_read_txn(|c| c.select(query))
    }

    /// `EXPLAIN QUERY PLAN` of the statement for `query`.
    pub(crate) fn explain(&mut self, query: &EventQuery) -> Result<String, SqliteError> {
        self.in_read_txn(|c| {
            c.refresh_known()?;
            let sql = query::translate(query, &c.cache.known, &c.cache.ids);
            if let Kind::Empty = sql.kind {
                return Ok("EMPTY (no statement: the query matches nothing stored)".to_owned());
            }
            let mut stmt = c
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", sql.text))?;
            sql.bind(&mut stmt)?;
            let mut rows = stmt.raw_query();
            let mut depth: HashMap<i64, usize> = HashMap::new();
            let mut out = String::new();
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let parent: i64 = row.get(1)?;
                let detail: String = row.get(3)?;
                let d = depth.get(&parent).map_or(0, |d| d + 1);
                depth.insert(id, d);
                out.push_str(&"  ".repeat(d));
                out.push_str(&detail);
                out.push('\n');
            }
            Ok(out)
        })
    }

    fn in_read_txn<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, SqliteError>,
    ) -> Result<T, SqliteError> {
        if !self.conn.is_autocommit() {
            self.rollback_quietly();
        }
        self.exec("BEGIN")?;
        let result = f(self);
        if let Err(e) = self.exec("COMMIT") {
            self.rollback_quietly();
            result?;
            return Err(e);
        }
        result
    }

    /// The events `query` selects, in the current transaction.
    pub(crate) fn select(&mut self, query: &EventQuery) -> Result<Vec<RecordedEvent>, SqliteError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        self.refresh_known()?;
        let Conn { conn, cache, .. } = self;
        let (mut stmt, kind) = {
            let sql = query::translate(query, &cache.known, &cache.ids);
            if let Kind::Empty = sql.kind {
                return Ok(Vec::new());
            }
            let mut stmt = conn.prepare_cached(&sql.text)?;
            sql.bind(&mut stmt)?;
            (stmt, sql.kind)
        };
        let limit = query.limit_value().map_or(usize::MAX, |l| {
            usize::try_from(l.get()).unwrap_or(usize::MAX)
        });
        let mut out = Vec::with_capacity(limit.min(1024));
        // The payloads of the page go into one buffer that the events share (one allocation
        // per page instead of one per event).
        // Sized from the previous read's payloads, with an eighth to spare, so that a page
        // of similar events fills it without growing (and copying) it.
        let per_event = match cache.payload_per_event {
            0 => PAYLOAD_GUESS,
            n => n + n / 8,
        };
        let mut payloads = Vec::with_capacity(
            out.capacity()
                .saturating_mul(per_event)
                .min(PAYLOAD_RESERVE),
        );
        let mut ranges = Vec::with_capacity(out.capacity());
        let mut order = Order::of(query);
        let mut types = PageTypes::default();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            let (event, payload) = decode_row(row, cache, &mut types, &mut order, &mut payloads)?;
            if let Kind::Filter = kind {
                if !query.matches_filter(&event.event_type, &event.tags) {
                    payloads.truncate(payload.start);
                    continue;
                }
            }
            ranges.push(payload);
            out.push(event);
            if out.len() >= limit {
                break;
            }
        }
        if !out.is_empty() {
            cache.payload_per_event = payloads.len().div_ceil(out.len());
        }
        let payloads = Payload::from(payloads);
        for (event, range) in out.iter_mut().zip(ranges) {
            event.data = payloads.slice(range);
        }
        Ok(out)
    }
}
