//! The stored form of an event, and the decoding of the rows a read returns.
//!
//! An event's `record` holds, in this order: its position and its type id again (8 bytes
//! each, little-endian), its id (a UUID v7, 16 bytes), its time (microseconds since the Unix
//! epoch, UTC, 8 bytes, little-endian), the length of its stored tags (4 bytes,
//! little-endian), its tags (`<byte length>:<tag>` for each tag, concatenated), and its
//! payload. A read decodes one value per row, the record, plus the row's `position` to name a
//! damaged record.

use std::ops::Range;
use std::sync::Arc;

use rusqlite::Row;
use rusqlite::types::ValueRef;
use uuid::Uuid;

use crate::connection::Cache;
use crate::error::{SqliteError, corrupt};
use krescent_core::event::{Payload, RecordedEvent, Tag, Tags};
use krescent_core::query::{Direction, EventQuery};

/// Type names for the events of one read, each a new `Arc` for this read alone.
///
/// Every event holds its type name as an `Arc<str>`. Were they clones of the connection's
/// cached names, the thread reading the next page ahead would increment the same few reference
/// counts that the thread handling (and dropping) this page decrements, and the counts' cache
/// line would move between the two cores for nearly every event. Names copied per read keep
/// each count on one core at a time, for a few allocations per page.
#[derive(Default)]
pub(crate) struct PageTypes {
    names: Vec<(i64, Arc<str>)>,
}

/// A read with more distinct types than this shares the connection's names beyond them.
const PAGE_TYPES: usize = 16;

impl PageTypes {
    /// The name of type `id` for this read; `None` if the type is not stored.
    #[inline]
    fn name(&mut self, cache: &Cache, id: i64) -> Option<Arc<str>> {
        if let Some((_, name)) = self.names.iter().find(|(i, _)| *i == id) {
            return Some(Arc::clone(name));
        }
        let cached = cache.type_name(id)?;
        if self.names.len() >= PAGE_TYPES {
            return Some(Arc::clone(cached));
        }
        let name: Arc<str> = Arc::from(&**cached);
        self.names.push((id, Arc::clone(&name)));
        Some(name)
    }
}

/// The positions a statement's rows must have, in their order: strictly after the last one
/// (backwards: before), within the query's range.
pub(crate) struct Order {
    forward: bool,
    /// The last position seen, or the bound the first one must be beyond.
    last: u64,
    /// The bound on the other side (inclusive).
    end: u64,
}

impl Order {
    pub(crate) fn of(query: &EventQuery) -> Self {
        let until = query.until_position().unwrap_or(u64::MAX);
        match query.direction_value() {
            Direction::Forward => Order {
                forward: true,
                last: query.after_position(),
                end: until,
            },
            Direction::Backward => Order {
                forward: false,
                last: until.saturating_add(1),
                end: query.after_position().saturating_add(1),
            },
        }
    }

    /// Takes `position` as the next row's; false if it is out of order or out of range.
    #[inline]
    fn next(&mut self, position: u64) -> bool {
        let ok = if self.forward {
            position > self.last && position <= self.end
        } else {
            position < self.last && position >= self.end
        };
        self.last = position;
        ok
    }
}

/// Decodes `record, position` (the position only to name a row whose record is damaged),
/// appending the payload to `payloads`; the event (with an empty payload) and the payload's
/// range in `payloads`.
#[inline]
pub(crate) fn decode_row(
    row: &Row<'_>,
    cache: &mut Cache,
    types: &mut PageTypes,
    order: &mut Order,
    payloads: &mut Vec<u8>,
) -> Result<(RecordedEvent, Range<usize>), SqliteError> {
    let rowid = || match row.get_ref(1) {
        Ok(ValueRef::Integer(p)) => u64::try_from(p).ok(),
        _ => None,
    };
    let ValueRef::Blob(record) = row.get_ref(0)? else {
        return Err(corrupt(rowid(), "record is not a blob"));
    };
    let parts = decode_record(record).map_err(|what| corrupt(rowid(), what))?;
    let position = parts.position;
    if !order.next(position) {
        let at = rowid();
        return Err(corrupt(
            at,
            format!("record says position {position}, out of the order of the rows"),
        ));
    }
    let event_type = types.name(cache, parts.type_id).ok_or_else(|| {
        corrupt(
            Some(position),
            format!("type id {} is not stored", parts.type_id),
        )
    })?;
    let tags = cache.tags(parts.tags, position)?;
    let timestamp = cache.timestamp(parts.micros, position)?;
    let start = payloads.len();
    payloads.extend_from_slice(parts.payload);
    let event = RecordedEvent {
        position,
        id: parts.id,
        event_type,
        tags,
        timestamp,
        data: Payload::new(),
    };
    Ok((event, start..payloads.len()))
}

