//! Derive macros of [krescent](https://docs.rs/krescent). Use them through the `krescent`
//! crate, which documents every attribute. This file holds only the entry points; each derive
//! runs the one sequence of `driver`: parse (`ast`, `attr`), check (`valid`, `rules`), then
//! generate (`expand`), or, on errors, report them all beside a stub impl (`fallback`).

mod ast;
mod attr;
mod ctxt;
mod driver;
mod expand;
mod fallback;
mod rules;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

use crate::attr::StructDerive;
use crate::driver::{CheckpointDerive, EventDerive};

/// Implements `krescent::Event` for an enum; see the `krescent` crate for the attributes.
#[proc_macro_derive(Event, attributes(krescent))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    driver::run(&EventDerive, &input).into()
}

/// Implements `krescent::Projection` for a struct; see the `krescent` crate for the attributes.
#[proc_macro_derive(Projection, attributes(krescent))]
pub fn derive_projection(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    driver::run(&StructDerive::Projection, &input).into()
}

/// Implements `krescent::ReadModel` for a struct; see the `krescent` crate for the attributes.
#[proc_macro_derive(ReadModel, attributes(krescent))]
pub fn derive_read_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    driver::run(&StructDerive::ReadModel, &input).into()
}

/// Implements `krescent::CheckpointSupport` for a struct; see the `krescent` crate for the
/// attributes.
#[proc_macro_derive(CheckpointSupport, attributes(krescent))]
pub fn derive_checkpoint_support(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    driver::run(&CheckpointDerive, &input).into()
}
