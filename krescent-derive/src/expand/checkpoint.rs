//! `#[derive(CheckpointSupport)]`.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::DeriveInput;
use syn::spanned::Spanned;

use crate::ast::{CheckpointField, CheckpointStruct, WrongShape};
use crate::attr::FieldMode;
use crate::ctxt::Ctxt;
use crate::valid;

pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let parsed = match CheckpointStruct::from_syn(&mut cx, input) {
        Ok(parsed) => parsed,
        Err(WrongShape { span, what }) => {
            cx.push(syn::Error::new(
                span,
                format!("`#[derive(CheckpointSupport)]` needs a struct, not {what}"),
            ));
            return cx
                .check()
                .err()
                .map(|e| e.to_compile_error())
                .unwrap_or_default();
        }
    };
    valid::check_checkpoint(&mut cx, &parsed);
    let krate = super::krate(parsed.attrs.krate.as_ref().map(|(p, _)| p));
    match cx.check() {
        Ok(()) => expand(&parsed, &krate),
        Err(errors) => errors.to_compile_error(),
    }
}

/// The field types that are stored as typed bucket values; any other type goes through JSON.
const PRIMITIVES: &[&str] = &[
    "bool", "i8", "i16", "i32", "i64", "isize", "u8", "u16", "u32", "u64", "usize", "f32", "f64",
    "String",
];

fn is_primitive(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => {
            let segs = &p.path.segments;
            let last = segs.last().map(|s| s.ident.to_string()).unwrap_or_default();
            let std_string = segs.len() > 1 && last == "String";
            (segs.len() == 1 || std_string)
                && segs.last().is_some_and(|s| s.arguments.is_empty())
                && PRIMITIVES.contains(&last.as_str())
        }
        _ => false,
    }
}

#[derive(Clone, Copy)]
enum Stored {
    Primitive,
    Json,
    Binary,
    Nested,
}

fn stored(field: &CheckpointField<'_>) -> Option<Stored> {
    match field.attrs.mode {
        FieldMode::Skip => None,
        FieldMode::Binary => Some(Stored::Binary),
        FieldMode::Nested => Some(Stored::Nested),
        FieldMode::Auto if is_primitive(field.ty) => Some(Stored::Primitive),
        FieldMode::Auto => Some(Stored::Json),
    }
}

/// FNV-1a over the stored fields' keys, normalized types and encodings.
fn fingerprint(fields: &[&CheckpointField<'_>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |text: &str| {
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for f in fields {
        let ty: String =
            f.ty.to_token_stream()
                .to_string()
                .split_whitespace()
                .collect();
        let mode = match stored(f) {
            Some(Stored::Primitive) => "prim",
            Some(Stored::Json) => "json",
            Some(Stored::Binary) => "bin",
            Some(Stored::Nested) => "nested",
            None => "skip",
        };
        feed(&f.key());
        feed("|");
        feed(&ty);
        feed("|");
        feed(mode);
        feed(";");
    }
    h
}

fn expand(input: &CheckpointStruct<'_>, krate: &TokenStream) -> TokenStream {
    let p = quote!(#krate::__private);
    let ident = &input.input.ident;
    let (impl_generics, ty_generics, where_clause) = input.input.generics.split_for_impl();
    let kept: Vec<&CheckpointField<'_>> = input
        .fields
        .iter()
        .filter(|f| stored(f).is_some())
        .collect();
    let own = fingerprint(&kept);
    let nested_shapes = kept
        .iter()
        .filter(|f| matches!(stored(f), Some(Stored::Nested)))
        .map(|f| {
            let ty = f.ty;
            quote_spanned!(ty.span()=> <#ty as #p::CheckpointSupport>::SHAPE)
        });

    let mut puts = Vec::new();
    let mut gets = Vec::new();
    let mut assigns = Vec::new();
    for (i, field) in input.fields.iter().enumerate() {
        let member = &field.member;
        let ty = field.ty;
        let key = field.key();
        let local = format_ident!("__field{}", i);
        let span = ty.span();
        match stored(field) {
            None => {
                assigns.push(quote_spanned!(span=> self.#member = <#ty as ::core::default::Default>::default();));
                continue;
            }
            Some(Stored::Primitive) => {
                puts.push(quote_spanned!(span=> <#ty as #p::CheckpointPrimitive>::put(&self.#member, bucket, #key);));
                gets.push(quote_spanned!(span=> let #local = <#ty as #p::CheckpointPrimitive>::get(bucket, #key)?;));
            }
            Some(Stored::Json) => {
                puts.push(
                    quote_spanned!(span=> #p::put_json::<#ty>(bucket, #key, &self.#member)?;),
                );
                gets.push(quote_spanned!(span=> let #local = #p::get_json::<#ty>(bucket, #key)?;));
            }
            Some(Stored::Binary) => {
                puts.push(
                    quote_spanned!(span=> #p::put_binary::<#ty>(bucket, #key, &self.#member)?;),
                );
                gets.push(
                    quote_spanned!(span=> let #local = #p::get_binary::<#ty>(bucket, #key)?;),
                );
            }
            Some(Stored::Nested) => {
                puts.push(
                    quote_spanned!(span=> #p::put_nested::<#ty>(bucket, #key, &self.#member)?;),
                );
                gets.push(quote_spanned!(span=> let #local = #p::get_nested::<#ty>(bucket, #key, &self.#member)?;));
            }
        }
        assigns.push(quote!(self.#member = #local;));
    }

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::CheckpointSupport for #ident #ty_generics #where_clause {
                const SHAPE: u64 = #p::mix_shape(#own, &[#(#nested_shapes),*]);

                fn create_checkpoint(
                    &self,
                    bucket: &mut #p::CheckpointBucket,
                ) -> ::core::result::Result<(), #p::CheckpointError> {
                    #(#puts)*
                    ::core::result::Result::Ok(())
                }

                fn restore_checkpoint(
                    &mut self,
                    bucket: &#p::CheckpointBucket,
                ) -> ::core::result::Result<(), #p::CheckpointError> {
                    // Read everything first, then assign: a failed restore changes nothing.
                    #(#gets)*
                    #(#assigns)*
                    ::core::result::Result::Ok(())
                }
            }
        };
    }
}