/// The bytes of a record before its tags: the position (8), the type id (8), the event id
/// (16), the time (8) and the length of the tags (4).
const RECORD_HEADER: usize = 44;

/// Writes the stored `record` of an event into `out` (appended): its position and its type
/// id (8 bytes each, little-endian; the `position` and `type` columns repeat them for the
/// indexes), its id (16 bytes), its time in microseconds since the Unix epoch (8 bytes,
/// little-endian), the length of its stored tags (4 bytes, little-endian), the tags as
/// [`encode_tags`] writes them, then the payload. Fails only for tags longer than 4 GiB.
pub(crate) fn encode_record(
    position: i64,
    type_id: i64,
    id: &Uuid,
    micros: i64,
    tags: &[u8],
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let tags_len = u32::try_from(tags.len())
        .map_err(|_| format!("the stored tags are {} bytes, over 4 GiB", tags.len()))?;
    out.reserve(RECORD_HEADER + tags.len() + payload.len());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&type_id.to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&micros.to_le_bytes());
    out.extend_from_slice(&tags_len.to_le_bytes());
    out.extend_from_slice(tags);
    out.extend_from_slice(payload);
    Ok(())
}

/// The parts of a stored record (see [`encode_record`]).
pub(crate) struct RecordParts<'a> {
    pub(crate) position: u64,
    pub(crate) type_id: i64,
    pub(crate) id: Uuid,
    pub(crate) micros: i64,
    pub(crate) tags: &'a [u8],
    pub(crate) payload: &'a [u8],
}

