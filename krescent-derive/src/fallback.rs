//! Stub implementations emitted beside a derive's errors. With them, the type still implements
//! the derived trait, so a mistake in an attribute is reported once, at the attribute, and not
//! again as "trait not implemented" wherever the type is used. Their bodies never run: the
//! crate does not compile.
//!
//! The impls hold no checks of their own: the trait's supertraits are required through a
//! higher-ranked `where` clause (as thiserror does), so a type that lacks one gets no extra
//! error here, and the type is named at the call site, so no error points into the stub.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{DeriveInput, Ident};

use crate::ast::{EventEnum, ProjectionStruct};
use crate::expand::event::inherent_impl;

/// `#[derive(Event)]`: the trait with the enum's catalog and type names, and the inherent
/// items other derives and users name (`Enum::ADDED`, the projection helpers).
pub(crate) fn event(
    input: &DeriveInput,
    parsed: Option<&EventEnum<'_>>,
    krate: &TokenStream,
) -> TokenStream {
    let p = quote!(#krate::__private);
    let (catalog, names, inherent) = match parsed {
        Some(parsed) => (
            parsed.catalog(),
            parsed.variants.iter().map(|v| v.type_name().0).collect(),
            inherent_impl(parsed, &p, true),
        ),
        None => (input.ident.to_string(), Vec::new(), TokenStream::new()),
    };
    let bounds = quote!(::core::marker::Send + ::core::marker::Sync + 'static);
    let items = quote! {
                const CATALOG: &'static str = #catalog;
                const REVISION: u32 = 0;
                const TYPES: &'static [#p::EventType] = &[#(#p::EventType::new(#names)),*];
                fn event_type(&self) -> #p::EventType {
                    ::core::unimplemented!()
                }
                fn tags(&self) -> #p::Tags {
                    ::core::unimplemented!()
                }
                fn encode(&self) -> ::core::result::Result<#p::Payload, #p::EncodeError> {
                    ::core::unimplemented!()
                }
                fn decode(
                    _: &str,
                    _: &[u8],
                ) -> ::core::result::Result<Self, #p::DecodeError> {
                    ::core::unimplemented!()
                }
    };
    stub(input, quote!(#p::Event), Some(bounds), inherent, items)
}

/// `#[derive(Projection)]`: the trait with the declared event type.
pub(crate) fn projection(
    input: &DeriveInput,
    parsed: Option<&ProjectionStruct<'_>>,
    krate: &TokenStream,
) -> TokenStream {
    let p = quote!(#krate::__private);
    let (events, placeholder) = events_type(parsed, &p);
    let handlers = handler_stubs(&p, &events, quote!(()));
    let items = quote! {
        type Event = #events;
        #handlers
    };
    let bounds = quote!(::core::marker::Send);
    stub(
        input,
        quote!(#p::Projection),
        Some(bounds),
        placeholder,
        items,
    )
}

/// `#[derive(ReadModel)]`: the trait with the declared event type and name. The model is not
/// registered.
pub(crate) fn read_model(
    input: &DeriveInput,
    parsed: Option<&ProjectionStruct<'_>>,
    krate: &TokenStream,
) -> TokenStream {
    let p = quote!(#krate::__private);
    let (events, placeholder) = events_type(parsed, &p);
    let name = parsed
        .and_then(|parsed| parsed.attrs.name.as_ref())
        .map_or_else(String::new, |(lit, _)| lit.value());
    let handlers = handler_stubs(&p, &events, quote!(#p::EventOutcome));
    let items = quote! {
        type Event = #events;
        const NAME: &'static str = #name;
        const VERSION: u32 = 0;
        #handlers
    };
    let bounds = quote!(#p::CheckpointSupport + ::core::marker::Send);
    stub(
        input,
        quote!(#p::ReadModel),
        Some(bounds),
        placeholder,
        items,
    )
}

/// `#[derive(CheckpointSupport)]`: the trait's two required methods.
pub(crate) fn checkpoint(input: &DeriveInput, krate: &TokenStream) -> TokenStream {
    let p = quote!(#krate::__private);
    let items = quote! {
                fn create_checkpoint(
                    &self,
                    _: &mut #p::CheckpointBucket,
                ) -> ::core::result::Result<(), #p::CheckpointError> {
                    ::core::unimplemented!()
                }
                fn restore_checkpoint(
                    &mut self,
                    _: &#p::CheckpointBucket,
                ) -> ::core::result::Result<(), #p::CheckpointError> {
                    ::core::unimplemented!()
                }
    };
    stub(
        input,
        quote!(#p::CheckpointSupport),
        None,
        TokenStream::new(),
        items,
    )
}

/// `impl <trait> for <input> { items }` inside `const _: () = { … };`, after `beside` (items
/// the stub needs next to it). With `bounds`, the supertraits are required through
/// [`where_self`]; without, the input's own `where` clause stands.
fn stub(
    input: &DeriveInput,
    trait_path: TokenStream,
    bounds: Option<TokenStream>,
    beside: TokenStream,
    items: TokenStream,
) -> TokenStream {
    let ident = call_site(&input.ident);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let where_clause = match bounds {
        Some(bounds) => where_self(input, bounds),
        None => quote!(#where_clause),
    };
    quote! {
        const _: () = {
            #beside

            #[automatically_derived]
            impl #impl_generics #trait_path for #ident #ty_generics #where_clause {
                #items
            }
        };
    }
}

/// The `event_query` and `when` of a projection's or read model's stub; `when` returns
/// `Result<outcome, HandlerError>`.
fn handler_stubs(p: &TokenStream, events: &TokenStream, outcome: TokenStream) -> TokenStream {
    quote! {
        fn event_query(&self) -> #p::EventQuery {
            ::core::unimplemented!()
        }
        fn when(
            &mut self,
            _: &#p::Recorded<#events>,
        ) -> ::core::result::Result<#outcome, #p::HandlerError> {
            ::core::unimplemented!()
        }
    }
}

/// The event type a projection's stub names: `events = …` if it was given, otherwise an
/// uninhabited placeholder implementing `Event`, declared beside the stub.
fn events_type(
    parsed: Option<&ProjectionStruct<'_>>,
    p: &TokenStream,
) -> (TokenStream, TokenStream) {
    if let Some((events, _)) = parsed.and_then(|parsed| parsed.attrs.events.as_ref()) {
        return (quote!(#events), TokenStream::new());
    }
    let placeholder = quote! {
        #[doc(hidden)]
        pub enum __KrescentNoEvents {}

        #[automatically_derived]
        impl #p::Event for __KrescentNoEvents {
            const CATALOG: &'static str = "";
            const REVISION: u32 = 0;
            const TYPES: &'static [#p::EventType] = &[];
            fn event_type(&self) -> #p::EventType {
                match *self {}
            }
            fn tags(&self) -> #p::Tags {
                match *self {}
            }
            fn encode(&self) -> ::core::result::Result<#p::Payload, #p::EncodeError> {
                match *self {}
            }
            fn decode(
                _: &str,
                _: &[u8],
            ) -> ::core::result::Result<Self, #p::DecodeError> {
                ::core::unimplemented!()
            }
        }
    };
    (quote!(__KrescentNoEvents), placeholder)
}

/// The input's name, spanned at the derive so that no error points into the stub.
fn call_site(ident: &Ident) -> Ident {
    let mut ident = ident.clone();
    ident.set_span(Span::call_site());
    ident
}

/// The input's `where` clause plus `for<'__krescent> Type: bounds`: the trait's supertraits,
/// required without being checked here (a higher-ranked bound is never trivially false).
fn where_self(input: &DeriveInput, bounds: TokenStream) -> TokenStream {
    let ident = call_site(&input.ident);
    let (_, ty_generics, where_clause) = input.generics.split_for_impl();
    let predicates = where_clause
        .map(|w| w.predicates.iter().collect::<Vec<_>>())
        .unwrap_or_default();
    quote! {
        where
            #(#predicates,)*
            for<'__krescent> #ident #ty_generics: #bounds
    }
}
