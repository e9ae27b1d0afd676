//! Derive macros of [krescent](https://docs.rs/krescent). Use them through the `krescent`
//! crate, which documents every attribute; this crate holds only the entry points, the
//! parsed model (`ast`, `attr`), the checks (`valid`) and the code generation (`expand`).

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `krescent::Event` for an enum; see the `krescent` crate for the attributes.
#[proc_macro_derive(Event, attributes(krescent))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::event::derive(&input).into()
}

/// Implements `krescent::Projection` for a struct; see the `krescent` crate for the attributes.
#[proc_macro_derive(Projection, attributes(krescent))]
pub fn derive_projection(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::projection::derive(&input, attr::StructDerive::Projection).into()
}

/// Implements `krescent::ReadModel` for a struct; see the `krescent` crate for the attributes.
#[proc_macro_derive(ReadModel, attributes(krescent))]
pub fn derive_read_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::projection::derive(&input, attr::StructDerive::ReadModel).into()
}

/// Implements `krescent::CheckpointSupport` for a struct; see the `krescent` crate for the
/// attributes.
#[proc_macro_derive(CheckpointSupport, attributes(krescent))]
pub fn derive_checkpoint_support(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::checkpoint::derive(&input).into()
}
