//! Parsing of `#[krescent(...)]` attributes (and the few `#[serde(...)]` keys that matter).

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, LitInt, LitStr, Path};

use crate::ctxt::Ctxt;

/// Attribute names, so that messages and parsing agree.
pub(crate) mod sym {
    pub const KRESCENT: &str = "krescent";
    pub const CATALOG: &str = "catalog";
    pub const REVISION: &str = "revision";
    pub const CRATE: &str = "crate";
    pub const NAME: &str = "name";
    pub const TAG: &str = "tag";
    pub const TAGS: &str = "tags";
    pub const EVENTS: &str = "events";
    pub const HANDLES: &str = "handles";
    pub const SAVEPOINT: &str = "savepoint";
    pub const INIT: &str = "init";
    pub const META: &str = "meta";
    pub const FORWARD: &str = "forward";
    pub const BACKWARD: &str = "backward";
    pub const LIMIT: &str = "limit";
    pub const VERSION: &str = "version";
    pub const BINARY: &str = "binary";
    pub const SKIP: &str = "skip";
    pub const RENAME: &str = "rename";
    pub const NESTED: &str = "nested";
    pub const DELTA: &str = "delta";
    pub const WRITES: &str = "writes";
    /// Container keys of `#[derive(ReadModel)]`, which `#[derive(CheckpointSupport)]` on the
    /// same struct leaves to it.
    pub const READ_MODEL_KEYS: &[&str] = &[NAME, VERSION, EVENTS, HANDLES, TAGS, META, WRITES];
}

/// Which derive parses a struct's container attributes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StructDerive {
    Projection,
    ReadModel,
}

/// A value given once, remembering where, so a second one is reported as a duplicate.
pub(crate) struct Once<T> {
    name: &'static str,
    value: Option<(T, Span)>,
}

impl<T> Once<T> {
    pub(crate) fn new(name: &'static str) -> Self {
        Once { name, value: None }
    }

    pub(crate) fn set(&mut self, cx: &mut Ctxt, span: Span, value: T) {
        if self.value.is_some() {
            cx.push(syn::Error::new(
                span,
                format!("duplicate krescent attribute `{}`", self.name),
            ));
        } else {
            self.value = Some((value, span));
        }
    }

    pub(crate) fn get(self) -> Option<(T, Span)> {
        self.value
    }
}

/// Runs `f` on every key of every `#[krescent(...)]` attribute in `attrs`.
fn each_krescent_key(
    cx: &mut Ctxt,
    attrs: &[Attribute],
    mut f: impl FnMut(&mut Ctxt, &ParseNestedMeta<'_>, &str) -> syn::Result<()>,
) {
    for attr in attrs {
        if !attr.path().is_ident(sym::KRESCENT) {
            continue;
        }
        let mut errors = Vec::new();
        let result = attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_else(|| path_text(&meta.path));
            if let Err(e) = f(cx, &meta, &key) {
                errors.push(e);
                // Skip the rest of this key's tokens so the next key still parses.
                skip_value(&meta);
            }
            Ok(())
        });
        for e in errors {
            cx.push(e);
        }
        if let Err(e) = result {
            cx.push(e);
        }
    }
}

fn path_text(path: &Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// Consumes what is left of a key that failed, up to the next top-level `,`.
fn skip_value(meta: &ParseNestedMeta<'_>) {
    let _ = meta.input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    });
}

fn unknown(meta: &ParseNestedMeta<'_>, key: &str) -> syn::Error {
    meta.error(format!("unknown krescent attribute `{key}`"))
}

/// The path of `#[krescent(crate = "…")]`, found without checking the other keys: for the
/// fallback of an input that is not the kind of item its derive needs, whose attributes are
/// never parsed.
pub(crate) fn crate_override(attrs: &[Attribute]) -> Option<Path> {
    let mut ignored = Ctxt::default();
    let mut krate = None;
    each_krescent_key(&mut ignored, attrs, |_, meta, key| {
        if key == sym::CRATE {
            let lit: LitStr = meta.value()?.parse()?;
            krate = Some(lit.parse::<Path>()?);
        } else {
            skip_value(meta);
        }
        Ok(())
    });
    krate
}

/// `#[krescent(...)]` on the enum.
pub(crate) struct ContainerAttrs {
    pub catalog: Option<(LitStr, Span)>,
    pub revision: Option<(LitInt, Span)>,
    pub krate: Option<(Path, Span)>,
}

