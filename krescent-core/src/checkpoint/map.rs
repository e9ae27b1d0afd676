//! [`CheckpointMap`]: a hash map that remembers which entries changed since the last stored
//! checkpoint, so that a checkpoint can hold only those (a delta).

use std::any::{Any, TypeId};
use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use indexmap::IndexMap;
use indexmap::map::Entry as MapEntry;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{CheckpointBucket, CheckpointError, DeltaState};

/// A hash map for large read-model state that is checkpointed often: a checkpoint written
/// after the first one holds only the entries inserted, changed or removed since the previous
/// checkpoint (a *delta*), instead of the whole map.
///
/// Use it for a field marked `#[krescent(delta)]` in `#[derive(CheckpointSupport)]`. With a
/// storage that keeps deltas ([`CheckpointStorage::supports_deltas`]), the model runner then
/// writes a full checkpoint first and deltas after it, and a full one again every
/// [`max_delta_chain`](crate::model::ModelConfig::max_delta_chain) deltas. A restart restores
/// the full checkpoint and applies its deltas in order.
///
/// Reading works like [`HashMap`](std::collections::HashMap). Every way of changing an entry
/// goes through a method that records the change: [`insert`](Self::insert),
/// [`get_mut`](Self::get_mut), [`get_or_insert_with`](Self::get_or_insert_with),
/// [`remove`](Self::remove) and [`clear`](Self::clear). Recording costs a few nanoseconds the
/// first time an entry changes between two checkpoints and nothing after; before the first
/// stored checkpoint, and in a model without checkpoints, nothing is recorded.
///
/// Iteration order is unspecified (it is insertion order, disturbed by removals). Equality
/// compares contents only.
///
/// ```
/// use krescent_core::checkpoint::CheckpointMap;
///
/// let mut stock: CheckpointMap<String, i64> = CheckpointMap::new();
/// *stock.get_or_insert_with("sku-1".to_owned(), || 0) += 5;
/// stock.insert("sku-2".to_owned(), 3);
/// if let Some(qty) = stock.get_mut("sku-2") {
///     *qty -= 1;
/// }
/// assert_eq!(stock.get("sku-1"), Some(&5));
/// assert_eq!(stock.remove("sku-2"), Some(2));
/// assert_eq!(stock.len(), 1);
/// ```
///
/// [`CheckpointStorage::supports_deltas`]: super::CheckpointStorage::supports_deltas
pub struct CheckpointMap<K, V, S = RandomState> {
    entries: IndexMap<K, Slot<V>, S>,
    /// The stamp of entries changed since the last stored checkpoint; stored entries hold an
    /// older one.
    epoch: u32,
    /// Whether a stored checkpoint of this map exists that a delta can build on; until then
    /// nothing is recorded.
    tracking: bool,
    /// Indices of entries stamped in this epoch. May name an index twice, or an index whose
    /// entry moved or went away: a delta checks the stamp of the entry there.
    changed: Vec<usize>,
    /// Keys removed since the last stored checkpoint (in order; re-inserted keys stay here
    /// and are written again by the delta's upserts, which are applied after the removals).
    removed: Vec<K>,
    /// Whether the map was cleared since the last stored checkpoint.
    cleared: bool,
    /// Whether `changed` names each changed entry exactly once (no removal since the last
    /// stored checkpoint), so that a delta needs no checks.
    exact: bool,
}

#[derive(Clone)]
struct Slot<V> {
    value: V,
    stamp: u32,
}

/// The first epoch after a restore or a stored checkpoint; stamp 0 marks a stored entry.
const FIRST_EPOCH: u32 = 1;

impl<K, V> CheckpointMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }

    /// An empty map with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, RandomState::new())
    }
}

