//! `#[derive(Event)]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::Member;

use crate::ast::{EventEnum, Shape, TagSource, Variant, screaming_snake};

pub(crate) fn expand(input: &EventEnum<'_>, krate: &TokenStream) -> TokenStream {
    let ident = input.ident;
    let p = quote!(#krate::__private);
    let catalog = input.catalog();
    let revision: u32 = input
        .attrs
        .revision
        .as_ref()
        .and_then(|(lit, _)| lit.base10_parse().ok())
        .unwrap_or(1);

    let names: Vec<String> = input.variants.iter().map(|v| v.type_name().0).collect();
    let indices = (0..input.variants.len()).map(|i| i as u32);
    let patterns: Vec<TokenStream> = input.variants.iter().map(pattern_any).collect();
    let type_indices = 0..input.variants.len();

    let tags_builder = tags_builder(input, &p);
    let inherent = inherent_impl(input, &p, false);
    let registration = registration(input, &p, &catalog, revision);

    // Spanned on the enum's name, so a missing serde implementation is reported there.
    let encode = quote_spanned!(ident.span()=> #p::encode_content::<Self>(self));
    let decode =
        quote_spanned!(ident.span()=> #p::decode_content::<Self>(type_name, variant, payload));

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::Event for #ident {
                const CATALOG: &'static str = #catalog;
                const REVISION: u32 = #revision;
                const TYPES: &'static [#p::EventType] = &[#(#p::EventType::new(#names)),*];

                #[inline]
                fn event_type(&self) -> #p::EventType {
                    match self {
                        #(#patterns => <Self as #p::Event>::TYPES[#type_indices],)*
                    }
                }

                fn tags(&self) -> #p::Tags {
                    self.__krescent_tags_builder().build()
                }

                fn try_tags(&self) -> ::core::result::Result<#p::Tags, #p::TagError> {
                    self.__krescent_tags_builder().try_build()
                }

                fn encode(&self) -> ::core::result::Result<#p::Payload, #p::EncodeError> {
                    #encode
                }

                fn decode(
                    type_name: &str,
                    payload: &[u8],
                ) -> ::core::result::Result<Self, #p::DecodeError> {
                    let variant: u32 = match type_name {
                        #(#names => #indices,)*
                        _ => return ::core::result::Result::Err(#p::DecodeError::unknown(type_name)),
                    };
                    #decode
                }
            }

            #tags_builder

            #inherent

            #registration
        };
    }
}

/// `__krescent_tags_builder`: the builder of a value's tags, which checks their values at run
/// time (`tags` and `try_tags` both use it).
fn tags_builder(input: &EventEnum<'_>, p: &TokenStream) -> TokenStream {
    let ident = input.ident;
    let tag_arms = input.variants.iter().map(tag_arm);
    let tag_capacity = input.variants.iter().map(|v| v.tags().len()).max();
    let tag_capacity = tag_capacity.unwrap_or(0);
    quote! {
        #[automatically_derived]
        impl #ident {
            /// The builder of this value's tags, which checks their values at run time.
            #[inline]
            fn __krescent_tags_builder(&self) -> #p::TagsBuilder {
                let mut tags = #p::TagsBuilder::with_capacity(#tag_capacity);
                match self {
                    #(#tag_arms)*
                }
                tags
            }
        }
    }
}

/// The enum's entry in the event registry.
fn registration(
    input: &EventEnum<'_>,
    p: &TokenStream,
    catalog: &str,
    revision: u32,
) -> TokenStream {
    let ident = input.ident;
    quote! {
        #p::inventory::submit! {
            #p::EventRegistration {
                catalog: #catalog,
                revision: #revision,
                rust_type: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)),
                types: <#ident as #p::Event>::TYPES,
            }
        }
    }
}

/// The enum's inherent items: a constant per variant holding its stored type name, and the
/// hidden items `#[derive(Projection)]` builds on. `fallback` marks the stub emitted beside
/// errors (`__KRESCENT_FALLBACK`), which silences the projection's tag-key checks.
pub(crate) fn inherent_impl(input: &EventEnum<'_>, p: &TokenStream, fallback: bool) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = input.input.generics.split_for_impl();
    let consts = input.variants.iter().map(|v| {
        let name = v.type_name().0;
        let const_ident = format_ident!("{}", screaming_snake(v.ident), span = v.ident.span());
        let doc = format!(
            "The stored type name of [`{ident}::{}`]: `{name}`.",
            v.ident
        );
        quote! {
            #[doc = #doc]
            #[allow(dead_code)]
            pub const #const_ident: #p::EventType = #p::EventType::new(#name);
        }
    });
    let helpers = input.variants.iter().map(|v| variant_helpers(v, p));
    quote! {
        #[automatically_derived]
        impl #impl_generics #ident #ty_generics #where_clause {
            #(#consts)*
            #(#helpers)*

            #[doc(hidden)]
            #[allow(dead_code)]
            pub const __KRESCENT_FALLBACK: bool = #fallback;
        }
    }
}

