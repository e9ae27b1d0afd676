//! Checks of the parsed model. Every problem is reported, each on its own token.

use std::collections::BTreeMap;

use syn::Member;
use syn::spanned::Spanned;

use crate::ast::{EventEnum, Shape, Variant};
use crate::ctxt::Ctxt;
use crate::rules;

/// Serde container keys that change the enum's representation.
const SERDE_REPRESENTATIONS: &[&str] = &["tag", "content", "untagged"];
/// Serde variant keys that make a variant unusable as a stored event.
const SERDE_VARIANT_SKIPS: &[&str] = &[
    "skip",
    "skip_serializing",
    "skip_deserializing",
    "other",
    "untagged",
];

pub(crate) fn check_event(cx: &mut Ctxt, input: &EventEnum<'_>) {
    check_event_container(cx, input);
    let mut names: BTreeMap<String, &syn::Ident> = BTreeMap::new();
    for variant in &input.variants {
        check_variant_shape(cx, variant);
        let (name, span) = variant.type_name();
        if let Err(why) = rules::type_name(&name) {
            cx.push(syn::Error::new(
                span,
                format!("invalid event type name `{name}`: {why}"),
            ));
        }
        if let Some(first) = names.get(&name) {
            cx.push(syn::Error::new(
                span,
                format!("duplicate event type name `{name}`: variant `{first}` already uses it"),
            ));
        } else {
            names.insert(name, variant.ident);
        }
        check_variant_tags(cx, variant);
    }
}

/// The enum's own attributes, generics and variant count.
fn check_event_container(cx: &mut Ctxt, input: &EventEnum<'_>) {
    if !input.input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.input.generics,
            "`#[derive(Event)]` does not support generic enums: every event type needs one \
             stored name",
        );
    }
    if input.variants.is_empty() {
        cx.error_spanned_by(
            input.ident,
            "`#[derive(Event)]` needs at least one variant: each variant is an event type",
        );
    }
    if let Some((lit, _)) = &input.attrs.catalog {
        let catalog = lit.value();
        if let Err(why) = rules::catalog(&catalog) {
            cx.error_spanned_by(lit, format!("invalid catalog name `{catalog}`: {why}"));
        }
    }
    if let Some((lit, _)) = &input.attrs.revision {
        if let Err(e) = lit.base10_parse::<u32>() {
            cx.push(syn::Error::new(
                lit.span(),
                format!("krescent `revision` must be an integer from 0 to 4294967295: {e}"),
            ));
        }
    }
    for (key, span) in &input.serde_keys {
        if SERDE_REPRESENTATIONS.contains(&key.as_str()) {
            cx.push(syn::Error::new(
                *span,
                format!(
                    "`#[serde({key} ...)]` is not supported on an event enum: krescent stores \
                     the type name beside the payload and needs serde's default externally \
                     tagged representation"
                ),
            ));
        }
    }
}

/// Serde keys that skip a variant, and a shape an event variant cannot have.
fn check_variant_shape(cx: &mut Ctxt, variant: &Variant<'_>) {
    for (key, span) in &variant.serde_keys {
        if SERDE_VARIANT_SKIPS.contains(&key.as_str()) {
            cx.push(syn::Error::new(
                *span,
                format!(
                    "`#[serde({key})]` is not supported on an event variant: every variant \
                         is an event type that must be written and read"
                ),
            ));
        }
    }
    if variant.shape == Shape::Tuple {
        cx.error_spanned_by(
            &variant.original.fields,
            format!(
                "variant `{}` has several unnamed fields; an event variant is a unit, a \
                     newtype `{}(Data)` or has named fields",
                variant.ident, variant.ident
            ),
        );
    }
}

