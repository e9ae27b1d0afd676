//! Rows: decoding event rows ([`EVENT_COLUMNS`]) into [`RecordedEvent`]s, the encoding of the
//! `tags` column, and the raw values of the columns the storages read.
//!
//! Every column is taken as the bytes PostgreSQL sent (binary format) and decoded here, so
//! that a catch-up spends little per row: the driver's conversions check the column type
//! against a list of names and validate text for every value, where a page repeats a few type
//! names and tag lists. A value that cannot be decoded is a [`PostgresError::Corrupt`] naming
//! the row's position.
//!
//! - Type names are matched by their bytes against the names already met in the page (one
//!   `Arc<str>` per name and page, so pages decoded on different threads share no reference
//!   count) and validated as UTF-8 once per page.
//! - Tag lists are decoded once and cached by their stored bytes across pages.
//! - A row with the time of the row before (the events of one append) reuses its decoding.
//! - Rows are decoded as they arrive and dropped at once; the payloads of a page share one
//!   buffer.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Type};
use uuid::Uuid;

use crate::error::{PostgresError, db};
use krescent_core::__backend::FastState;
use krescent_core::event::{RecordedEvent, Tags};
use krescent_core::store::StoreError;

/// The columns every event read returns, in this order.
pub(crate) const EVENT_COLUMNS: &str = "position, id, type, tags, recorded_at, payload";

/// The name of column `index` of [`EVENT_COLUMNS`] (`?` past the last).
pub(crate) fn event_column(index: usize) -> &'static str {
    EVENT_COLUMNS.split(", ").nth(index).unwrap_or("?")
}

/// The most tag lists the decoding cache holds; it starts over when full.
const TAG_CACHE: usize = 65_536;

/// Microseconds from the Unix epoch to 2000-01-01 UTC, the epoch of PostgreSQL's times.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The time of a `timestamptz` value (microseconds since 2000-01-01 UTC), if `DateTime<Utc>`
/// can hold it (`infinity` and `-infinity` cannot).
pub(crate) fn utc_from_pg_micros(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_MICROS)?)
}

/// The bytes of a value of the column type with this OID, as sent, without conversion (a
/// column of another type is refused by the driver). `NULL` reads as `None`.
struct Raw<'a, const OID: u32>(&'a [u8]);

impl<'a, const OID: u32> FromSql<'a> for Raw<'a, OID> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(ty: &Type) -> bool {
        ty.oid() == OID
    }
}

/// OIDs of the column types of [`EVENT_COLUMNS`].
const INT8: u32 = 20;
const UUID: u32 = 2950;
const TEXT: u32 = 25;
const BYTEA: u32 = 17;
const TIMESTAMPTZ: u32 = 1184;

/// The value of column `index` of `row`, as sent. `NULL` is a corrupt row.
fn column<'a, const OID: u32>(
    row: &'a Row,
    index: usize,
    position: i64,
) -> Result<&'a [u8], StoreError> {
    match row.try_get::<_, Option<Raw<'a, OID>>>(index).map_err(db)? {
        Some(Raw(raw)) => Ok(raw),
        None => Err(corrupt(position, || {
            format!("column `{}` is NULL", event_column(index))
        })),
    }
}

fn corrupt(position: i64, what: impl FnOnce() -> String) -> StoreError {
    PostgresError::Corrupt {
        position,
        what: what(),
    }
    .into()
}

/// Tags from the value of the `tags` column ([`encode_tags`]).
pub(crate) fn parse_tags(raw: &[u8]) -> Result<Tags, String> {
    Tags::parse(decode_tags(raw)?).map_err(|e| e.to_string())
}

/// What reads share across pages: tag lists by their stored bytes (an event's tags usually
/// repeat those of earlier events). Locked once per page.
#[derive(Default)]
pub(crate) struct Decoding {
    tags: HashMap<Box<[u8]>, Tags, FastState>,
}