impl ContainerAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut catalog = Once::new(sym::CATALOG);
        let mut revision = Once::new(sym::REVISION);
        let mut krate = Once::new(sym::CRATE);
        each_krescent_key(cx, attrs, |cx, meta, key| {
            let span = meta.path.span();
            match key {
                sym::CATALOG => catalog.set(cx, span, meta.value()?.parse::<LitStr>()?),
                sym::REVISION => revision.set(cx, span, meta.value()?.parse::<LitInt>()?),
                sym::CRATE => {
                    let lit: LitStr = meta.value()?.parse()?;
                    krate.set(cx, span, lit.parse::<Path>()?);
                }
                _ => return Err(unknown(meta, key)),
            }
            Ok(())
        });
        ContainerAttrs {
            catalog: catalog.get(),
            revision: revision.get(),
            krate: krate.get(),
        }
    }
}

/// One entry of a variant's `tags(field, field = "key")`.
pub(crate) struct VariantTag {
    pub field: syn::Ident,
    pub key: Option<LitStr>,
}

/// `#[krescent(...)]` on a variant.
pub(crate) struct VariantAttrs {
    pub name: Option<(LitStr, Span)>,
    pub tags: Vec<VariantTag>,
    pub tags_span: Option<Span>,
}

impl VariantAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut name = Once::new(sym::NAME);
        let mut tags_attr = Once::new(sym::TAGS);
        each_krescent_key(cx, attrs, |cx, meta, key| {
            let span = meta.path.span();
            match key {
                sym::NAME => name.set(cx, span, meta.value()?.parse::<LitStr>()?),
                sym::TAGS => {
                    let mut tags = Vec::new();
                    meta.parse_nested_meta(|entry| {
                        let field = entry.path.require_ident()?.clone();
                        let key = if entry.input.peek(syn::Token![=]) {
                            Some(entry.value()?.parse::<LitStr>()?)
                        } else {
                            None
                        };
                        tags.push(VariantTag { field, key });
                        Ok(())
                    })?;
                    tags_attr.set(cx, span, tags);
                }
                _ => return Err(unknown(meta, key)),
            }
            Ok(())
        });
        let (tags, tags_span) = match tags_attr.get() {
            Some((tags, span)) => (tags, Some(span)),
            None => (Vec::new(), None),
        };
        VariantAttrs {
            name: name.get(),
            tags,
            tags_span,
        }
    }
}

/// `#[krescent(tag)]` / `#[krescent(tag = "key")]` on a field.
pub(crate) struct FieldAttrs {
    /// The tag, with its explicit key if one was given.
    pub tag: Option<(Option<LitStr>, Span)>,
}

impl FieldAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut tag = Once::new(sym::TAG);
        each_krescent_key(cx, attrs, |cx, meta, key| {
            let span = meta.path.span();
            match key {
                sym::TAG => {
                    let key = if meta.input.peek(syn::Token![=]) {
                        Some(meta.value()?.parse::<LitStr>()?)
                    } else {
                        None
                    };
                    tag.set(cx, span, key);
                }
                _ => return Err(unknown(meta, key)),
            }
            Ok(())
        });
        FieldAttrs { tag: tag.get() }
    }
}

/// The top-level keys of every `#[serde(...)]` attribute, with their spans. Only their names
/// matter to us (the representation and skipped variants), so values are not parsed.
pub(crate) fn serde_keys(attrs: &[Attribute]) -> Vec<(String, Span)> {
    let mut keys = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("serde") {
            continue;
        }
        let syn::Meta::List(list) = &attr.meta else {
            continue;
        };
        collect_top_level_idents(list.tokens.clone(), &mut keys);
    }
    keys
}

fn collect_top_level_idents(tokens: TokenStream, out: &mut Vec<(String, Span)>) {
    let mut at_item_start = true;
    for tt in tokens {
        match &tt {
            TokenTree::Ident(ident) if at_item_start => {
                out.push((ident.to_string(), ident.span()));
                at_item_start = false;
            }
            TokenTree::Punct(p) if p.as_char() == ',' => at_item_start = true,
            _ => at_item_start = false,
        }
    }
}