/// A variant's tags: where they may be declared, and their keys.
fn check_variant_tags(cx: &mut Ctxt, variant: &Variant<'_>) {
    if let Some(tags_span) = variant.attrs.tags_span {
        if variant.shape != Shape::Newtype {
            cx.push(syn::Error::new(
                tags_span,
                "`tags(...)` names fields of a newtype variant's content; on a variant with \
                     named fields put `#[krescent(tag)]` on the field instead",
            ));
        }
    }
    let mut keys: BTreeMap<String, ()> = BTreeMap::new();
    for field in &variant.fields {
        if let (Some((None, span)), Member::Unnamed(_)) = (&field.attrs.tag, &field.member) {
            cx.push(syn::Error::new(
                *span,
                "a tag on an unnamed field needs a key: `#[krescent(tag = \"key\")]`",
            ));
        }
    }
    for tag in variant.tags() {
        if let Err(why) = rules::tag_key(&tag.key) {
            cx.push(syn::Error::new(
                tag.key_span,
                format!("invalid tag key `{}`: {why}", tag.key),
            ));
        } else if keys.insert(tag.key.clone(), ()).is_some() {
            cx.push(syn::Error::new(
                tag.key_span,
                format!(
                    "duplicate tag key `{}` in variant `{}`",
                    tag.key, variant.ident
                ),
            ));
        }
    }
}

pub(crate) fn check_projection(
    cx: &mut Ctxt,
    input: &crate::ast::ProjectionStruct<'_>,
    derive: crate::attr::StructDerive,
) {
    if derive == crate::attr::StructDerive::ReadModel {
        check_model_attrs(cx, input);
    }
    check_variant_lists(cx, input, derive);
    if let Some(limit) = &input.attrs.init.limit {
        match limit.base10_parse::<u64>() {
            Ok(0) => cx.error_spanned_by(limit, "the init query's limit must be at least 1"),
            Ok(_) => {}
            Err(e) => cx.error_spanned_by(limit, format!("invalid init limit: {e}")),
        }
    }
    check_tag_filters(cx, input);
}

/// `#[derive(ReadModel)]`'s name and version.
fn check_model_attrs(cx: &mut Ctxt, input: &crate::ast::ProjectionStruct<'_>) {
    let attrs = &input.attrs;
    match &attrs.name {
            None => cx.error_spanned_by(
                &input.input.ident,
                "`#[derive(ReadModel)]` needs `#[krescent(name = \"model.name\")]`: checkpoints are stored under it",
            ),
            Some((lit, _)) => {
                let name = lit.value();
                if let Err(why) = rules::model_name(&name) {
                    cx.error_spanned_by(lit, format!("invalid model name `{name}`: {why}"));
                }
            }
        }
    if let Some((lit, _)) = &attrs.version {
        if let Err(e) = lit.base10_parse::<u32>() {
            cx.error_spanned_by(
                lit,
                format!("krescent `version` must be an integer from 0 to 4294967295: {e}"),
            );
        }
    }
}

/// The event type and the variants handled, listed once each, with one handler each.
fn check_variant_lists(
    cx: &mut Ctxt,
    input: &crate::ast::ProjectionStruct<'_>,
    derive: crate::attr::StructDerive,
) {
    let attrs = &input.attrs;
    let name = match derive {
        crate::attr::StructDerive::Projection => "Projection",
        crate::attr::StructDerive::ReadModel => "ReadModel",
    };
    if attrs.events.is_none() {
        cx.error_spanned_by(
            &input.input.ident,
            format!("`#[derive({name})]` needs `#[krescent(events = YourEventEnum)]`"),
        );
    }
    if attrs.handles.is_empty() && attrs.savepoints.is_empty() {
        let lists = match derive {
            crate::attr::StructDerive::Projection => "`handles(...)` or `savepoint(...)`",
            crate::attr::StructDerive::ReadModel => "`handles(...)`",
        };
        cx.error_spanned_by(
            &input.input.ident,
            format!("`#[derive({name})]` needs at least one variant in {lists}"),
        );
    }
    for (list, what) in [
        (&attrs.handles, "handles"),
        (&attrs.savepoints, "savepoint"),
    ] {
        let mut seen: BTreeMap<String, ()> = BTreeMap::new();
        for h in list {
            if seen.insert(h.variant.to_string(), ()).is_some() {
                cx.error_spanned_by(
                    &h.variant,
                    format!("variant `{}` is listed twice in `{what}(...)`", h.variant),
                );
            }
        }
    }
    for s in &attrs.savepoints {
        if let Some(h) = attrs.handles.iter().find(|h| h.variant == s.variant) {
            if let (Some(a), Some(b)) = (&h.handler, &s.handler) {
                if a != b {
                    cx.error_spanned_by(
                        b,
                        format!(
                            "variant `{}` has two handlers: `{a}` in `handles` and `{b}` in `savepoint`",
                            s.variant
                        ),
                    );
                }
            }
        }
    }
    let dispatched = input.dispatched();
    for m in &attrs.meta {
        if !dispatched.iter().any(|h| &h.variant == m) {
            cx.error_spanned_by(
                m,
                format!(
                    "`meta({m})` names a variant that is neither in `handles(...)` nor in `savepoint(...)`"
                ),
            );
        }
    }
}

