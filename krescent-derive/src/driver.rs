//! The one sequence every derive follows: parse the input into its model (`ast`, `attr`),
//! check the model (`valid`), then generate the implementation (`expand`). Every error of the
//! first two steps is collected in a [`Ctxt`]; when there is any, the output is all of them
//! plus a stub implementation of the derived trait (`fallback`), so that one mistake is
//! reported once instead of again at every place the type is used.

use proc_macro2::TokenStream;
use syn::{DeriveInput, Path};

use crate::ast::{CheckpointStruct, EventEnum, ProjectionStruct, WrongShape};
use crate::attr::{self, StructDerive};
use crate::ctxt::Ctxt;
use crate::{expand, fallback, valid};

/// The steps of one derive.
pub(crate) trait Derive {
    /// The parsed model of the input.
    type Input<'a>;

    /// The trait's name, as written in `#[derive(...)]`.
    fn name(&self) -> &'static str;
    /// What kind of item the derive needs, for the error on any other kind.
    fn expected(&self) -> &'static str;
    /// Parses the input; attribute errors go to `cx`, a wrong kind of item ends the parse.
    fn parse<'a>(
        &self,
        cx: &mut Ctxt,
        input: &'a DeriveInput,
    ) -> Result<Self::Input<'a>, WrongShape>;
    /// Checks the parsed model, reporting every problem to `cx`.
    fn validate(&self, cx: &mut Ctxt, input: &Self::Input<'_>);
    /// The `#[krescent(crate = "…")]` override, if given.
    fn crate_path<'i>(&self, input: &'i Self::Input<'_>) -> Option<&'i Path>;
    /// The implementation of a model that passed the checks; `krate` is the facade's path.
    fn expand(&self, input: &Self::Input<'_>, krate: &TokenStream) -> TokenStream;
    /// The stub implementation emitted beside errors; `parsed` is `None` when the input is
    /// not the kind of item the derive needs.
    fn fallback(
        &self,
        input: &DeriveInput,
        parsed: Option<&Self::Input<'_>>,
        krate: &TokenStream,
    ) -> TokenStream;
}

/// Runs `derive` on `input`: its implementation, or all its errors and its fallback.
pub(crate) fn run<D: Derive>(derive: &D, input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let parsed = match derive.parse(&mut cx, input) {
        Ok(parsed) => parsed,
        Err(WrongShape { span, what }) => {
            let error = syn::Error::new(
                span,
                format!(
                    "`#[derive({})]` needs {}, not {what}",
                    derive.name(),
                    derive.expected()
                ),
            );
            let krate = expand::krate(attr::crate_override(&input.attrs).as_ref());
            return with_fallback(cx.into_error(error), derive.fallback(input, None, &krate));
        }
    };
    derive.validate(&mut cx, &parsed);
    let krate = expand::krate(derive.crate_path(&parsed));
    match cx.check() {
        Ok(()) => derive.expand(&parsed, &krate),
        Err(errors) => with_fallback(errors, derive.fallback(input, Some(&parsed), &krate)),
    }
}

fn with_fallback(errors: syn::Error, fallback: TokenStream) -> TokenStream {
    let mut out = errors.to_compile_error();
    out.extend(fallback);
    out
}

/// `#[derive(Event)]`.
pub(crate) struct EventDerive;

impl Derive for EventDerive {
    type Input<'a> = EventEnum<'a>;

    fn name(&self) -> &'static str {
        "Event"
    }

    fn expected(&self) -> &'static str {
        "an enum whose variants are the event types"
    }

    fn parse<'a>(
        &self,
        cx: &mut Ctxt,
        input: &'a DeriveInput,
    ) -> Result<EventEnum<'a>, WrongShape> {
        EventEnum::from_syn(cx, input)
    }

    fn validate(&self, cx: &mut Ctxt, input: &EventEnum<'_>) {
        valid::check_event(cx, input);
    }

    fn crate_path<'i>(&self, input: &'i EventEnum<'_>) -> Option<&'i Path> {
        input.attrs.krate.as_ref().map(|(path, _)| path)
    }

    fn expand(&self, input: &EventEnum<'_>, krate: &TokenStream) -> TokenStream {
        expand::event::expand(input, krate)
    }

    fn fallback(
        &self,
        input: &DeriveInput,
        parsed: Option<&EventEnum<'_>>,
        krate: &TokenStream,
    ) -> TokenStream {
        fallback::event(input, parsed, krate)
    }
}

/// `#[derive(Projection)]` and `#[derive(ReadModel)]`, which share their attributes.
impl Derive for StructDerive {
    type Input<'a> = ProjectionStruct<'a>;

    fn name(&self) -> &'static str {
        match self {
            StructDerive::Projection => "Projection",
            StructDerive::ReadModel => "ReadModel",
        }
    }

    fn expected(&self) -> &'static str {
        "a struct that holds the state"
    }

    fn parse<'a>(
        &self,
        cx: &mut Ctxt,
        input: &'a DeriveInput,
    ) -> Result<ProjectionStruct<'a>, WrongShape> {
        ProjectionStruct::from_syn(cx, input, *self)
    }

    fn validate(&self, cx: &mut Ctxt, input: &ProjectionStruct<'_>) {
        valid::check_projection(cx, input, *self);
    }

    fn crate_path<'i>(&self, input: &'i ProjectionStruct<'_>) -> Option<&'i Path> {
        input.attrs.krate.as_ref().map(|(path, _)| path)
    }

    fn expand(&self, input: &ProjectionStruct<'_>, krate: &TokenStream) -> TokenStream {
        match self {
            StructDerive::Projection => expand::projection::expand(input, krate),
            StructDerive::ReadModel => expand::projection::expand_model(input, krate),
        }
    }

    fn fallback(
        &self,
        input: &DeriveInput,
        parsed: Option<&ProjectionStruct<'_>>,
        krate: &TokenStream,
    ) -> TokenStream {
        match self {
            StructDerive::Projection => fallback::projection(input, parsed, krate),
            StructDerive::ReadModel => fallback::read_model(input, parsed, krate),
        }
    }
}

/// `#[derive(CheckpointSupport)]`.
pub(crate) struct CheckpointDerive;

impl Derive for CheckpointDerive {
    type Input<'a> = CheckpointStruct<'a>;

    fn name(&self) -> &'static str {
        "CheckpointSupport"
    }

    fn expected(&self) -> &'static str {
        "a struct"
    }

    fn parse<'a>(
        &self,
        cx: &mut Ctxt,
        input: &'a DeriveInput,
    ) -> Result<CheckpointStruct<'a>, WrongShape> {
        CheckpointStruct::from_syn(cx, input)
    }

    fn validate(&self, cx: &mut Ctxt, input: &CheckpointStruct<'_>) {
        valid::check_checkpoint(cx, input);
    }

    fn crate_path<'i>(&self, input: &'i CheckpointStruct<'_>) -> Option<&'i Path> {
        input.attrs.krate.as_ref().map(|(path, _)| path)
    }

    fn expand(&self, input: &CheckpointStruct<'_>, krate: &TokenStream) -> TokenStream {
        expand::checkpoint::expand(input, krate)
    }

    fn fallback(
        &self,
        input: &DeriveInput,
        _parsed: Option<&CheckpointStruct<'_>>,
        krate: &TokenStream,
    ) -> TokenStream {
        fallback::checkpoint(input, krate)
    }
}
