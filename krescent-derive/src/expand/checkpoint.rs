//! `#[derive(CheckpointSupport)]`.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{CheckpointField, CheckpointStruct};
use crate::attr::FieldMode;

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
    Delta,
}

fn stored(field: &CheckpointField<'_>) -> Option<Stored> {
    match field.attrs.mode {
        FieldMode::Skip => None,
        FieldMode::Binary => Some(Stored::Binary),
        FieldMode::Nested => Some(Stored::Nested),
        FieldMode::Delta => Some(Stored::Delta),
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
            Some(Stored::Delta) => "delta",
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

/// The generated statements, field by field: full writes, reads and assignments, and for
/// deltas the readiness checks, writes, reads, assignments and "stored" notifications.
#[derive(Default)]
struct Code {
    puts: Vec<TokenStream>,
    gets: Vec<TokenStream>,
    assigns: Vec<TokenStream>,
    ready: Vec<TokenStream>,
    delta_puts: Vec<TokenStream>,
    delta_gets: Vec<TokenStream>,
    delta_assigns: Vec<TokenStream>,
    stored_calls: Vec<TokenStream>,
}

impl Code {
    /// Adds the statements of field number `i`.
    fn add_field(&mut self, i: usize, field: &CheckpointField<'_>, p: &TokenStream) {
        let member = &field.member;
        let ty = field.ty;
        let key = field.key();
        let local = format_ident!("__field{}", i);
        let span = ty.span();
        let (put, get) = match stored(field) {
            None => {
                self.assigns.push(quote_spanned!(span=> self.#member = <#ty as ::core::default::Default>::default();));
                return;
            }
            Some(Stored::Primitive) => (
                quote_spanned!(span=> <#ty as #p::CheckpointPrimitive>::put(&self.#member, bucket, #key);),
                quote_spanned!(span=> let #local = <#ty as #p::CheckpointPrimitive>::get(bucket, #key)?;),
            ),
            Some(Stored::Json) => (
                quote_spanned!(span=> #p::put_json::<#ty>(bucket, #key, &self.#member)?;),
                quote_spanned!(span=> let #local = #p::get_json::<#ty>(bucket, #key)?;),
            ),
            Some(Stored::Binary) => (
                quote_spanned!(span=> #p::put_binary::<#ty>(bucket, #key, &self.#member)?;),
                quote_spanned!(span=> let #local = #p::get_binary::<#ty>(bucket, #key)?;),
            ),
            Some(Stored::Nested) => {
                self.ready.push(quote_spanned!(span=> if !#p::put_nested_delta::<#ty>(bucket, #key, &self.#member)? {
                    return ::core::result::Result::Ok(false);
                }));
                self.delta_gets.push(quote_spanned!(span=> let #local = #p::get_nested_delta::<#ty>(bucket, #key, &self.#member)?;));
                self.delta_assigns.push(quote!(self.#member = #local;));
                self.stored_calls.push(quote_spanned!(span=> <#ty as #p::CheckpointSupport>::checkpoint_stored(&mut self.#member);));
                (
                    quote_spanned!(span=> #p::put_nested::<#ty>(bucket, #key, &self.#member)?;),
                    quote_spanned!(span=> let #local = #p::get_nested::<#ty>(bucket, #key, &self.#member)?;),
                )
            }
            Some(Stored::Delta) => {
                self.ready.push(
                    quote_spanned!(span=> if !<#ty as #p::DeltaState>::delta_ready(&self.#member) {
                        return ::core::result::Result::Ok(false);
                    }),
                );
                self.delta_puts.push(quote_spanned!(span=> <#ty as #p::DeltaState>::put_delta(&self.#member, bucket, #key)?;));
                self.delta_gets.push(quote_spanned!(span=> let #local = <#ty as #p::DeltaState>::get_delta(bucket, #key)?;));
                self.delta_assigns.push(quote_spanned!(span=> <#ty as #p::DeltaState>::apply_delta(&mut self.#member, #local);));
                self.stored_calls.push(
                    quote_spanned!(span=> <#ty as #p::DeltaState>::mark_stored(&mut self.#member);),
                );
                (
                    quote_spanned!(span=> <#ty as #p::DeltaState>::put_full(&self.#member, bucket, #key)?;),
                    quote_spanned!(span=> let #local = <#ty as #p::DeltaState>::get_full(bucket, #key)?;),
                )
            }
        };
        if !matches!(stored(field), Some(Stored::Nested | Stored::Delta)) {
            // Small fields go whole into every delta.
            self.delta_puts.push(put.clone());
            self.delta_gets.push(get.clone());
            self.delta_assigns.push(quote!(self.#member = #local;));
        }
        self.puts.push(put);
        self.gets.push(get);
        self.assigns.push(quote!(self.#member = #local;));
    }

    /// The delta methods, for structs with something that writes deltas; otherwise none, and
    /// the trait's defaults (full checkpoints only) apply.
    fn delta_methods(&self, input: &CheckpointStruct<'_>, p: &TokenStream) -> TokenStream {
        let Code {
            ready,
            delta_puts,
            delta_gets,
            delta_assigns,
            stored_calls,
            ..
        } = self;
        let has_delta = input
            .fields
            .iter()
            .any(|f| matches!(stored(f), Some(Stored::Delta | Stored::Nested)));
        if has_delta {
            quote! {
                fn create_checkpoint_delta(
                    &self,
                    bucket: &mut #p::CheckpointBucket,
                ) -> ::core::result::Result<bool, #p::CheckpointError> {
                    #(#ready)*
                    #(#delta_puts)*
                    ::core::result::Result::Ok(true)
                }

                fn restore_checkpoint_delta(
                    &mut self,
                    bucket: &#p::CheckpointBucket,
                ) -> ::core::result::Result<(), #p::CheckpointError> {
                    #(#delta_gets)*
                    #(#delta_assigns)*
                    ::core::result::Result::Ok(())
                }

                fn checkpoint_stored(&mut self) {
                    #(#stored_calls)*
                }
            }
        } else {
            TokenStream::new()
        }
    }
}

pub(crate) fn expand(input: &CheckpointStruct<'_>, krate: &TokenStream) -> TokenStream {
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

    let mut code = Code::default();
    for (i, field) in input.fields.iter().enumerate() {
        code.add_field(i, field, &p);
    }
    let Code {
        puts,
        gets,
        assigns,
        ..
    } = &code;
    let delta_methods = code.delta_methods(input, &p);

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

                #delta_methods
            }
        };
    }
}