impl<K, V, S> CheckpointMap<K, V, S> {
    /// An empty map that hashes keys with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_capacity_and_hasher(0, hasher)
    }

    /// An empty map with room for `capacity` entries that hashes keys with `hasher`.
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        CheckpointMap {
            entries: IndexMap::with_capacity_and_hasher(capacity, hasher),
            epoch: FIRST_EPOCH,
            tracking: false,
            changed: Vec::new(),
            removed: Vec::new(),
            cleared: false,
            exact: true,
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in unspecified order.
    pub fn iter(&self) -> CheckpointMapIter<'_, K, V> {
        CheckpointMapIter {
            inner: self.entries.iter(),
        }
    }

    /// The keys, in unspecified order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> + '_ {
        self.entries.keys()
    }

    /// The values, in unspecified order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + '_ {
        self.entries.values().map(|slot| &slot.value)
    }

    /// Removes every entry (a delta records the clearing, not each key).
    pub fn clear(&mut self) {
        self.entries.clear();
        if self.tracking {
            self.cleared = true;
            self.changed.clear();
            self.removed.clear();
        }
    }

    /// How many entries a delta written now would hold, at most (inserted or changed entries
    /// plus removed keys since the last stored checkpoint). `None` when no stored checkpoint
    /// exists to build a delta on.
    pub fn pending_changes(&self) -> Option<usize> {
        self.tracking
            .then(|| self.changed.len() + self.removed.len())
    }

    /// Stamps the entry at `index` as changed in this epoch.
    fn touch(&mut self, index: usize) {
        let slot = &mut self.entries[index];
        if slot.stamp != self.epoch {
            slot.stamp = self.epoch;
            if self.tracking {
                self.changed.push(index);
            }
        }
    }

    /// Starts a new epoch: everything so far is stored.
    fn stored(&mut self) {
        self.tracking = true;
        self.changed.clear();
        self.removed.clear();
        self.cleared = false;
        self.exact = true;
        if self.epoch == u32::MAX {
            // Once in four billion checkpoints: forget every stamp.
            for slot in self.entries.values_mut() {
                slot.stamp = 0;
            }
            self.epoch = FIRST_EPOCH;
        } else {
            self.epoch += 1;
        }
    }

    /// The entries changed in this epoch (an entry may appear twice).
    fn changed_entries(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.changed.iter().filter_map(|&i| {
            let (k, slot) = self.entries.get_index(i)?;
            (slot.stamp == self.epoch).then_some((k, &slot.value))
        })
    }
}

impl<K: Hash + Eq, V, S: BuildHasher> CheckpointMap<K, V, S> {
    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        self.entries.get(key).map(|slot| &slot.value)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        self.entries.contains_key(key)
    }

    /// The value of `key`, to change it (the entry counts as changed).
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        let index = self.entries.get_index_of(key)?;
        self.touch(index);
        Some(&mut self.entries[index].value)
    }

    /// Sets the value of `key`, returning the previous one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.entries.entry(key) {
            MapEntry::Occupied(o) => {
                let index = o.index();
                let old = std::mem::replace(&mut o.into_mut().value, value);
                self.touch(index);
                Some(old)
            }
            MapEntry::Vacant(v) => {
                let index = v.index();
                v.insert(Slot {
                    value,
                    stamp: self.epoch,
                });
                if self.tracking {
                    self.changed.push(index);
                }
                None
            }
        }
    }

    /// The value of `key`, inserting `make()` first if there is none (the entry counts as
    /// changed).
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let index = match self.entries.entry(key) {
            MapEntry::Occupied(o) => {
                let index = o.index();
                self.touch(index);
                index
            }
            MapEntry::Vacant(v) => {
                let index = v.index();
                v.insert(Slot {
                    value: make(),
                    stamp: self.epoch,
                });
                if self.tracking {
                    self.changed.push(index);
                }
                index
            }
        };
        &mut self.entries[index].value
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        let (index, key, slot) = self.entries.swap_remove_full(key)?;
        if self.tracking {
            self.removed.push(key);
            self.exact = false;
            // The last entry moved into `index`: record it there if it had changed.
            if let Some((_, moved)) = self.entries.get_index(index)
                && moved.stamp == self.epoch
            {
                self.changed.push(index);
            }
        }
        Some(slot.value)
    }

    /// Applies a decoded delta; the entries it sets count as stored.
    fn apply(&mut self, delta: MapDelta<K, V>) {
        if delta.cleared {
            self.entries.clear();
        }
        for key in &delta.removed {
            self.entries.swap_remove(key);
        }
        for (key, value) in delta.changed {
            self.entries.insert(key, Slot { value, stamp: 0 });
        }
        self.tracking = true;
        self.changed.clear();
        self.removed.clear();
        self.cleared = false;
        self.exact = true;
    }
}

impl<K, V, S: Default> Default for CheckpointMap<K, V, S> {
    fn default() -> Self {
        Self::with_hasher(S::default())
    }
}