/// A variant named in `handles(...)` or `savepoint(...)`, with an optional handler name.
pub(crate) struct HandledVariant {
    pub variant: syn::Ident,
    pub handler: Option<syn::Ident>,
}

/// A tag filter of a projection: `key = self.field` or `key = CONSTANT_EXPR`.
pub(crate) struct TagFilter {
    pub key: syn::Ident,
    pub value: syn::Expr,
}

/// Overrides of the init query: `init(forward, limit = 3)`.
#[derive(Default)]
pub(crate) struct InitOverrides {
    /// `Some(true)`: forward; `Some(false)`: backward.
    pub forward: Option<bool>,
    pub limit: Option<LitInt>,
}

/// `#[krescent(...)]` on a struct deriving `Projection` or `ReadModel`.
pub(crate) struct ProjectionAttrs {
    /// `ReadModel` only: the model's name.
    pub name: Option<(LitStr, Span)>,
    /// `ReadModel` only: the model's version.
    pub version: Option<(LitInt, Span)>,
    pub events: Option<(syn::Path, Span)>,
    pub handles: Vec<HandledVariant>,
    pub savepoints: Vec<HandledVariant>,
    pub tags: Vec<TagFilter>,
    pub init: InitOverrides,
    pub meta: Vec<syn::Ident>,
    /// `ReadModel` only: the field holding the model's pending projection writes.
    pub writes: Option<(syn::Ident, Span)>,
    pub krate: Option<(Path, Span)>,
}

fn parse_variant_list(meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<HandledVariant>> {
    let mut out = Vec::new();
    meta.parse_nested_meta(|entry| {
        let variant = entry.path.require_ident()?.clone();
        let handler = if entry.input.peek(syn::Token![=]) {
            Some(entry.value()?.parse::<syn::Ident>()?)
        } else {
            None
        };
        out.push(HandledVariant { variant, handler });
        Ok(())
    })?;
    Ok(out)
}

/// `init(forward | backward, limit = N)`.
fn parse_init(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<InitOverrides> {
    let mut o = InitOverrides::default();
    let mut inner_errors = Vec::new();
    meta.parse_nested_meta(|entry| {
        let key = entry.path.get_ident().map(ToString::to_string).unwrap_or_default();
        match key.as_str() {
            sym::FORWARD | sym::BACKWARD if o.forward.is_some() => inner_errors
                .push(entry.error("duplicate krescent attribute `init` direction")),
            sym::FORWARD => o.forward = Some(true),
            sym::BACKWARD => o.forward = Some(false),
            sym::LIMIT if o.limit.is_some() => {
                inner_errors.push(entry.error("duplicate krescent attribute `limit`"));
                skip_value(&entry);
            }
            sym::LIMIT => o.limit = Some(entry.value()?.parse::<LitInt>()?),
            _ => {
                inner_errors.push(entry.error(format!(
                    "unknown krescent attribute `init({key})`: expected `forward`, `backward` or `limit = N`"
                )));
                skip_value(&entry);
            }
        }
        Ok(())
    })?;
    for e in inner_errors {
        cx.push(e);
    }
    Ok(o)
}

/// `tags(key = value, …)`.
fn parse_tag_filters(meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<TagFilter>> {
    let mut list = Vec::new();
    meta.parse_nested_meta(|entry| {
        let key = entry.path.require_ident()?.clone();
        let value = entry.value()?.parse::<syn::Expr>()?;
        list.push(TagFilter { key, value });
        Ok(())
    })?;
    Ok(list)
}

impl ProjectionAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute], derive: StructDerive) -> Self {
        let model = derive == StructDerive::ReadModel;
        let mut name = Once::new(sym::NAME);
        let mut version = Once::new(sym::VERSION);
        let mut events = Once::new(sym::EVENTS);
        let mut handles = Once::new(sym::HANDLES);
        let mut savepoints = Once::new(sym::SAVEPOINT);
        let mut tags = Once::new(sym::TAGS);
        let mut init = Once::new(sym::INIT);
        let mut meta_list = Once::new(sym::META);
        let mut writes = Once::new(sym::WRITES);
        let mut krate = Once::new(sym::CRATE);
        each_krescent_key(cx, attrs, |cx, meta, key| {
            let span = meta.path.span();
            match key {
                sym::WRITES if model => writes.set(cx, span, meta.value()?.parse::<syn::Ident>()?),
                sym::NAME if model => name.set(cx, span, meta.value()?.parse::<LitStr>()?),
                sym::VERSION if model => version.set(cx, span, meta.value()?.parse::<LitInt>()?),
                sym::EVENTS => events.set(cx, span, meta.value()?.parse::<syn::Path>()?),
                sym::HANDLES => handles.set(cx, span, parse_variant_list(meta)?),
                sym::SAVEPOINT if !model => savepoints.set(cx, span, parse_variant_list(meta)?),
                sym::TAGS => tags.set(cx, span, parse_tag_filters(meta)?),
                sym::INIT if !model => {
                    let overrides = parse_init(cx, meta)?;
                    init.set(cx, span, overrides);
                }
                sym::META => {
                    let mut list = Vec::new();
                    meta.parse_nested_meta(|entry| {
                        list.push(entry.path.require_ident()?.clone());
                        Ok(())
                    })?;
                    meta_list.set(cx, span, list);
                }
                sym::CRATE => {
                    let lit: LitStr = meta.value()?.parse()?;
                    krate.set(cx, span, lit.parse::<Path>()?);
                }
                _ => return Err(unknown(meta, key)),
            }
            Ok(())
        });
        ProjectionAttrs {
            name: name.get(),
            version: version.get(),
            events: events.get(),
            handles: handles.get().map(|(v, _)| v).unwrap_or_default(),
            savepoints: savepoints.get().map(|(v, _)| v).unwrap_or_default(),
            tags: tags.get().map(|(v, _)| v).unwrap_or_default(),
            init: init.get().map(|(v, _)| v).unwrap_or_default(),
            meta: meta_list.get().map(|(v, _)| v).unwrap_or_default(),
            writes: writes.get(),
            krate: krate.get(),
        }
    }
}

