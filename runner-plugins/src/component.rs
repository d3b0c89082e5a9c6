//! The component contract every kind obeys (sources, stages, sinks): a
//! config type read from its `pipeline.toml` table, reporting every problem
//! at once, then built into the runtime component. The contributor's guide
//! is `docs/components.md`.
//!
//! A family (`[[source]]`, `[[stage]]`, `[[sink]]`) is one visible enum whose
//! arms are the kinds; [`component_family!`](crate::component_family) writes
//! the dispatch (`kind` → reader, builder, the list of allowed kinds), so a
//! new kind is one file plus one enum arm.

use std::path::Path;

use runner_core::config::{ConfigErrors, Environment, Overrides, TableReader};

use crate::sinks::notice::Notices;

/// What a config reader may know besides its own table.
#[derive(Debug, Clone, Copy)]
pub struct ReadContext<'a> {
    /// Directory relative paths resolve against (the config file's).
    pub base_dir: &'a Path,
    /// Position of the table in its family's array (`[[source]]` number),
    /// for default names.
    pub index: usize,
    /// How many tables the family has: flags and environment variables
    /// apply to a family member only when it is alone.
    pub count: usize,
    /// Every override, including those the table's reader does not get
    /// (several sources): lets a kind refuse one that cannot apply.
    pub overrides: &'a Overrides,
}

impl<'a> ReadContext<'a> {
    /// The context of a lone table (tests, examples, the guide).
    pub fn single(base_dir: &'a Path, overrides: &'a Overrides) -> Self {
        ReadContext {
            base_dir,
            index: 0,
            count: 1,
            overrides,
        }
    }
}

/// What a builder may use besides its config.
#[derive(Clone, Default)]
pub struct BuildContext {
    /// The notifier sinks (`kind = "slack"`), filled once every sink is
    /// built; a sink that reports what it did keeps a clone.
    pub notices: Notices,
    /// The environment the runner was started with (the agent sink passes
    /// an allow-listed part of it to agents).
    pub environment: Environment,
    /// `settings.wasm_cache_dir`, resolved (`None`: no compile cache).
    pub wasm_cache_dir: Option<std::path::PathBuf>,
}

/// One problem found against a key of a component's table (after reading:
/// building, or a check across components).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Key within the table (`path`, `env_allow`); the compiler adds the
    /// table's prefix (`stage[2].`).
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) allowed: String,
}

impl KeyError {
    pub(crate) fn new(
        key: impl Into<String>,
        value: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        KeyError {
            key: key.into(),
            value: value.into(),
            allowed: allowed.into(),
        }
    }

    /// Records this error under the table `prefix` (`sink`, `stage[1]`).
    pub(crate) fn push_to(self, prefix: &str, errors: &mut ConfigErrors) {
        errors.push(format!("{prefix}.{}", self.key), self.value, self.allowed);
    }
}

/// The contract of a component's configuration.
///
/// * `read` takes the table with `kind` removed. It asks the reader for
///   every key it knows (unknown keys are then reported by the compiler),
///   records each problem through the reader (key, bad value, what is
///   allowed) instead of stopping at the first one, and returns `None` if
///   it recorded any. It does not start anything.
/// * `build` turns a valid config into the runtime component. Failures that
///   only show when building (a WASM module that does not load) are
///   [`KeyError`]s against the key that caused them.
pub trait ComponentConfig: Sized {
    /// The `kind = "…"` value that selects this component.
    const KIND: &'static str;
    /// What `build` returns: `Box<dyn Stage>`, `Box<dyn Source>`, …
    type Built;

    fn read(r: &mut TableReader<'_>, cx: &ReadContext<'_>) -> Option<Self>;

    fn build(&self, cx: &BuildContext) -> Result<Self::Built, KeyError>;

    /// Environment variables this table makes hold secrets (tokens,
    /// webhooks): never passed to agents. Taken from the raw table so the
    /// rule holds even when the table has other errors.
    fn secret_envs(_table: &toml::Table) -> Vec<String> {
        Vec::new()
    }

    /// Checks this config against the secret variables of every component
    /// (see [`secret_envs`](Self::secret_envs)).
    fn check_secrets(&self, _secrets: &[String]) -> Vec<KeyError> {
        Vec::new()
    }
}

/// Declares a component family: the enum (one arm per kind, each holding
/// that kind's [`ComponentConfig`]) and its dispatch by `kind`.
///
/// ```text
/// component_family! {
///     /// A `[[stage]]` table, by kind.
///     pub enum StageConfig -> Box<dyn Stage> {
///         Severity(SeverityConfig),
///         Dedup(DedupConfig),
///     }
/// }
/// ```
#[macro_export]
macro_rules! component_family {
    (
        $(#[$meta:meta])*
        $vis:vis enum $family:ident -> $built:ty {
            $( $(#[$vmeta:meta])* $variant:ident($config:ty) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        // Configs are read once at startup; their sizes do not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        $vis enum $family {
            $( $(#[$vmeta])* $variant($config) ),+
        }

        // Not every family needs every method (sinks have no secrets).
        #[allow(dead_code)]
        impl $family {
            /// Every kind of this family, in declaration order.
            $vis const KINDS: &'static [&'static str] =
                &[$( <$config as $crate::component::ComponentConfig>::KIND ),+];

            /// The allowed kinds as a message fragment: `"a, b, c"`.
            $vis fn kinds() -> String {
                Self::KINDS.join(", ")
            }

            /// Reads a table of `kind`. An unknown kind is recorded as an
            /// error against `kind`; `None` when any error was recorded.
            $vis fn read(
                kind: &str,
                r: &mut runner_core::config::TableReader<'_>,
                cx: &$crate::component::ReadContext<'_>,
            ) -> Option<Self> {
                $(
                    if kind == <$config as $crate::component::ComponentConfig>::KIND {
                        return <$config as $crate::component::ComponentConfig>::read(r, cx)
                            .map($family::$variant);
                    }
                )+
                r.error(
                    "kind",
                    format!("{kind:?}"),
                    format!("one of {}", Self::kinds()),
                );
                None
            }

            /// The kind this config was read for.
            $vis fn kind(&self) -> &'static str {
                match self {
                    $( $family::$variant(_) =>
                        <$config as $crate::component::ComponentConfig>::KIND ),+
                }
            }

            /// Builds the runtime component.
            $vis fn build(
                &self,
                cx: &$crate::component::BuildContext,
            ) -> Result<$built, $crate::component::KeyError> {
                match self {
                    $( $family::$variant(c) =>
                        $crate::component::ComponentConfig::build(c, cx).map(Into::into) ),+
                }
            }

            /// See [`ComponentConfig::secret_envs`](crate::component::ComponentConfig::secret_envs).
            $vis fn secret_envs(kind: &str, table: &toml::Table) -> Vec<String> {
                $(
                    if kind == <$config as $crate::component::ComponentConfig>::KIND {
                        return <$config as $crate::component::ComponentConfig>::secret_envs(table);
                    }
                )+
                Vec::new()
            }

            /// See [`ComponentConfig::check_secrets`](crate::component::ComponentConfig::check_secrets).
            $vis fn check_secrets(&self, secrets: &[String]) -> Vec<$crate::component::KeyError> {
                match self {
                    $( $family::$variant(c) =>
                        $crate::component::ComponentConfig::check_secrets(c, secrets) ),+
                }
            }
        }
    };
}