impl<K: Clone, V: Clone, S: Clone> Clone for CheckpointMap<K, V, S> {
    fn clone(&self) -> Self {
        CheckpointMap {
            entries: self.entries.clone(),
            epoch: self.epoch,
            tracking: self.tracking,
            changed: self.changed.clone(),
            removed: self.removed.clone(),
            cleared: self.cleared,
            exact: self.exact,
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for CheckpointMap<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Hash + Eq, V: PartialEq, S: BuildHasher> PartialEq for CheckpointMap<K, V, S> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Hash + Eq, V: Eq, S: BuildHasher> Eq for CheckpointMap<K, V, S> {}

impl<K: Hash + Eq, V, S: BuildHasher> Extend<(K, V)> for CheckpointMap<K, V, S> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> FromIterator<(K, V)> for CheckpointMap<K, V, S> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::default();
        map.extend(iter);
        map
    }
}

/// Iterator over the entries of a [`CheckpointMap`].
pub struct CheckpointMapIter<'a, K, V> {
    inner: indexmap::map::Iter<'a, K, Slot<V>>,
}

impl<'a, K, V> Iterator for CheckpointMapIter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(k, slot)| (k, &slot.value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K, V> ExactSizeIterator for CheckpointMapIter<'_, K, V> {}

impl<'a, K, V, S> IntoIterator for &'a CheckpointMap<K, V, S> {
    type Item = (&'a K, &'a V);
    type IntoIter = CheckpointMapIter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Serialize, V: Serialize, S> Serialize for CheckpointMap<K, V, S> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K, V, S> Deserialize<'de> for CheckpointMap<K, V, S>
where
    K: Deserialize<'de> + Hash + Eq,
    V: Deserialize<'de>,
    S: BuildHasher + Default,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V, S>(PhantomData<(K, V, S)>);

        impl<'de, K, V, S> Visitor<'de> for MapVisitor<K, V, S>
        where
            K: Deserialize<'de> + Hash + Eq,
            V: Deserialize<'de>,
            S: BuildHasher + Default,
        {
            type Value = CheckpointMap<K, V, S>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                // Never trust a length from the input for the allocation.
                let capacity = access.size_hint().unwrap_or(0).min(4096);
                let mut map = CheckpointMap::with_capacity_and_hasher(capacity, S::default());
                while let Some((k, v)) = access.next_entry()? {
                    map.entries.insert(k, Slot { value: v, stamp: 0 });
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Encoding, in the compact binary codec's format: the whole map as `postcard` writes a map,
/// and deltas as it writes a [`MapDelta`] (the `cleared` flag, the removed keys, then the
/// changed entries, each sequence with its length first).
impl<K, V, S> CheckpointMap<K, V, S>
where
    K: Serialize + 'static,
    V: Serialize + 'static,
{
    fn encode_delta(&self) -> postcard::Result<Vec<u8>> {
        let mut out = self.buffer(self.changed.len() + self.removed.len());
        out.push(u8::from(self.cleared));
        out = postcard::to_extend(&self.removed, out)?;
        if self.exact {
            // Each index once, each entry changed: no checks, no counting pass.
            varint(&mut out, self.changed.len() as u64);
            for &i in &self.changed {
                if let Some((k, slot)) = self.entries.get_index(i) {
                    put_entry(&mut out, k, &slot.value)?;
                }
            }
        } else {
            // Some indices may be stale or repeated: count the live ones first.
            varint(&mut out, self.changed_entries().count() as u64);
            for (k, v) in self.changed_entries() {
                put_entry(&mut out, k, v)?;
            }
        }
        Ok(out)
    }

    /// The whole map, as the codec writes a map: its length, then the entries.
    fn encode_full(&self) -> postcard::Result<Vec<u8>> {
        let mut out = self.buffer(self.len());
        varint(&mut out, self.len() as u64);
        for (k, v) in self.iter() {
            put_entry(&mut out, k, v)?;
        }
        Ok(out)
    }

    /// A buffer with room for `entries` entries: growing it entry by entry costs more than
    /// the encoding.
    fn buffer(&self, entries: usize) -> Vec<u8> {
        Vec::with_capacity(32 + entries * (std::mem::size_of::<(K, V)>() + 2))
    }
}

#[inline]
fn put_entry<K: Serialize + 'static, V: Serialize + 'static>(
    out: &mut Vec<u8>,
    key: &K,
    value: &V,
) -> postcard::Result<()> {
    put_value(out, key)?;
    put_value(out, value)
}

/// Appends `value` in the compact binary codec's format. Strings and integers, the usual keys
/// and values of a large map, are written directly; other types go through the codec.
#[inline]
fn put_value<T: Serialize + 'static>(out: &mut Vec<u8>, value: &T) -> postcard::Result<()> {
    let any = value as &dyn Any;
    if TypeId::of::<T>() == TypeId::of::<String>() {
        if let Some(s) = any.downcast_ref::<String>() {
            varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
            return Ok(());
        }
    } else if TypeId::of::<T>() == TypeId::of::<i64>() {
        if let Some(&v) = any.downcast_ref::<i64>() {
            varint(out, zigzag(v));
            return Ok(());
        }
    } else if TypeId::of::<T>() == TypeId::of::<u64>() {
        if let Some(&v) = any.downcast_ref::<u64>() {
            varint(out, v);
            return Ok(());
        }
    }
    let taken = std::mem::take(out);
    *out = postcard::to_extend(value, taken)?;
    Ok(())
}

/// Puts the bytes of an encoding under `key`, or names `key` in the codec's error.
fn put_encoded(
    bucket: &mut CheckpointBucket,
    key: &str,
    encoded: postcard::Result<Vec<u8>>,
) -> Result<(), CheckpointError> {
    let bytes = encoded.map_err(|source| CheckpointError::Binary {
        key: key.into(),
        source,
    })?;
    bucket.put_bytes(key, bytes);
    Ok(())
}

/// An unsigned integer as a little-endian base-128 varint.
#[inline]
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A signed integer mapped to an unsigned one with small magnitudes kept small.
#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// A delta of a [`CheckpointMap`] read back from a checkpoint, ready to be applied.
#[derive(Deserialize)]
pub struct MapDelta<K, V> {
    cleared: bool,
    removed: Vec<K>,
    changed: Vec<(K, V)>,
}

impl<K, V> fmt::Debug for MapDelta<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapDelta")
            .field("cleared", &self.cleared)
            .field("removed", &self.removed.len())
            .field("changed", &self.changed.len())
            .finish()
    }
}

