//! `#[derive(Projection)]` and `#[derive(ReadModel)]`: queries from attributes, and the
//! dispatch of each event to one handler per variant.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{ProjectionStruct, screaming_snake, snake};
use crate::attr::{HandledVariant, StructDerive};

/// The handler arms, the event query's item, and the tag-key checks shared by both derives.
struct Parts {
    arms: Vec<TokenStream>,
    event_item: TokenStream,
    key_checks: Vec<TokenStream>,
}

pub(crate) fn expand_model(input: &ProjectionStruct<'_>, krate: &TokenStream) -> TokenStream {
    let p = quote!(#krate::__private);
    let ident = &input.input.ident;
    let (impl_generics, ty_generics, where_clause) = input.input.generics.split_for_impl();
    let (Some((events, _)), Some((name, _))) = (&input.attrs.events, &input.attrs.name) else {
        return TokenStream::new();
    };
    let version: u32 = input
        .attrs
        .version
        .as_ref()
        .and_then(|(lit, _)| lit.base10_parse().ok())
        .unwrap_or(1);
    let Parts {
        arms,
        event_item,
        key_checks,
    } = parts(input, events, &p, StructDerive::ReadModel);
    let pending_writes = input.attrs.writes.as_ref().map(|(field, span)| {
        quote_spanned! {*span=>
            fn pending_writes(&mut self) -> ::core::option::Option<&mut dyn #p::PendingWrites> {
                ::core::option::Option::Some(&mut self.#field)
            }
        }
    });
    let register = if input.input.generics.params.is_empty() {
        quote! {
            #p::inventory::submit! {
                #p::ModelRegistration {
                    name: #name,
                    version: #version,
                    catalog: <#events as #p::Event>::CATALOG,
                    rust_type: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)),
                }
            }
        }
    } else {
        TokenStream::new()
    };
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::ReadModel for #ident #ty_generics #where_clause {
                type Event = #events;
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;

                #[allow(unreachable_patterns)]
                fn when(
                    &mut self,
                    event: &#p::Recorded<#events>,
                ) -> ::core::result::Result<#p::EventOutcome, #p::HandlerError> {
                    match &event.data {
                        #(#arms)*
                        _ => ::core::result::Result::Ok(#p::EventOutcome::Skipped),
                    }
                }

                fn event_query(&self) -> #p::EventQuery {
                    #p::EventQuery::item(#event_item)
                }

                #pending_writes
            }

            #register

            #(#key_checks)*
        };
    }
}

