//! The registry of event catalogs, filled through `inventory` by `#[derive(Event)]`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::EventType;

/// One event enum's registration: its catalog, revision, Rust type and type names.
///
/// `#[derive(Event)]` submits one per enum; tests and tools can build an [`EventRegistry`]
/// from registrations of their own with [`EventRegistry::from_registrations`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRegistration {
    /// The catalog name.
    pub catalog: &'static str,
    /// The catalog revision.
    pub revision: u32,
    /// The Rust path of the enum.
    pub rust_type: &'static str,
    /// The enum's type names.
    pub types: &'static [EventType],
}

impl EventRegistration {
    /// The registration of an event enum.
    pub fn of<E: super::Event>() -> Self {
        EventRegistration {
            catalog: E::CATALOG,
            revision: E::REVISION,
            rust_type: std::any::type_name::<E>(),
            types: E::TYPES,
        }
    }
}

inventory::collect!(EventRegistration);

/// Why a registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two different Rust types claim the same type name in one catalog.
    #[error(
        "event type `{type_name}` of catalog `{catalog}` is claimed by both `{first}` and `{second}`"
    )]
    DuplicateTypeName {
        /// The catalog.
        catalog: &'static str,
        /// The type name claimed twice.
        type_name: &'static str,
        /// The first Rust type, in name order.
        first: &'static str,
        /// The second Rust type.
        second: &'static str,
    },
    /// One catalog registered with two different revisions.
    #[error(
        "catalog `{catalog}` has revision {first} in `{first_type}` and {second} in `{second_type}`"
    )]
    ConflictingRevision {
        /// The catalog.
        catalog: &'static str,
        /// One revision.
        first: u32,
        /// The Rust type with that revision.
        first_type: &'static str,
        /// The other revision.
        second: u32,
        /// The Rust type with the other revision.
        second_type: &'static str,
    },
}

/// Every registered (catalog, type name), checked for conflicts.
#[derive(Debug, Clone, Default)]
pub struct EventRegistry {
    /// catalog → type name → registration.
    by_name: BTreeMap<&'static str, BTreeMap<&'static str, EventRegistration>>,
    catalogs: BTreeMap<&'static str, (u32, &'static str)>,
}

impl EventRegistry {
    /// The registry of every enum that derives `Event` in this program, built once.
    pub fn global() -> Result<&'static EventRegistry, RegistryError> {
        static GLOBAL: OnceLock<Result<EventRegistry, RegistryError>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                Self::from_registrations(inventory::iter::<EventRegistration>.into_iter().copied())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A registry of the given registrations (the manual path, for tests and tools). The order
    /// of the registrations does not matter; the same registration given twice counts once.
    pub fn from_registrations(
        registrations: impl IntoIterator<Item = EventRegistration>,
    ) -> Result<Self, RegistryError> {
        let mut regs: Vec<EventRegistration> = registrations.into_iter().collect();
        // Sorted so that errors do not depend on link order.
        regs.sort_by(|a, b| (a.catalog, a.rust_type).cmp(&(b.catalog, b.rust_type)));
        regs.dedup();
        let mut registry = EventRegistry::default();
        for reg in regs {
            registry.insert(reg)?;
        }
        Ok(registry)
    }

    fn insert(&mut self, reg: EventRegistration) -> Result<(), RegistryError> {
        let (revision, first_type) = *self
            .catalogs
            .entry(reg.catalog)
            .or_insert((reg.revision, reg.rust_type));
        if revision != reg.revision {
            return Err(RegistryError::ConflictingRevision {
                catalog: reg.catalog,
                first: revision,
                first_type,
                second: reg.revision,
                second_type: reg.rust_type,
            });
        }
        let names = self.by_name.entry(reg.catalog).or_default();
        for ty in reg.types {
            if let Some(prev) = names.get(ty.as_str()) {
                if prev.rust_type != reg.rust_type {
                    return Err(RegistryError::DuplicateTypeName {
                        catalog: reg.catalog,
                        type_name: ty.as_str(),
                        first: prev.rust_type,
                        second: reg.rust_type,
                    });
                }
            }
            names.insert(ty.as_str(), reg);
        }
        Ok(())
    }

    /// The registration that owns `type_name` in `catalog`.
    pub fn lookup(&self, catalog: &str, type_name: &str) -> Option<&EventRegistration> {
        self.by_name.get(catalog)?.get(type_name)
    }

    /// The catalogs with their revisions, in name order.
    pub fn catalogs(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        self.catalogs.iter().map(|(c, (r, _))| (*c, *r))
    }

    /// Every registered type name of `catalog`, in name order.
    pub fn type_names<'a>(&'a self, catalog: &'a str) -> impl Iterator<Item = &'static str> + 'a {
        self.by_name
            .get(catalog)
            .into_iter()
            .flat_map(|names| names.keys().copied())
    }
}