/// Hidden items `#[derive(Projection)]` builds on, per variant: the tag keys the variant
/// carries, and `__krescent_apply_<Variant>` / `__krescent_apply_meta_<Variant>`, which call a
/// handler with the variant's fields (a newtype's content, or the named fields in order).
fn variant_helpers(v: &Variant<'_>, p: &TokenStream) -> TokenStream {
    let ident = v.ident;
    let keys: Vec<String> = v.tags().into_iter().map(|t| t.key).collect();
    let keys_ident = format_ident!("__KRESCENT_TAG_KEYS_{}", ident);
    let apply = format_ident!("__krescent_apply_{}", ident);
    let apply_meta = format_ident!("__krescent_apply_meta_{}", ident);
    let tys: Vec<&syn::Type> = v.fields.iter().map(|f| f.ty).collect();
    let bindings: Vec<syn::Ident> = (0..v.fields.len())
        .map(|i| format_ident!("__f{}", i))
        .collect();
    let pattern = match v.shape {
        Shape::Unit => quote!(Self::#ident),
        Shape::Struct => {
            let members = v.fields.iter().map(|f| &f.member);
            quote!(Self::#ident { #(#members: #bindings),* })
        }
        Shape::Newtype | Shape::Tuple => quote!(Self::#ident(#(#bindings),*)),
    };
    let args: Vec<syn::Ident> = (0..v.fields.len())
        .map(|i| format_ident!("__A{}", i))
        .collect();
    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, dead_code)]
        pub const #keys_ident: &'static [&'static str] = &[#(#keys),*];

        #[doc(hidden)]
        #[allow(non_snake_case, dead_code, unreachable_patterns)]
        #[inline(always)]
        pub fn #apply<'__s, __P: ?::core::marker::Sized, __R #(, #args)*>(
            &'__s self,
            projection: &mut __P,
            handler: impl ::core::ops::FnOnce(&mut __P #(, #args)*) -> __R,
        ) -> ::core::option::Option<__R>
        where
            #(#args: #p::FieldArg<'__s, #tys>,)*
        {
            match self {
                #pattern => ::core::option::Option::Some(handler(
                    projection #(, #p::FieldArg::from_field(#bindings))*
                )),
                _ => ::core::option::Option::None,
            }
        }

        #[doc(hidden)]
        #[allow(non_snake_case, dead_code, unreachable_patterns)]
        #[inline(always)]
        pub fn #apply_meta<'__s, __P: ?::core::marker::Sized, __M, __R #(, #args)*>(
            &'__s self,
            projection: &mut __P,
            meta: __M,
            handler: impl ::core::ops::FnOnce(&mut __P #(, #args)*, __M) -> __R,
        ) -> ::core::option::Option<__R>
        where
            #(#args: #p::FieldArg<'__s, #tys>,)*
        {
            match self {
                #pattern => ::core::option::Option::Some(handler(
                    projection #(, #p::FieldArg::from_field(#bindings))*, meta
                )),
                _ => ::core::option::Option::None,
            }
        }
    }
}

/// `Self::Variant { .. }`, which matches every shape.
fn pattern_any(v: &Variant<'_>) -> TokenStream {
    let ident = v.ident;
    quote!(Self::#ident { .. })
}

/// The match arm that pushes a variant's tags.
fn tag_arm(v: &Variant<'_>) -> TokenStream {
    let ident = v.ident;
    let tags = v.tags();
    if tags.is_empty() {
        return quote!(Self::#ident { .. } => {});
    }
    let inner = format_ident!("__inner");
    let mut bindings = Vec::new();
    let mut pushes = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let key = &tag.key;
        match &tag.source {
            TagSource::Field(member) if v.shape == Shape::Newtype => {
                let span = member_span(member);
                pushes.push(quote_spanned!(span=> tags.push(#key, #inner);));
            }
            TagSource::Field(member) => {
                let span = member_span(member);
                let binding = format_ident!("__tag{}", i, span = span);
                bindings.push(quote!(#member: #binding));
                pushes.push(quote_spanned!(span=> tags.push(#key, #binding);));
            }
            TagSource::InnerField(field) => {
                pushes.push(quote_spanned!(field.span()=> tags.push(#key, &#inner.#field);));
            }
        }
    }
    if v.shape == Shape::Newtype {
        quote!(Self::#ident(#inner) => { #(#pushes)* })
    } else {
        quote!(Self::#ident { #(#bindings,)* .. } => { #(#pushes)* })
    }
}

fn member_span(member: &Member) -> Span {
    match member {
        Member::Named(ident) => ident.span(),
        Member::Unnamed(index) => index.span,
    }
}
