//! The payload codec: a variant's content, encoded with the enum's own serde implementation.
//!
//! Encoding runs the enum's `Serialize` through [`ContentSerializer`], which drops the variant
//! name and writes only the content. Decoding runs the enum's `Deserialize` through
//! [`VariantDeserializer`], which presents the stored content as the variant chosen by the type
//! name. Every serde attribute on the user's enum (defaults, renames, `with`) keeps working.

use serde::de::{self, DeserializeSeed, EnumAccess, IntoDeserializer, VariantAccess, Visitor};
use serde::ser::{self, Impossible, Serialize, Serializer};

use super::{DecodeError, EncodeError, Event, Payload};

/// Encodes the content of `event`'s variant as JSON.
pub fn encode_content<E: Event + Serialize>(event: &E) -> Result<Payload, EncodeError> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::new(&mut out);
    event
        .serialize(ContentSerializer(&mut ser))
        .map_err(|source| EncodeError::Serialize {
            type_name: event.event_type().as_str(),
            source,
        })?;
    Ok(Payload::from(out))
}

/// Decodes JSON `payload` as the content of the variant with serde index `variant`.
pub fn decode_content<E: for<'de> de::Deserialize<'de>>(
    type_name: &str,
    variant: u32,
    payload: &[u8],
) -> Result<E, DecodeError> {
    let malformed = |source| DecodeError::MalformedPayload {
        type_name: type_name.into(),
        position: None,
        source,
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    let value = E::deserialize(VariantDeserializer {
        variant,
        content: &mut de,
    })
    .map_err(malformed)?;
    de.end().map_err(malformed)?;
    Ok(value)
}

/// A serializer that accepts an enum variant and writes only its content to the inner
/// serializer.
struct ContentSerializer<S>(S);

fn not_an_enum<E: ser::Error>() -> E {
    E::custom("krescent events must be enums in serde's externally tagged representation")
}

impl<S: Serializer> Serializer for ContentSerializer<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Tuple<S::SerializeTuple>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = Impossible<S::Ok, S::Error>;
    type SerializeStructVariant = Struct<S::SerializeStruct>;

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        value.serialize(self.0)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0.serialize_tuple(len).map(Tuple)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0.serialize_struct(name, len).map(Struct)
    }

    fn serialize_bool(self, _: bool) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_i8(self, _: i8) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_i16(self, _: i16) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_i32(self, _: i32) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_i64(self, _: i64) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_u8(self, _: u8) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_u16(self, _: u16) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_u32(self, _: u32) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_u64(self, _: u64) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_f32(self, _: f32) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_f64(self, _: f64) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_char(self, _: char) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_str(self, _: &str) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Err(not_an_enum())
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        Err(not_an_enum())
    }
}

/// A tuple variant's fields, written as a plain tuple.
struct Tuple<T>(T);

impl<T: ser::SerializeTuple> ser::SerializeTupleVariant for Tuple<T> {
    type Ok = T::Ok;
    type Error = T::Error;
    fn serialize_field<V: ?Sized + Serialize>(&mut self, value: &V) -> Result<(), T::Error> {
        self.0.serialize_element(value)
    }
    fn end(self) -> Result<T::Ok, T::Error> {
        self.0.end()
    }
}

/// A struct variant's fields, written as a plain struct.
struct Struct<T>(T);

impl<T: ser::SerializeStruct> ser::SerializeStructVariant for Struct<T> {
    type Ok = T::Ok;
    type Error = T::Error;
    fn serialize_field<V: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &V,
    ) -> Result<(), T::Error> {
        self.0.serialize_field(key, value)
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), T::Error> {
        self.0.skip_field(key)
    }
    fn end(self) -> Result<T::Ok, T::Error> {
        self.0.end()
    }
}

/// A deserializer that presents `content` as the enum variant with serde index `variant`.
struct VariantDeserializer<D> {
    variant: u32,
    content: D,
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for VariantDeserializer<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        visitor.visit_enum(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de, D: de::Deserializer<'de>> EnumAccess<'de> for VariantDeserializer<D> {
    type Error = D::Error;
    type Variant = Content<D>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Content<D>), D::Error> {
        let index: de::value::U32Deserializer<D::Error> = self.variant.into_deserializer();
        let value = seed.deserialize(index)?;
        Ok((value, Content(self.content)))
    }
}

/// The stored content of the chosen variant.
struct Content<D>(D);

impl<'de, D: de::Deserializer<'de>> VariantAccess<'de> for Content<D> {
    type Error = D::Error;

    fn unit_variant(self) -> Result<(), D::Error> {
        <() as de::Deserialize>::deserialize(self.0)
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, D::Error> {
        seed.deserialize(self.0)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct("", fields, visitor)
    }
}
