//! The parsed model of a derive input: what the attributes say, before any check.

use proc_macro2::Span;
use syn::{DeriveInput, Ident, Member};

use crate::attr::{self, ContainerAttrs, FieldAttrs, VariantAttrs, VariantTag};
use crate::ctxt::Ctxt;

/// An enum deriving `Event`.
pub(crate) struct EventEnum<'a> {
    pub input: &'a DeriveInput,
    pub ident: &'a Ident,
    pub attrs: ContainerAttrs,
    pub serde_keys: Vec<(String, Span)>,
    pub variants: Vec<Variant<'a>>,
}

/// How a variant holds its data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Unit,
    /// One unnamed field: `Added(StockAdded)`.
    Newtype,
    /// Named fields: `Added { product, quantity }`.
    Struct,
    /// Several unnamed fields: not supported.
    Tuple,
}

pub(crate) struct Variant<'a> {
    pub original: &'a syn::Variant,
    pub ident: &'a Ident,
    pub attrs: VariantAttrs,
    pub serde_keys: Vec<(String, Span)>,
    pub shape: Shape,
    pub fields: Vec<Field<'a>>,
}

pub(crate) struct Field<'a> {
    pub member: Member,
    pub ty: &'a syn::Type,
    pub attrs: FieldAttrs,
}

/// A tag the generated code computes: where its value comes from, and its key.
pub(crate) struct TagSpec {
    pub key: String,
    pub key_span: Span,
    /// The value: a field of the variant, or a field of a newtype variant's content.
    pub source: TagSource,
}

pub(crate) enum TagSource {
    Field(Member),
    InnerField(Ident),
}

/// The input is not the kind of item the derive needs: where, and what it is instead.
pub(crate) struct WrongShape {
    pub span: Span,
    pub what: &'static str,
}

impl<'a> EventEnum<'a> {
    pub(crate) fn from_syn(cx: &mut Ctxt, input: &'a DeriveInput) -> Result<Self, WrongShape> {
        let data = match &input.data {
            syn::Data::Enum(data) => data,
            syn::Data::Struct(s) => {
                return Err(WrongShape {
                    span: s.struct_token.span,
                    what: "a struct",
                });
            }
            syn::Data::Union(u) => {
                return Err(WrongShape {
                    span: u.union_token.span,
                    what: "a union",
                });
            }
        };
        let attrs = ContainerAttrs::from_attrs(cx, &input.attrs);
        let variants = data
            .variants
            .iter()
            .map(|v| Variant::from_syn(cx, v))
            .collect();
        Ok(EventEnum {
            input,
            ident: &input.ident,
            attrs,
            serde_keys: attr::serde_keys(&input.attrs),
            variants,
        })
    }

    /// The catalog name: the attribute, or the enum's name.
    pub(crate) fn catalog(&self) -> String {
        self.attrs
            .catalog
            .as_ref()
            .map_or_else(|| self.ident.to_string(), |(lit, _)| lit.value())
    }
}

impl<'a> Variant<'a> {
    fn from_syn(cx: &mut Ctxt, v: &'a syn::Variant) -> Self {
        let shape = match &v.fields {
            syn::Fields::Unit => Shape::Unit,
            syn::Fields::Named(_) => Shape::Struct,
            syn::Fields::Unnamed(f) if f.unnamed.len() == 1 => Shape::Newtype,
            syn::Fields::Unnamed(_) => Shape::Tuple,
        };
        let attrs = VariantAttrs::from_attrs(cx, &v.attrs);
        let fields = v
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| Field {
                member: match &f.ident {
                    Some(ident) => Member::Named(ident.clone()),
                    None => Member::Unnamed(i.into()),
                },
                ty: &f.ty,
                attrs: FieldAttrs::from_attrs(cx, &f.attrs),
            })
            .collect();
        Variant {
            original: v,
            ident: &v.ident,
            attrs,
            serde_keys: attr::serde_keys(&v.attrs),
            shape,
            fields,
        }
    }

    /// The stored type name: the attribute, or the variant's name as written.
    pub(crate) fn type_name(&self) -> (String, Span) {
        match &self.attrs.name {
            Some((lit, _)) => (lit.value(), lit.span()),
            None => (self.ident.to_string(), self.ident.span()),
        }
    }

    /// The tags of this variant, from field attributes and the variant's `tags(...)`.
    pub(crate) fn tags(&self) -> Vec<TagSpec> {
        let mut tags = Vec::new();
        for field in &self.fields {
            let Some((key, span)) = &field.attrs.tag else {
                continue;
            };
            let (key, key_span) = match (key, &field.member) {
                (Some(lit), _) => (lit.value(), lit.span()),
                (None, Member::Named(ident)) => (ident.to_string(), *span),
                // An unnamed field needs a key; `valid` reports it.
                (None, Member::Unnamed(_)) => continue,
            };
            tags.push(TagSpec {
                key,
                key_span,
                source: TagSource::Field(field.member.clone()),
            });
        }
        for VariantTag { field, key } in &self.attrs.tags {
            let (key, key_span) = match key {
                Some(lit) => (lit.value(), lit.span()),
                None => (field.to_string(), field.span()),
            };
            tags.push(TagSpec {
                key,
                key_span,
                source: TagSource::InnerField(field.clone()),
            });
        }
        tags
    }
}