/// `#[krescent(...)]` on a struct deriving `CheckpointSupport` (its container keys).
pub(crate) struct CheckpointAttrs {
    pub krate: Option<(Path, Span)>,
}

impl CheckpointAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut krate = Once::new(sym::CRATE);
        each_krescent_key(cx, attrs, |cx, meta, key| {
            let span = meta.path.span();
            match key {
                sym::CRATE => {
                    let lit: LitStr = meta.value()?.parse()?;
                    krate.set(cx, span, lit.parse::<Path>()?);
                }
                // Keys of `#[derive(ReadModel)]` on the same struct: its business.
                k if sym::READ_MODEL_KEYS.contains(&k) => skip_value(meta),
                _ => return Err(unknown(meta, key)),
            }
            Ok(())
        });
        CheckpointAttrs { krate: krate.get() }
    }
}

/// How `#[derive(CheckpointSupport)]` stores a field.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldMode {
    /// By its type: primitives as typed values, other types as JSON.
    Auto,
    /// `#[krescent(binary)]`: bytes through the compact codec.
    Binary,
    /// `#[krescent(nested)]`: a nested bucket of its own `CheckpointSupport`.
    Nested,
    /// `#[krescent(delta)]`: through its `DeltaState`, whole or as a delta.
    Delta,
    /// `#[krescent(skip)]`: not stored, reset to `Default` on restore.
    Skip,
}

/// `#[krescent(...)]` on a field of a struct deriving `CheckpointSupport`.
pub(crate) struct CheckpointFieldAttrs {
    pub mode: FieldMode,
    pub rename: Option<LitStr>,
}

impl CheckpointFieldAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut mode = Once::new("binary`, `nested`, `delta` or `skip");
        let mut rename = Once::new(sym::RENAME);
        each_krescent_key(cx, attrs, |cx, meta, key| {
            let span = meta.path.span();
            match key {
                sym::BINARY => mode.set(cx, span, FieldMode::Binary),
                sym::NESTED => mode.set(cx, span, FieldMode::Nested),
                sym::DELTA => mode.set(cx, span, FieldMode::Delta),
                sym::SKIP => mode.set(cx, span, FieldMode::Skip),
                sym::RENAME => rename.set(cx, span, meta.value()?.parse::<LitStr>()?),
                _ => return Err(unknown(meta, key)),
            }
            Ok(())
        });
        CheckpointFieldAttrs {
            mode: mode.get().map_or(FieldMode::Auto, |(m, _)| m),
            rename: rename.get().map(|(r, _)| r),
        }
    }
}