fn parts(
    input: &ProjectionStruct<'_>,
    events: &syn::Path,
    p: &TokenStream,
    derive: StructDerive,
) -> Parts {
    let attrs = &input.attrs;
    let type_const = |v: &syn::Ident| {
        let c = format_ident!("{}", screaming_snake(v), span = v.span());
        quote_spanned!(v.span()=> #events::#c)
    };
    let tags: Vec<TokenStream> = attrs
        .tags
        .iter()
        .map(|t| {
            let key = t.key.to_string();
            let value = &t.value;
            quote_spanned!(t.value.span()=> #p::static_key_tag(#key, &(#value)))
        })
        .collect();
    let event_variants: Vec<TokenStream> = attrs
        .handles
        .iter()
        .filter(|h| !attrs.savepoints.iter().any(|s| s.variant == h.variant))
        .map(|h| type_const(&h.variant))
        .collect();
    let event_item = quote! {
        #p::QueryItem::types([#(#event_variants),*]).and_tags([#(#tags),*])
    };
    let arms = input
        .dispatched()
        .into_iter()
        .map(|h| dispatch_arm(h, events, attrs, p, derive))
        .collect();
    let key_checks = attrs
        .tags
        .iter()
        .map(|t| {
            let key = t.key.to_string();
            let lists = input.dispatched().into_iter().map(|h| {
                let c = format_ident!("__KRESCENT_TAG_KEYS_{}", h.variant);
                quote!(#events::#c)
            });
            // An enum whose own derive failed has errors already; its tags may be incomplete.
            let message = format!(
                "tag key `{key}` is not carried by any variant this projection handles, so its queries could never match"
            );
            quote_spanned! {t.key.span()=>
                const _: () = ::core::assert!(
                    #events::__KRESCENT_FALLBACK || #p::has_tag_key(&[#(#lists),*], #key),
                    #message
                );
            }
        })
        .collect();
    Parts {
        arms,
        event_item,
        key_checks,
    }
}

pub(crate) fn expand(input: &ProjectionStruct<'_>, krate: &TokenStream) -> TokenStream {
    let p = quote!(#krate::__private);
    let ident = &input.input.ident;
    let (impl_generics, ty_generics, where_clause) = input.input.generics.split_for_impl();
    let Some((events, _)) = &input.attrs.events else {
        return TokenStream::new();
    };
    let attrs = &input.attrs;
    let Parts {
        arms,
        event_item,
        key_checks,
    } = parts(input, events, &p, StructDerive::Projection);

    let init_query = if attrs.savepoints.is_empty() {
        quote!(::core::option::Option::None)
    } else {
        let types = attrs.savepoints.iter().map(|s| {
            let c = format_ident!("{}", screaming_snake(&s.variant), span = s.variant.span());
            quote_spanned!(s.variant.span()=> #events::#c)
        });
        let tags = attrs.tags.iter().map(|t| {
            let key = t.key.to_string();
            let value = &t.value;
            quote_spanned!(t.value.span()=> #p::static_key_tag(#key, &(#value)))
        });
        let direction = match attrs.init.forward {
            Some(true) => quote!(#p::Direction::Forward),
            _ => quote!(#p::Direction::Backward),
        };
        let limit = match &attrs.init.limit {
            Some(lit) => quote!(#lit),
            None => quote!(1),
        };
        quote! {
            ::core::option::Option::Some(
                #p::EventQuery::item(#p::QueryItem::types([#(#types),*]).and_tags([#(#tags),*]))
                    .direction(#direction)
                    .with_limit(::core::option::Option::Some(#p::Limit::from_const(#limit)))
            )
        }
    };

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::Projection for #ident #ty_generics #where_clause {
                type Event = #events;

                #[allow(unreachable_patterns)]
                fn when(
                    &mut self,
                    event: &#p::Recorded<#events>,
                ) -> ::core::result::Result<(), #p::HandlerError> {
                    match &event.data {
                        #(#arms)*
                        _ => ::core::result::Result::Ok(()),
                    }
                }

                fn init_query(&self) -> ::core::option::Option<#p::EventQuery> {
                    #init_query
                }

                fn event_query(&self) -> #p::EventQuery {
                    #p::EventQuery::item(#event_item)
                }
            }

            #(#key_checks)*
        };
    }
}

/// `Events::Variant { .. } => <call of the handler with the variant's data>`.
fn dispatch_arm(
    h: &HandledVariant,
    events: &syn::Path,
    attrs: &crate::attr::ProjectionAttrs,
    p: &TokenStream,
    derive: StructDerive,
) -> TokenStream {
    let variant = &h.variant;
    // Located at the variant (errors point there) but resolved at the call site, so that
    // `self` and `event` resolve even when the attribute comes from a `macro_rules!` body.
    let span = Span::call_site().located_at(variant.span());
    let handler = h
        .handler
        .clone()
        .unwrap_or_else(|| format_ident!("on_{}", snake(variant), span = span));
    let with_meta = attrs.meta.iter().any(|m| m == variant);
    let call = if with_meta {
        let apply = format_ident!("__krescent_apply_meta_{}", variant, span = span);
        quote_spanned!(span=> event.data.#apply(self, event, Self::#handler))
    } else {
        let apply = format_ident!("__krescent_apply_{}", variant, span = span);
        quote_spanned!(span=> event.data.#apply(self, Self::#handler))
    };
    let (convert, none) = match derive {
        StructDerive::Projection => (
            quote_spanned!(span=> #p::HandlerResult::into_handler_result(result)),
            quote!(::core::result::Result::Ok(())),
        ),
        StructDerive::ReadModel => (
            quote_spanned!(span=> #p::ModelHandlerResult::into_outcome(result)),
            quote!(::core::result::Result::Ok(#p::EventOutcome::Skipped)),
        ),
    };
    quote_spanned! {span=>
        #events::#variant { .. } => match #call {
            ::core::option::Option::Some(result) => #convert,
            ::core::option::Option::None => #none,
        },
    }
}