/// The stored form of a full [`CheckpointMap`] and of its deltas: bytes of the compact binary
/// codec under the field's key.
impl<K, V, S> DeltaState for CheckpointMap<K, V, S>
where
    K: Serialize + DeserializeOwned + Hash + Eq + 'static,
    V: Serialize + DeserializeOwned + 'static,
    S: BuildHasher + Default,
{
    type Delta = MapDelta<K, V>;

    fn put_full(&self, bucket: &mut CheckpointBucket, key: &str) -> Result<(), CheckpointError> {
        put_encoded(bucket, key, self.encode_full())
    }

    fn get_full(bucket: &CheckpointBucket, key: &str) -> Result<Self, CheckpointError> {
        let mut map: Self = super::get_binary(bucket, key)?;
        // Restored state is what is stored: deltas may build on it.
        map.tracking = true;
        Ok(map)
    }

    fn delta_ready(&self) -> bool {
        // A delta of about half the map or more is no cheaper than the map itself.
        self.tracking && !self.cleared && self.changed.len() + self.removed.len() < self.len() / 2
    }

    fn put_delta(&self, bucket: &mut CheckpointBucket, key: &str) -> Result<(), CheckpointError> {
        put_encoded(bucket, key, self.encode_delta())
    }

    fn get_delta(bucket: &CheckpointBucket, key: &str) -> Result<Self::Delta, CheckpointError> {
        super::get_binary(bucket, key)
    }

    fn apply_delta(&mut self, delta: Self::Delta) {
        self.apply(delta);
    }

    fn mark_stored(&mut self) {
        self.stored();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_map() -> CheckpointMap<String, i64> {
        stored_map_of(10)
    }

    fn stored_map_of(n: i64) -> CheckpointMap<String, i64> {
        let mut m: CheckpointMap<String, i64> = (0..n).map(|i| (format!("k{i}"), i)).collect();
        m.stored();
        m
    }

    fn changed(m: &CheckpointMap<String, i64>) -> Vec<(String, i64)> {
        let mut v: Vec<_> = m.changed_entries().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn nothing_is_recorded_before_the_first_stored_checkpoint() {
        let mut m: CheckpointMap<String, i64> = CheckpointMap::new();
        m.insert("a".into(), 1);
        m.remove("a");
        assert_eq!(m.pending_changes(), None);
        assert!(m.changed.is_empty() && m.removed.is_empty());
    }

    #[test]
    fn records_each_change_once_per_epoch() {
        let mut m = stored_map();
        *m.get_mut("k1").unwrap() += 1;
        *m.get_mut("k1").unwrap() += 1;
        m.insert("k2".into(), 20);
        *m.get_or_insert_with("new".into(), || 0) += 7;
        assert_eq!(m.pending_changes(), Some(3));
        assert_eq!(
            changed(&m),
            vec![("k1".into(), 3), ("k2".into(), 20), ("new".into(), 7)]
        );
        m.stored();
        assert_eq!(m.pending_changes(), Some(0));
        assert!(changed(&m).is_empty());
    }

    #[test]
    fn a_removal_that_moves_a_changed_entry_keeps_it_in_the_delta() {
        let mut m = stored_map();
        // k9 is last; change it, then remove k0 so that k9 moves into k0's place.
        m.insert("k9".into(), 99);
        m.remove("k0");
        assert_eq!(changed(&m), vec![("k9".into(), 99)]);
        assert_eq!(m.removed, vec!["k0".to_owned()]);
    }

    #[test]
    fn deltas_applied_to_a_copy_reproduce_the_map() {
        let mut m = stored_map_of(100);
        let mut copy = m.clone();
        m.remove("k3");
        m.insert("k3".into(), 33);
        m.remove("k4");
        m.insert("x".into(), 1);
        *m.get_mut("k9").unwrap() = -9;
        let mut bucket = CheckpointBucket::new();
        assert!(m.delta_ready());
        m.put_delta(&mut bucket, "m").unwrap();
        let delta = CheckpointMap::<String, i64>::get_delta(&bucket, "m").unwrap();
        copy.apply_delta(delta);
        assert_eq!(copy, m);

        m.stored();
        m.clear();
        m.insert("only".into(), 1);
        assert!(!m.delta_ready(), "a cleared map writes a full checkpoint");
    }

    #[test]
    fn a_delta_of_half_the_map_or_more_is_not_worth_it() {
        let mut m = stored_map_of(10);
        for i in 0..4 {
            m.insert(format!("k{i}"), -1);
        }
        assert!(m.delta_ready());
        m.insert("k4".into(), -1);
        assert!(!m.delta_ready());
    }

    #[test]
    fn the_full_encoding_is_the_codecs_map_encoding() {
        let m = stored_map_of(50);
        let mut bucket = CheckpointBucket::new();
        m.put_full(&mut bucket, "m").unwrap();
        let as_std: std::collections::HashMap<String, i64> =
            postcard::from_bytes(bucket.bytes("m").unwrap()).unwrap();
        assert_eq!(as_std.len(), 50);
        assert!(m.iter().all(|(k, v)| as_std.get(k) == Some(v)));
        let back = CheckpointMap::<String, i64>::get_full(&bucket, "m").unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn non_string_keys_and_values_go_through_the_codec() {
        let mut m: CheckpointMap<(u8, bool), Vec<f32>> = CheckpointMap::new();
        for i in 0..20_u8 {
            m.insert((i, i % 2 == 0), vec![f32::from(i); 2]);
        }
        m.stored();
        let mut copy = m.clone();
        m.insert((1, false), vec![]);
        m.remove(&(2, true));
        let mut bucket = CheckpointBucket::new();
        m.put_delta(&mut bucket, "m").unwrap();
        copy.apply_delta(CheckpointMap::<(u8, bool), Vec<f32>>::get_delta(&bucket, "m").unwrap());
        assert_eq!(copy, m);
        let mut full = CheckpointBucket::new();
        m.put_full(&mut full, "m").unwrap();
        assert_eq!(
            CheckpointMap::<(u8, bool), Vec<f32>>::get_full(&full, "m").unwrap(),
            m
        );
    }

    #[test]
    fn corrupt_delta_bytes_are_an_error() {
        let mut bucket = CheckpointBucket::new();
        bucket.put_bytes("m", vec![0, 5, 1]);
        assert!(matches!(
            CheckpointMap::<String, i64>::get_delta(&bucket, "m"),
            Err(CheckpointError::Binary { .. })
        ));
        bucket.put_str("m", "not bytes");
        assert!(CheckpointMap::<String, i64>::get_delta(&bucket, "m").is_err());
    }

    #[test]
    fn epoch_wrap_forgets_stamps() {
        let mut m = stored_map();
        m.epoch = u32::MAX;
        m.insert("k1".into(), 5);
        m.stored();
        assert_eq!(m.epoch, FIRST_EPOCH);
        assert!(m.entries.values().all(|s| s.stamp == 0));
        m.insert("k2".into(), 6);
        assert_eq!(changed(&m), vec![("k2".into(), 6)]);
    }
}