impl Decoding {
    /// The tags stored as `raw` in the row at `position`.
    pub(crate) fn tags(&mut self, raw: &[u8], position: i64) -> Result<Tags, StoreError> {
        if let Some(tags) = self.tags.get(raw) {
            return Ok(tags.clone());
        }
        let tags = parse_tags(raw).map_err(|what| corrupt(position, || what))?;
        if self.tags.len() >= TAG_CACHE {
            self.tags.clear();
        }
        self.tags.insert(Box::from(raw), tags.clone());
        Ok(tags)
    }
}

/// A row decoded but for its tags and payload, which wait in the page's buffers.
struct Partial {
    position: i64,
    id: Uuid,
    event_type: Arc<str>,
    timestamp: DateTime<Utc>,
    /// Where the row's tags end in [`Page::tags`].
    tags_end: usize,
    /// Where the row's payload ends in [`Page::payloads`].
    payload_end: usize,
}

/// A page of rows of [`EVENT_COLUMNS`] decoded as they arrive ([`push`](Self::push)),
/// so that each row is dropped as soon as it is read; [`finish`](Self::finish) gives the
/// events in the order pushed.
pub(crate) struct Page {
    rows: Vec<Partial>,
    /// The type names met in this page.
    types: Vec<Arc<str>>,
    /// The stored tags of every row, back to back: looked up once the page is read, under one
    /// lock of the shared cache.
    tags: Vec<u8>,
    /// The payloads of every row, back to back: the events' data share this buffer.
    payloads: Vec<u8>,
    /// The last time decoded, as sent and as decoded.
    last_time: Option<([u8; 8], DateTime<Utc>)>,
    /// How many rows the page is expected to hold (for the first allocation of buffers).
    expected: usize,
}

impl Page {
    /// A page expected to hold about `expected` rows.
    pub(crate) fn new(expected: usize) -> Self {
        Page {
            rows: Vec::with_capacity(expected),
            types: Vec::new(),
            tags: Vec::new(),
            payloads: Vec::new(),
            last_time: None,
            expected,
        }
    }

    /// Decodes the next row.
    pub(crate) fn push(&mut self, row: &Row) -> Result<(), StoreError> {
        let previous = self.rows.last().map_or(0, |r| r.position);
        let raw = column::<INT8>(row, 0, previous)?;
        let Ok(bytes) = <[u8; 8]>::try_from(raw) else {
            return Err(corrupt(previous, || {
                format!("the next row's position has {} bytes, not 8", raw.len())
            }));
        };
        let position = i64::from_be_bytes(bytes);
        if position < 0 {
            return Err(corrupt(position, || "negative position".to_owned()));
        }
        let raw = column::<UUID>(row, 1, position)?;
        let id = Uuid::from_slice(raw)
            .map_err(|_| corrupt(position, || format!("an id of {} bytes", raw.len())))?;
        let raw = column::<TEXT>(row, 2, position)?;
        let event_type = match self.types.iter().find(|name| name.as_bytes() == raw) {
            Some(name) => Arc::clone(name),
            None => {
                let name: Arc<str> = std::str::from_utf8(raw)
                    .map_err(|e| corrupt(position, || format!("the type is not UTF-8: {e}")))?
                    .into();
                self.types.push(Arc::clone(&name));
                name
            }
        };
        let tags = column::<BYTEA>(row, 3, position)?;
        let raw = column::<TIMESTAMPTZ>(row, 4, position)?;
        let timestamp = match self.last_time {
            Some((bytes, time)) if bytes == raw => time,
            _ => {
                let bytes = <[u8; 8]>::try_from(raw).ok();
                let time = bytes
                    .and_then(|b| utc_from_pg_micros(i64::from_be_bytes(b)))
                    .ok_or_else(|| {
                        corrupt(position, || {
                            format!("recorded_at ({raw:02x?}) is not a representable time")
                        })
                    })?;
                self.last_time = bytes.map(|b| (b, time));
                time
            }
        };
        let payload = column::<BYTEA>(row, 5, position)?;
        if self.payloads.capacity() == 0 {
            // Room for a page of rows of about this size (the buffers grow if need be).
            let rows = self.expected.max(1);
            self.payloads
                .reserve(rows.saturating_mul(payload.len() + payload.len() / 4 + 16));
            self.tags
                .reserve(rows.saturating_mul(tags.len() + tags.len() / 4 + 8));
        }
        self.tags.extend_from_slice(tags);
        self.payloads.extend_from_slice(payload);
        self.rows.push(Partial {
            position,
            id,
            event_type,
            timestamp,
            tags_end: self.tags.len(),
            payload_end: self.payloads.len(),
        });
        Ok(())
    }

