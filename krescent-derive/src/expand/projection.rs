//! `#[derive(Projection)]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::DeriveInput;
use syn::spanned::Spanned;

use crate::ast::{ProjectionStruct, WrongShape, screaming_snake, snake};
use crate::attr::HandledVariant;
use crate::ctxt::Ctxt;
use crate::valid;

pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let parsed = match ProjectionStruct::from_syn(&mut cx, input) {
        Ok(parsed) => parsed,
        Err(WrongShape { span, what }) => {
            cx.push(syn::Error::new(
                span,
                format!("`#[derive(Projection)]` needs a struct that holds the projected state, not {what}"),
            ));
            return cx
                .check()
                .err()
                .map(|e| e.to_compile_error())
                .unwrap_or_default();
        }
    };
    valid::check_projection(&mut cx, &parsed);
    let krate = super::krate(parsed.attrs.krate.as_ref().map(|(p, _)| p));
    match cx.check() {
        Ok(()) => expand(&parsed, &krate),
        Err(errors) => errors.to_compile_error(),
    }
}

fn expand(input: &ProjectionStruct<'_>, krate: &TokenStream) -> TokenStream {
    let p = quote!(#krate::__private);
    let ident = &input.input.ident;
    let (impl_generics, ty_generics, where_clause) = input.input.generics.split_for_impl();
    let Some((events, _)) = &input.attrs.events else {
        return TokenStream::new();
    };
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
    let item = |variants: Vec<TokenStream>| {
        quote! {
            #p::QueryItem::types([#(#variants),*]).and_tags([#(#tags),*])
        }
    };
    let event_variants: Vec<TokenStream> = attrs
        .handles
        .iter()
        .filter(|h| !attrs.savepoints.iter().any(|s| s.variant == h.variant))
        .map(|h| type_const(&h.variant))
        .collect();
    let event_item = item(event_variants);
    let init_query = if attrs.savepoints.is_empty() {
        quote!(::core::option::Option::None)
    } else {
        let savepoint_item = item(
            attrs
                .savepoints
                .iter()
                .map(|s| type_const(&s.variant))
                .collect(),
        );
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
                #p::EventQuery::item(#savepoint_item)
                    .direction(#direction)
                    .with_limit(::core::option::Option::Some(#p::Limit::from_const(#limit)))
            )
        }
    };

    let arms = input
        .dispatched()
        .into_iter()
        .map(|h| dispatch_arm(h, events, attrs, &p));

    let key_checks = attrs.tags.iter().map(|t| {
        let key = t.key.to_string();
        let lists = input.dispatched().into_iter().map(|h| {
            let c = format_ident!("__KRESCENT_TAG_KEYS_{}", h.variant);
            quote!(#events::#c)
        });
        let message = format!(
            "tag key `{key}` is not carried by any variant this projection handles, so its queries could never match"
        );
        quote_spanned! {t.key.span()=>
            const _: () = ::core::assert!(#p::has_tag_key(&[#(#lists),*], #key), #message);
        }
    });

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
    quote_spanned! {span=>
        #events::#variant { .. } => match #call {
            ::core::option::Option::Some(result) => #p::HandlerResult::into_handler_result(result),
            ::core::option::Option::None => ::core::result::Result::Ok(()),
        },
    }
}
