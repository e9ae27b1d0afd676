//! Code generation. Generated code names only `::krescent::__private::…` (or the path given
//! with `#[krescent(crate = "…")]`) and `::core::…`, inside `const _: () = { … };`.

pub(crate) mod checkpoint;
pub(crate) mod event;
pub(crate) mod projection;

use proc_macro2::TokenStream;
use quote::quote;

/// The path of the facade crate in generated code.
pub(crate) fn krate(path: Option<&syn::Path>) -> TokenStream {
    match path {
        Some(path) => quote!(#path),
        None => quote!(::krescent),
    }
}