/// Splits a stored record; what is wrong with it if it is too short for its header or tags.
#[inline]
pub(crate) fn decode_record(record: &[u8]) -> Result<RecordParts<'_>, String> {
    let short = || {
        format!(
            "record of {} bytes is shorter than its {RECORD_HEADER}-byte header",
            record.len()
        )
    };
    let (position, rest) = record.split_first_chunk::<8>().ok_or_else(short)?;
    let position = u64::try_from(i64::from_le_bytes(*position)).map_err(|_| {
        format!(
            "record's position {} is negative",
            i64::from_le_bytes(*position)
        )
    })?;
    let (type_id, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
    let (id, rest) = rest.split_first_chunk::<16>().ok_or_else(short)?;
    let (micros, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
    let (tags_len, rest) = rest.split_first_chunk::<4>().ok_or_else(short)?;
    let tags_len = usize::try_from(u32::from_le_bytes(*tags_len)).unwrap_or(usize::MAX);
    if tags_len > rest.len() {
        return Err(format!(
            "record's tags of {tags_len} bytes run past its end ({} bytes left)",
            rest.len()
        ));
    }
    let (tags, payload) = rest.split_at(tags_len);
    Ok(RecordParts {
        position,
        type_id: i64::from_le_bytes(*type_id),
        id: Uuid::from_bytes(*id),
        micros: i64::from_le_bytes(*micros),
        tags,
        payload,
    })
}

/// Writes the stored form of `tags` into `out` (cleared first): `<byte length>:<tag>` for each
/// tag.
pub(crate) fn encode_tags(tags: &Tags, out: &mut String) {
    out.clear();
    for tag in tags {
        let tag = tag.as_str();
        push_decimal(out, tag.len());
        out.push(':');
        out.push_str(tag);
    }
}

/// Appends `n` in decimal, without the formatting machinery (this runs for every event).
fn push_decimal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // A digit is below 10, so the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// Parses the stored form of a tag list.
pub(crate) fn decode_tags(mut text: &str) -> Result<Tags, String> {
    let mut tags = Vec::new();
    while !text.is_empty() {
        let (len, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("tags `{text}` lack a length prefix"))?;
        let len: usize = len
            .parse()
            .map_err(|_| format!("tags have a bad length prefix `{len}`"))?;
        let tag = rest
            .get(..len)
            .ok_or_else(|| format!("tags `{rest}` are shorter than their length prefix {len}"))?;
        tags.push(Tag::parse(tag).map_err(|e| format!("bad tag `{tag}`: {e}"))?);
        text = &rest[len..];
    }
    Ok(Tags::from_tags(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let tags = Tags::parse(["product:P-1", "note:with:colons", "x:1"]).unwrap();
        let mut text = String::new();
        encode_tags(&tags, &mut text);
        assert_eq!(decode_tags(&text).unwrap(), tags);
        encode_tags(&Tags::empty(), &mut text);
        assert_eq!(text, "");
        let long = Tags::parse([format!("k:{}", "v".repeat(120)).as_str()]).unwrap();
        encode_tags(&long, &mut text);
        assert!(text.starts_with("122:k:vv"), "{text}");
        assert_eq!(decode_tags(&text).unwrap(), long);
        assert_eq!(decode_tags("").unwrap(), Tags::empty());
    }

    fn record(position: i64, tags: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let id = Uuid::from_u128(0x0102_0304);
        encode_record(position, 7, &id, -5, tags, payload, &mut out).unwrap();
        out
    }

    #[test]
    fn records_round_trip() {
        let bytes = record(42, b"3:k:v", b"{}");
        assert_eq!(bytes.len(), RECORD_HEADER + 5 + 2);
        let parts = decode_record(&bytes).unwrap();
        assert_eq!(parts.position, 42);
        assert_eq!(parts.type_id, 7);
        assert_eq!(parts.id, Uuid::from_u128(0x0102_0304));
        assert_eq!(parts.micros, -5);
        assert_eq!(parts.tags, b"3:k:v");
        assert_eq!(parts.payload, b"{}");
        let empty = record(1, b"", b"");
        let parts = decode_record(&empty).unwrap();
        assert!(parts.tags.is_empty() && parts.payload.is_empty());
    }

    #[test]
    fn damaged_records_say_what_is_wrong() {
        let whole = record(3, b"3:k:v", b"{}");
        let short = decode_record(&whole[..RECORD_HEADER - 1]).err().unwrap();
        assert!(short.contains("shorter than its 44-byte header"), "{short}");
        let past = decode_record(&whole[..RECORD_HEADER + 2]).err().unwrap();
        assert!(past.contains("run past its end"), "{past}");
        let negative = record(-1, b"", b"");
        let err = decode_record(&negative).err().unwrap();
        assert!(err.contains("negative"), "{err}");
    }

    #[test]
    fn rows_must_come_in_the_order_and_range_of_the_query() {
        let query = EventQuery::match_all().after(10).until(20);
        let mut forward = Order::of(&query);
        assert!(!forward.next(10), "at the lower bound");
        let mut forward = Order::of(&query);
        assert!(forward.next(11) && forward.next(20));
        assert!(!forward.next(21), "beyond the upper bound");
        let mut forward = Order::of(&query);
        assert!(forward.next(15));
        assert!(!forward.next(15), "a repeated position");
        let mut backward = Order::of(&query.clone().backward());
        assert!(backward.next(20) && backward.next(11));
        assert!(!backward.next(12), "out of order");
        let mut backward = Order::of(&query.backward());
        assert!(!backward.next(21), "beyond the upper bound");
    }

    #[test]
    fn corrupt_tags_are_errors() {
        for bad in ["x", "3:ab", "zz:abc", "3:abc", "99:a:b"] {
            assert!(decode_tags(bad).is_err(), "{bad}");
        }
    }
}