    /// The events of the page, their tags looked up in (and added to) `decoding`.
    pub(crate) fn finish(
        self,
        decoding: &parking_lot::Mutex<Decoding>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let payloads = bytes::Bytes::from(self.payloads);
        let mut out = Vec::with_capacity(self.rows.len());
        let (mut tags_start, mut payload_start) = (0, 0);
        let mut decoding = decoding.lock();
        for row in self.rows {
            let tags = decoding.tags(&self.tags[tags_start..row.tags_end], row.position)?;
            out.push(RecordedEvent {
                // Checked when pushed.
                position: row.position.unsigned_abs(),
                id: row.id,
                event_type: row.event_type,
                tags,
                timestamp: row.timestamp,
                data: payloads.slice(payload_start..row.payload_end),
            });
            tags_start = row.tags_end;
            payload_start = row.payload_end;
        }
        Ok(out)
    }
}

/// Appends the encoding of an event's tags in the `tags` column to `out`: for each tag in
/// order, its length in bytes (4 bytes, big-endian), then its UTF-8 text; nothing for no
/// tags. Sent and returned as `bytea`, it costs the server a copy, where a `text[]` costs an
/// element-by-element conversion in each direction.
pub(crate) fn encode_tags<'a>(texts: impl Iterator<Item = &'a str>, out: &mut Vec<u8>) {
    for text in texts {
        // A tag of 4 GiB or more cannot be sent anyway: a protocol message holds at most
        // 1 GiB, so the append fails.
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}

/// The texts of an encoding written by [`encode_tags`], in order.
pub(crate) fn decode_tags(mut raw: &[u8]) -> Result<Vec<&str>, String> {
    let mut texts = Vec::new();
    while let Some((len, rest)) = raw.split_first_chunk::<4>() {
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        if rest.len() < len {
            return Err(format!(
                "the tags are cut short: a tag of {len} bytes, {} left",
                rest.len()
            ));
        }
        let (text, rest) = rest.split_at(len);
        texts.push(std::str::from_utf8(text).map_err(|e| format!("a tag is not UTF-8: {e}"))?);
        raw = rest;
    }
    if !raw.is_empty() {
        return Err(format!("the tags end in {} stray bytes", raw.len()));
    }
    Ok(texts)
}

/// A stored position as a `u64`; a negative one is a corrupt row.
pub(crate) fn to_position(p: i64) -> Result<u64, StoreError> {
    u64::try_from(p).map_err(|_| {
        PostgresError::Corrupt {
            position: p,
            what: "negative position".to_owned(),
        }
        .into()
    })
}

/// A `timestamptz` as PostgreSQL sends it: microseconds since 2000-01-01 UTC (`infinity` is
/// `i64::MAX`). Read without the driver's conversion so that a time outside the range of
/// `DateTime<Utc>` is reported as a corrupt row, naming the model, rather than as a decoding
/// failure of the driver.
pub(crate) struct RawTimestamp(i64);

impl RawTimestamp {
    pub(crate) fn to_utc(&self) -> Option<DateTime<Utc>> {
        utc_from_pg_micros(self.0)
    }
}

impl<'a> FromSql<'a> for RawTimestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a timestamptz of {} bytes, not 8", raw.len()))?;
        Ok(RawTimestamp(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krescent_core::event::Tag;

    fn encode(texts: &[&str]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_tags(texts.iter().copied(), &mut buf);
        buf
    }

    #[test]
    fn stored_tags_are_decoded_and_cached() {
        let tags =
            Tags::parse(["a:x\"y", "b:c\\d", "c:{,}", "d:\u{1}\n", "e:grüße", "f:"]).unwrap();
        let texts: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        assert_eq!(parse_tags(&encode(&texts)).unwrap(), tags);
        assert_eq!(encode(&["k:v"]), b"\0\0\0\x03k:v");
        assert_eq!(parse_tags(&encode(&[])).unwrap(), Tags::empty());
        assert!(parse_tags(&encode(&["no separator"])).is_err());
        let whole = encode(&["k:v", "k:w"]);
        for cut in 1..whole.len() {
            // Cut between the two tags, it is the encoding of the first alone.
            let decoded = parse_tags(&whole[..cut]);
            if cut == 7 {
                assert_eq!(decoded.unwrap(), Tags::parse(["k:v"]).unwrap());
            } else {
                assert!(decoded.is_err(), "cut at {cut}");
            }
        }
        assert!(parse_tags(b"\0\0\0\x02\xff\xfe").is_err());

        let mut decoding = Decoding::default();
        let raw = encode(&["p:1", "q:2"]);
        let first = decoding.tags(&raw, 1).unwrap();
        assert_eq!(first, Tags::parse(["p:1", "q:2"]).unwrap());
        assert_eq!(decoding.tags(&raw, 2).unwrap(), first);
        assert_eq!(decoding.tags.len(), 1);
        let err = decoding.tags(&encode(&["bad"]), 7).unwrap_err();
        assert!(
            matches!(
                PostgresError::of(&err),
                Some(PostgresError::Corrupt { position: 7, .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn raw_timestamps_convert_without_panicking() {
        assert_eq!(
            RawTimestamp(0).to_utc(),
            DateTime::from_timestamp(946_684_800, 0)
        );
        assert_eq!(RawTimestamp(i64::MAX).to_utc(), None);
        assert_eq!(RawTimestamp(i64::MIN).to_utc(), None);
        assert!(RawTimestamp::from_sql(&Type::TIMESTAMPTZ, &[0; 7]).is_err());
        let parsed = RawTimestamp::from_sql(&Type::TIMESTAMPTZ, &5_i64.to_be_bytes()).unwrap();
        assert_eq!(parsed.0, 5);
    }

    #[test]
    fn times_decode_like_the_driver() {
        let micros = [
            0,
            1,
            -1,
            812_345_678_901_234,
            -946_684_800_000_000,
            -5_000_000_000_000_000,
            4_000_000_000_000_000,
        ];
        for m in micros {
            let ours = utc_from_pg_micros(m).expect("in range");
            let driver = <DateTime<Utc> as FromSql>::from_sql(&Type::TIMESTAMPTZ, &m.to_be_bytes())
                .expect("driver decodes");
            assert_eq!(ours, driver, "{m}");
        }
        // `infinity`, `-infinity` and sums that overflow are refused, not wrapped.
        for m in [i64::MAX, i64::MIN, i64::MAX - PG_EPOCH_MICROS + 1] {
            assert_eq!(utc_from_pg_micros(m), None, "{m}");
        }
    }

    #[test]
    fn raw_columns_accept_only_their_type() {
        assert!(Raw::<'_, INT8>::accepts(&Type::INT8));
        assert!(!Raw::<'_, INT8>::accepts(&Type::INT4));
        assert!(Raw::<'_, UUID>::accepts(&Type::UUID));
        assert!(Raw::<'_, TEXT>::accepts(&Type::TEXT));
        assert!(!Raw::<'_, TEXT>::accepts(&Type::VARCHAR));
        assert!(Raw::<'_, BYTEA>::accepts(&Type::BYTEA));
        assert!(Raw::<'_, TIMESTAMPTZ>::accepts(&Type::TIMESTAMPTZ));
        assert!(!Raw::<'_, TIMESTAMPTZ>::accepts(&Type::TIMESTAMP));
        let columns: Vec<&str> = EVENT_COLUMNS.split(", ").collect();
        for (i, name) in columns.iter().enumerate() {
            assert_eq!(event_column(i), *name);
        }
    }
}