/// `StockAdded` → `stock_added`, the default handler name's stem.
pub(crate) fn snake(ident: &Ident) -> String {
    screaming_snake(ident).to_lowercase()
}

/// `StockAdded` → `STOCK_ADDED`, the name of the generated type-name constant.
pub(crate) fn screaming_snake(ident: &Ident) -> String {
    let name = ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// A struct deriving `Projection`.
pub(crate) struct ProjectionStruct<'a> {
    pub input: &'a DeriveInput,
    pub attrs: crate::attr::ProjectionAttrs,
    /// Named fields of the struct (for `self.field` tag values).
    pub field_names: Vec<String>,
}

/// The fields of a struct input; an enum or a union is the wrong shape.
fn struct_fields(input: &DeriveInput) -> Result<&syn::Fields, WrongShape> {
    match &input.data {
        syn::Data::Struct(s) => Ok(&s.fields),
        syn::Data::Enum(e) => Err(WrongShape {
            span: e.enum_token.span,
            what: "an enum",
        }),
        syn::Data::Union(u) => Err(WrongShape {
            span: u.union_token.span,
            what: "a union",
        }),
    }
}

impl<'a> ProjectionStruct<'a> {
    pub(crate) fn from_syn(
        cx: &mut Ctxt,
        input: &'a DeriveInput,
        derive: crate::attr::StructDerive,
    ) -> Result<Self, WrongShape> {
        let fields = struct_fields(input)?;
        Ok(ProjectionStruct {
            input,
            attrs: crate::attr::ProjectionAttrs::from_attrs(cx, &input.attrs, derive),
            field_names: fields
                .iter()
                .filter_map(|f| f.ident.as_ref().map(ToString::to_string))
                .collect(),
        })
    }

    /// Every variant that needs a handler: handled ones, then savepoints not also handled.
    pub(crate) fn dispatched(&self) -> Vec<&crate::attr::HandledVariant> {
        let mut out: Vec<&crate::attr::HandledVariant> = self.attrs.handles.iter().collect();
        for s in &self.attrs.savepoints {
            if !out.iter().any(|h| h.variant == s.variant) {
                out.push(s);
            }
        }
        out
    }
}

/// A struct deriving `CheckpointSupport`.
pub(crate) struct CheckpointStruct<'a> {
    pub input: &'a DeriveInput,
    pub attrs: crate::attr::CheckpointAttrs,
    pub fields: Vec<CheckpointField<'a>>,
}

pub(crate) struct CheckpointField<'a> {
    pub member: Member,
    pub ty: &'a syn::Type,
    pub attrs: crate::attr::CheckpointFieldAttrs,
}

impl CheckpointField<'_> {
    /// The bucket key: the rename, the field's name, or its index.
    pub(crate) fn key(&self) -> String {
        match (&self.attrs.rename, &self.member) {
            (Some(lit), _) => lit.value(),
            (None, Member::Named(ident)) => {
                let name = ident.to_string();
                name.strip_prefix("r#").map(str::to_owned).unwrap_or(name)
            }
            (None, Member::Unnamed(index)) => index.index.to_string(),
        }
    }
}

impl<'a> CheckpointStruct<'a> {
    pub(crate) fn from_syn(cx: &mut Ctxt, input: &'a DeriveInput) -> Result<Self, WrongShape> {
        let fields = struct_fields(input)?;
        Ok(CheckpointStruct {
            input,
            attrs: crate::attr::CheckpointAttrs::from_attrs(cx, &input.attrs),
            fields: fields
                .iter()
                .enumerate()
                .map(|(i, f)| CheckpointField {
                    member: match &f.ident {
                        Some(ident) => Member::Named(ident.clone()),
                        None => Member::Unnamed(i.into()),
                    },
                    ty: &f.ty,
                    attrs: crate::attr::CheckpointFieldAttrs::from_attrs(cx, &f.attrs),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screaming_snake_splits_words() {
        let s = |n: &str| screaming_snake(&Ident::new(n, Span::call_site()));
        assert_eq!(s("Added"), "ADDED");
        assert_eq!(s("StockAdded"), "STOCK_ADDED");
        assert_eq!(s("HTTPRequest"), "HTTP_REQUEST");
        assert_eq!(s("Item2Sold"), "ITEM2_SOLD");
        assert_eq!(
            snake(&Ident::new("StockAdded", Span::call_site())),
            "stock_added"
        );
    }
}
