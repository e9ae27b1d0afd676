//! The registry of read models, filled through `inventory` by `#[derive(ReadModel)]`, so that
//! tools can list every model of a program with its name and version.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// One read model's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRegistration {
    /// The model's name.
    pub name: &'static str,
    /// The model's version.
    pub version: u32,
    /// The catalog of its events.
    pub catalog: &'static str,
    /// The Rust path of the model type.
    pub rust_type: &'static str,
}

inventory::collect!(ModelRegistration);

/// Why a model registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelRegistryError {
    /// Two Rust types use the same model name.
    #[error("read model name `{name}` is used by both `{first}` and `{second}`")]
    DuplicateName {
        /// The name.
        name: &'static str,
        /// One type.
        first: &'static str,
        /// The other type.
        second: &'static str,
    },
}

/// Every registered read model, by name.
#[derive(Debug, Clone, Default)]
pub struct ModelRegistry {
    by_name: BTreeMap<&'static str, ModelRegistration>,
}

impl ModelRegistry {
    /// The registry of every `#[derive(ReadModel)]` type in this program, built once.
    pub fn global() -> Result<&'static ModelRegistry, ModelRegistryError> {
        static GLOBAL: OnceLock<Result<ModelRegistry, ModelRegistryError>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                Self::from_registrations(inventory::iter::<ModelRegistration>.into_iter().copied())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A registry of the given registrations (the manual path); order does not matter.
    pub fn from_registrations(
        registrations: impl IntoIterator<Item = ModelRegistration>,
    ) -> Result<Self, ModelRegistryError> {
        let mut regs: Vec<ModelRegistration> = registrations.into_iter().collect();
        regs.sort_by(|a, b| (a.name, a.rust_type).cmp(&(b.name, b.rust_type)));
        regs.dedup();
        let mut by_name = BTreeMap::new();
        for reg in regs {
            if let Some(prev) = by_name.insert(reg.name, reg) {
                return Err(ModelRegistryError::DuplicateName {
                    name: reg.name,
                    first: prev.rust_type,
                    second: reg.rust_type,
                });
            }
        }
        Ok(ModelRegistry { by_name })
    }

    /// The model registered under `name`.
    pub fn get(&self, name: &str) -> Option<&ModelRegistration> {
        self.by_name.get(name)
    }

    /// Every model, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &ModelRegistration> + '_ {
        self.by_name.values()
    }
}