/// The tag filters: valid keys, each once, bound to fields the struct has, and literal values
/// (`tags(kind = "fixed")`, the only tag values the derives see at compile time) that follow
/// the runtime's value rule.
fn check_tag_filters(cx: &mut Ctxt, input: &crate::ast::ProjectionStruct<'_>) {
    let mut keys: BTreeMap<String, ()> = BTreeMap::new();
    for tag in &input.attrs.tags {
        let key = tag.key.to_string();
        if let Err(why) = rules::tag_key(&key) {
            cx.error_spanned_by(&tag.key, format!("invalid tag key `{key}`: {why}"));
        }
        if keys.insert(key.clone(), ()).is_some() {
            cx.error_spanned_by(&tag.key, format!("duplicate tag key `{key}`"));
        }
        if let Some(value) = literal_value(&tag.value) {
            if let Err(why) = rules::tag_value(&value) {
                cx.error_spanned_by(&tag.value, format!("invalid value of tag `{key}`: {why}"));
            }
        }
        if let Some(field) = self_field(&tag.value) {
            let name = match field {
                Member::Named(ident) => ident.to_string(),
                Member::Unnamed(index) => index.index.to_string(),
            };
            if !input.field_names.contains(&name) {
                cx.error_spanned_by(
                    field,
                    format!(
                        "tag `{key}` is bound to `self.{name}`, but `{}` has no field `{name}`",
                        input.input.ident
                    ),
                );
            }
        }
    }
}

/// The text of a string or character literal, as its `Display` writes it into a tag.
fn literal_value(expr: &syn::Expr) -> Option<String> {
    let syn::Expr::Lit(lit) = expr else {
        return None;
    };
    match &lit.lit {
        syn::Lit::Str(s) => Some(s.value()),
        syn::Lit::Char(c) => Some(c.value().to_string()),
        _ => None,
    }
}

/// `self.field` → `field`.
pub(crate) fn self_field(expr: &syn::Expr) -> Option<&Member> {
    let syn::Expr::Field(field) = expr else {
        return None;
    };
    match &*field.base {
        syn::Expr::Path(p) if p.path.is_ident("self") => Some(&field.member),
        _ => None,
    }
}

pub(crate) fn check_checkpoint(cx: &mut Ctxt, input: &crate::ast::CheckpointStruct<'_>) {
    let mut keys: BTreeMap<String, ()> = BTreeMap::new();
    for field in &input.fields {
        if field.attrs.mode == crate::attr::FieldMode::Skip {
            if let Some(rename) = &field.attrs.rename {
                cx.error_spanned_by(
                    rename,
                    "a skipped field is not stored: `rename` has no effect",
                );
            }
            continue;
        }
        let key = field.key();
        let span = field
            .attrs
            .rename
            .as_ref()
            .map_or_else(|| field.ty.span(), |r| r.span());
        if let Err(why) = rules::checkpoint_key(&key) {
            cx.push(syn::Error::new(
                span,
                format!("invalid checkpoint key `{key}`: {why}"),
            ));
        } else if keys.insert(key.clone(), ()).is_some() {
            cx.push(syn::Error::new(
                span,
                format!("duplicate checkpoint key `{key}`"),
            ));
        }
    }
}
