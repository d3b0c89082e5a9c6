//! Configuration support shared by every component's config: error
//! collection (report all errors at once, each naming key, value and what is
//! allowed), layered overrides (flags > env > file > default), and a table
//! reader that rejects unknown keys.
//!
//! Concrete component configs live with their components; this module knows
//! none of them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One configuration mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key, e.g. `stage[2].threshold` or `router.max_concurrent_agents`.
    pub key: String,
    /// The offending value as given (masked for secrets), or `(missing)`.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value.as_str() {
            "(unknown key)" => write!(
                f,
                "{}: unknown key; allowed keys: {}",
                self.key, self.allowed
            ),
            "(missing)" => write!(f, "{}: missing; expected {}", self.key, self.allowed),
            v => write!(
                f,
                "{}: invalid value {}; allowed: {}",
                self.key, v, self.allowed
            ),
        }
    }
}

/// Every configuration mistake found in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Records one mistake: the key, the bad value and what is allowed.
    pub fn push(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        allowed: impl Into<String>,
    ) {
        self.0.push(ConfigError {
            key: key.into(),
            value: value.into(),
            allowed: allowed.into(),
        });
    }
    /// True when nothing was wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Number of mistakes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// `pipeline.toml`.
    File,
    /// An environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl Origin {
    /// The name logged with an effective value: `default`, `file`, `env`, `flag`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File => "file",
            Origin::Env => "env",
            Origin::Flag => "flag",
        }
    }
}

/// The process environment, read once at startup and passed down: the one
/// place components get variables from (secrets named by a key, the
/// variables passed to agents). Tests build one instead of changing the
/// process's environment, which is unsound while other threads read it.
#[derive(Clone, Default)]
pub struct Environment(Arc<BTreeMap<String, String>>);

impl Environment {
    /// The process environment now (variables that are not UTF-8 are left out).
    pub fn capture() -> Environment {
        Environment::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// An environment of exactly these variables (tests, `runner demo`).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Environment {
        Environment(Arc::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    /// The value of variable `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every variable, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for Environment {
    // Values may be secrets: names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Values from command-line flags and the environment, keyed by the
/// environment variable name (`SEVERITY_THRESHOLD`). Flags win over env.
/// Also carries the [`Environment`] itself, for what is not a setting.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    values: BTreeMap<String, (String, Origin)>,
    environment: Environment,
}

impl Overrides {
    /// No overrides and an empty environment.
    pub fn new() -> Self {
        Self::default()
    }
    /// The same overrides reading `environment` for what is not a setting.
    pub fn with_environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }
    /// The environment the process started with (or a test's).
    pub fn environment(&self) -> &Environment {
        &self.environment
    }
    /// The same environment without any override value (the sources of a
    /// pipeline with several: flags cannot say which one they mean).
    pub fn without_values(&self) -> Overrides {
        Overrides::new().with_environment(self.environment.clone())
    }
    /// Sets setting `name` unless a stronger origin already set it (flags win over env).
    pub fn set(&mut self, name: &str, value: impl Into<String>, origin: Origin) {
        let value = value.into();
        match self.values.get(name) {
            Some((_, o)) if *o > origin => {}
            _ => {
                self.values.insert(name.to_string(), (value, origin));
            }
        }
    }
    /// Forgets the override of `name` (the reader falls back to the file or default).
    pub fn remove(&mut self, name: &str) {
        self.values.remove(name);
    }
    /// The override of `name` and where it came from.
    pub fn get(&self, name: &str) -> Option<(&str, Origin)> {
        self.values.get(name).map(|(v, o)| (v.as_str(), *o))
    }
}

/// One setting that a command-line flag and an environment variable can
/// override: the one place its names, default and meaning are written. The
/// table reader ([`TableReader::setting`]), the command line and the
/// configuration reference are all made from it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable (also the key of [`Overrides`]).
    pub env: &'static str,
    /// The long flag without dashes, or "" for a secret (secrets never come
    /// from flags: they would show in the process list).
    pub flag: &'static str,
    /// Where it lives in `pipeline.toml`, dotted (`router.max_concurrent_agents`);
    /// the last part is its key in the table.
    pub key: &'static str,
    /// What it is when nothing sets it.
    pub default: Fallback,
    /// What it means, one line of the reference.
    pub doc: &'static str,
    /// A secret: held in a variable that a key names, masked everywhere.
    pub secret: bool,
}

/// What a [`Setting`] is when nothing sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// This value, written as in an environment variable.
    Value(&'static str),
    /// No value; the text says what that means (`required`, `unset`).
    Absent(&'static str),
}

impl Setting {
    /// A setting with a default value.
    pub const fn value(
        env: &'static str,
        flag: &'static str,
        key: &'static str,
        default: &'static str,
        doc: &'static str,
    ) -> Setting {
        Setting {
            env,
            flag,
            key,
            default: Fallback::Value(default),
            doc,
            secret: false,
        }
    }

    /// A setting without a default value; `shown` says what its absence means.
    pub const fn absent(
        env: &'static str,
        flag: &'static str,
        key: &'static str,
        shown: &'static str,
        doc: &'static str,
    ) -> Setting {
        Setting {
            env,
            flag,
            key,
            default: Fallback::Absent(shown),
            doc,
            secret: false,
        }
    }

    /// A secret held in the variable `env` unless `key` names another one.
    pub const fn secret(env: &'static str, key: &'static str, doc: &'static str) -> Setting {
        Setting {
            env,
            flag: "",
            key,
            default: Fallback::Absent("unset"),
            doc,
            secret: true,
        }
    }

    /// Its key within its table (`max_concurrent_agents`).
    pub fn table_key(&self) -> &'static str {
        self.key.rsplit('.').next().unwrap_or(self.key)
    }

    /// The default as the reference shows it.
    pub fn default_text(&self) -> &'static str {
        match self.default {
            Fallback::Value("") => "none",
            Fallback::Value(v) | Fallback::Absent(v) => v,
        }
    }

    /// The default parsed as `T`.
    ///
    /// # Panics
    /// When the setting has no default value or it does not parse as `T`:
    /// a mistake in the registry, which any compile of a pipeline shows.
    pub fn default_value<T: ConfigValue>(&self) -> T {
        let Fallback::Value(text) = self.default else {
            panic!(
                "setting {} has no default value: read it with setting_opt",
                self.env
            )
        };
        T::from_text(text).unwrap_or_else(|allowed| {
            panic!("default {text:?} of setting {} is not {allowed}", self.env)
        })
    }
}

/// One effective setting, for the startup log and `runner validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Full key, e.g. `sink.timeout_seconds` (or the variable of a setting).
    pub key: String,
    /// The value in effect, secrets masked.
    pub value: String,
    /// Where the value came from.
    pub origin: Origin,
}

/// Reads one TOML table, collecting errors instead of stopping at the first.
/// Call [`TableReader::finish`] to report keys nobody asked for.
pub struct TableReader<'a> {
    prefix: String,
    table: toml::Table,
    seen: Vec<&'static str>,
    overrides: &'a Overrides,
    errors: &'a mut ConfigErrors,
    effective: &'a mut Vec<Effective>,
}

/// A value that can be read from TOML and from an override string.
pub trait ConfigValue: Sized {
    /// Human description of what is allowed (for error messages).
    fn allowed() -> String;
    /// Reads the value from its TOML form; `Err` says what is allowed.
    fn from_toml(v: &toml::Value) -> Result<Self, String>;
    /// Reads the value from a flag or environment variable; `Err` says what is allowed.
    fn from_text(s: &str) -> Result<Self, String>;
    /// The value as logged among the effective settings.
    fn render(&self) -> String;
}

macro_rules! int_value {
    ($t:ty) => {
        impl ConfigValue for $t {
            fn allowed() -> String {
                format!("an integer in {}..={}", <$t>::MIN, <$t>::MAX)
            }
            fn from_toml(v: &toml::Value) -> Result<Self, String> {
                match v {
                    toml::Value::Integer(i) => <$t>::try_from(*i).map_err(|_| Self::allowed()),
                    _ => Err(Self::allowed()),
                }
            }
            fn from_text(s: &str) -> Result<Self, String> {
                s.trim().parse::<$t>().map_err(|_| Self::allowed())
            }
            fn render(&self) -> String {
                self.to_string()
            }
        }
    };
}
int_value!(u64);
int_value!(u32);
int_value!(usize);

impl ConfigValue for f64 {
    fn allowed() -> String {
        "a finite number".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        let f = match v {
            toml::Value::Float(f) => *f,
            toml::Value::Integer(i) => *i as f64,
            _ => return Err(Self::allowed()),
        };
        if f.is_finite() {
            Ok(f)
        } else {
            Err(Self::allowed())
        }
    }
    fn from_text(s: &str) -> Result<Self, String> {
        match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(f),
            _ => Err(Self::allowed()),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for bool {
    fn allowed() -> String {
        "true or false".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        v.as_bool().ok_or_else(Self::allowed)
    }
    fn from_text(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(Self::allowed()),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for String {
    fn allowed() -> String {
        "a string".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        v.as_str().map(str::to_string).ok_or_else(Self::allowed)
    }
    fn from_text(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }
    fn render(&self) -> String {
        format!("{self:?}")
    }
}

impl ConfigValue for Vec<String> {
    fn allowed() -> String {
        "an array of strings".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        let arr = v.as_array().ok_or_else(Self::allowed)?;
        arr.iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(Self::allowed))
            .collect()
    }
    fn from_text(s: &str) -> Result<Self, String> {
        Ok(s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect())
    }
    fn render(&self) -> String {
        format!("{self:?}")
    }
}

/// TCP/UDP port lists (`[443, 6443]`, or `443,6443` from the environment).
impl ConfigValue for Vec<u16> {
    fn allowed() -> String {
        "an array of port numbers in 1..=65535".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        let arr = v.as_array().ok_or_else(Self::allowed)?;
        arr.iter()
            .map(|x| match x {
                toml::Value::Integer(i) if (1..=65535).contains(i) => Ok(*i as u16),
                _ => Err(Self::allowed()),
            })
            .collect()
    }
    fn from_text(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| {
                x.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(Self::allowed)
            })
            .collect()
    }
    fn render(&self) -> String {
        format!("{self:?}")
    }
}

/// Implements [`ConfigValue`] for a `FromStr` enum with a fixed allowed list.
#[macro_export]
macro_rules! config_enum {
    ($t:ty, $allowed:expr) => {
        impl $crate::config::ConfigValue for $t {
            fn allowed() -> String {
                $allowed.to_string()
            }
            fn from_toml(v: &toml::Value) -> Result<Self, String> {
                v.as_str()
                    .ok_or_else(Self::allowed)
                    .and_then(|s| s.parse::<$t>().map_err(|_| Self::allowed()))
            }
            fn from_text(s: &str) -> Result<Self, String> {
                s.parse::<$t>().map_err(|_| Self::allowed())
            }
            fn render(&self) -> String {
                self.to_string()
            }
        }
    };
}

config_enum!(
    crate::severity::Severity,
    "one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)"
);

fn render_toml(v: &toml::Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(77).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

impl<'a> TableReader<'a> {
    /// A reader of `table`, whose keys are reported as `prefix.key`; errors and effective values are appended to the caller's lists.
    pub fn new(
        prefix: impl Into<String>,
        table: toml::Table,
        overrides: &'a Overrides,
        errors: &'a mut ConfigErrors,
        effective: &'a mut Vec<Effective>,
    ) -> Self {
        TableReader {
            prefix: prefix.into(),
            table,
            seen: Vec::new(),
            overrides,
            errors,
            effective,
        }
    }

    fn key(&self, k: &str) -> String {
        if self.prefix.is_empty() {
            k.to_string()
        } else {
            format!("{}.{}", self.prefix, k)
        }
    }

    /// The error list, for checks that span several keys.
    pub fn errors(&mut self) -> &mut ConfigErrors {
        self.errors
    }

    /// A variable of the injected [`Environment`] (for secrets named by a
    /// key; settings come through `layered`).
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.overrides.environment().get(name)
    }

    /// The injected [`Environment`] as a whole.
    pub fn environment(&self) -> &Environment {
        self.overrides.environment()
    }

    /// Records an error against `key` of this table.
    pub fn error(&mut self, key: &str, value: impl Into<String>, allowed: impl Into<String>) {
        let k = self.key(key);
        self.errors.push(k, value, allowed);
    }

    /// Optional key without overrides.
    pub fn opt<T: ConfigValue>(&mut self, key: &'static str) -> Option<T> {
        self.seen.push(key);
        let v = self.table.get(key)?.clone();
        match T::from_toml(&v) {
            Ok(t) => {
                let k = self.key(key);
                self.effective.push(Effective {
                    key: k,
                    value: t.render(),
                    origin: Origin::File,
                });
                Some(t)
            }
            Err(allowed) => {
                let k = self.key(key);
                self.errors.push(k, render_toml(&v), allowed);
                None
            }
        }
    }

    /// Optional key with a default, without overrides: the default is
    /// logged as the effective value like any other.
    pub fn opt_or<T: ConfigValue>(&mut self, key: &'static str, default: T) -> T {
        match self.opt(key) {
            Some(v) => v,
            None => {
                self.record_default(key, default.render());
                default
            }
        }
    }

    /// Logs `value` as the effective value of `key`, from the default: for
    /// a default the reader works out itself (`opt_or` and the `setting`
    /// methods call it). A key already recorded is left alone.
    pub fn record_default(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        let k = self.key(key);
        if !self.effective.iter().any(|e| e.key == k) {
            self.effective.push(Effective {
                key: k,
                value,
                origin: Origin::Default,
            });
        }
    }

    /// The value of setting `s`: flag > environment > file > its default.
    pub fn setting<T: ConfigValue>(&mut self, s: &Setting) -> T {
        let default = s.default_value();
        self.layered(s.table_key(), s.env, default)
    }

    /// Like [`setting`](Self::setting), for a size, count or duration that
    /// must lie in `range` (see [`layered_in`](Self::layered_in)).
    pub fn setting_in<T>(
        &mut self,
        s: &Setting,
        range: std::ops::RangeInclusive<T>,
        unit: &str,
    ) -> T
    where
        T: ConfigValue + PartialOrd + fmt::Display + Copy,
    {
        let default = s.default_value();
        self.layered_in(s.table_key(), s.env, default, range, unit)
    }

    /// A setting without a default value: `None` when nothing sets it
    /// (logged as the setting's default text).
    pub fn setting_opt<T: ConfigValue>(&mut self, s: &Setting) -> Option<T> {
        let v = self.layered_opt(s.table_key(), s.env, s.secret);
        if v.is_none() {
            self.record_default(s.table_key(), s.default_text());
        }
        v
    }

    /// An endpoint URL setting without a default (see [`layered_url`](Self::layered_url)).
    pub fn setting_url(&mut self, s: &Setting) -> Option<String> {
        let v = self.layered_url(s.table_key(), s.env);
        if v.is_none() {
            self.record_default(s.table_key(), s.default_text());
        }
        v
    }

    /// Required key without overrides.
    pub fn req<T: ConfigValue>(&mut self, key: &'static str) -> Option<T> {
        if !self.table.contains_key(key) {
            self.seen.push(key);
            let k = self.key(key);
            self.errors.push(k, "(missing)", T::allowed());
            return None;
        }
        self.opt(key)
    }

    /// Key with a default, overridable by `env` (flag or environment).
    /// `secret` masks the value in the effective-config log.
    pub fn layered<T: ConfigValue>(&mut self, key: &'static str, env: &str, default: T) -> T {
        self.layered_opt(key, env, false).unwrap_or_else(|| {
            let k = self.key(key);
            self.effective.push(Effective {
                key: k,
                value: default.render(),
                origin: Origin::Default,
            });
            default
        })
    }

    /// Like [`layered`](Self::layered), for a size, count or duration that
    /// must lie in `range`: a value outside is an error naming the key, the
    /// value and the range (`unit` says what the number means), and the
    /// default is returned so compilation can go on collecting errors.
    pub(crate) fn layered_in<T>(
        &mut self,
        key: &'static str,
        env: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
        unit: &str,
    ) -> T
    where
        T: ConfigValue + PartialOrd + fmt::Display + Copy,
    {
        let v = self.layered(key, env, default);
        self.check_range(key, env, v, range, unit)
            .unwrap_or(default)
    }

    /// Checks `v` (read from `key`, overridable by `env`) against `range`;
    /// records an error and returns `None` when it is outside.
    pub fn check_range<T>(
        &mut self,
        key: &'static str,
        env: &str,
        v: T,
        range: std::ops::RangeInclusive<T>,
        unit: &str,
    ) -> Option<T>
    where
        T: PartialOrd + fmt::Display + Copy,
    {
        if range.contains(&v) {
            return Some(v);
        }
        let k = match self.overrides.get(env) {
            Some((_, origin)) => format!("{} (from {} {env})", self.key(key), origin.as_str()),
            None => self.key(key),
        };
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" ({unit})")
        };
        self.errors.push(
            k,
            v.to_string(),
            format!("an integer in {}..={}{unit}", range.start(), range.end()),
        );
        None
    }

    /// Like [`layered`](Self::layered) without a default.
    pub(crate) fn layered_opt<T: ConfigValue>(
        &mut self,
        key: &'static str,
        env: &str,
        secret: bool,
    ) -> Option<T> {
        let how = if secret { Shown::Secret } else { Shown::Plain };
        self.layered_shown(key, env, how)
    }

    /// An endpoint URL without a default: shown everywhere through
    /// [`mask_url`] (credentials and query values hidden).
    pub(crate) fn layered_url(&mut self, key: &'static str, env: &str) -> Option<String> {
        self.layered_shown(key, env, Shown::Url)
    }

    fn layered_shown<T: ConfigValue>(
        &mut self,
        key: &'static str,
        env: &str,
        how: Shown,
    ) -> Option<T> {
        let secret = how == Shown::Secret;
        let shown = |text: &str, rendered: String| match how {
            Shown::Plain => rendered,
            Shown::Secret => mask(text),
            Shown::Url => format!("{:?}", mask_url(text)),
        };
        self.seen.push(key);
        let k = self.key(key);
        if let Some((text, origin)) = self.overrides.get(env) {
            return match T::from_text(text) {
                Ok(t) => {
                    self.effective.push(Effective {
                        key: k,
                        value: shown(text, t.render()),
                        origin,
                    });
                    Some(t)
                }
                Err(allowed) => {
                    let shown = shown(text, format!("{text:?}"));
                    self.errors.push(
                        format!("{k} (from {} {env})", origin.as_str()),
                        shown,
                        allowed,
                    );
                    None
                }
            };
        }
        let v = self.table.get(key)?.clone();
        match T::from_toml(&v) {
            Ok(t) => {
                let value = match (how, v.as_str()) {
                    (Shown::Secret, _) => "****".into(),
                    (Shown::Url, Some(text)) => shown(text, String::new()),
                    _ => t.render(),
                };
                self.effective.push(Effective {
                    key: k,
                    value,
                    origin: Origin::File,
                });
                Some(t)
            }
            Err(allowed) => {
                self.errors.push(
                    k,
                    if secret {
                        "****".into()
                    } else {
                        render_toml(&v)
                    },
                    allowed,
                );
                None
            }
        }
    }

    /// A nested table (e.g. a WASM plugin's `config = { … }`), taken whole.
    pub fn table(&mut self, key: &'static str) -> Option<toml::Table> {
        self.seen.push(key);
        match self.table.get(key)? {
            toml::Value::Table(t) => Some(t.clone()),
            other => {
                let k = self.key(key);
                self.errors.push(k, render_toml(other), "a table");
                None
            }
        }
    }

    /// Reports every key that no reader asked for, naming the allowed keys.
    pub fn finish(self) {
        let mut allowed: Vec<&str> = self.seen.clone();
        allowed.sort_unstable();
        allowed.dedup();
        for k in self.table.keys() {
            if !self.seen.contains(&k.as_str()) {
                let key = if self.prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{}.{}", self.prefix, k)
                };
                self.errors.push(
                    key,
                    "(unknown key)",
                    format!("one of: {}", allowed.join(", ")),
                );
            }
        }
    }
}

/// Masks a value that is secret as a whole (a Slack webhook, whose path is
/// the credential): keeps the scheme and host of a URL, nothing else.
/// Endpoint URLs go through [`mask_url`] instead.
pub fn mask(secret: &str) -> String {
    if secret.is_empty() {
        return String::new();
    }
    if let Some(rest) = secret.split_once("://") {
        let host = rest.1.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit('@').next().unwrap_or(host);
        return format!("{}://{}/****", rest.0, host);
    }
    "****".to_string()
}

/// Masks the credentials in an endpoint URL, the same way everywhere it is
/// shown (effective configuration, `runner validate`, errors, logs): the
/// user info (`user:pass@`) becomes `****:****@`, every query value becomes
/// `****` (`?access_token=****&x=****`), a fragment becomes `#****`; scheme,
/// host, port and path stay readable so a wrong endpoint can be diagnosed.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let mut out = String::with_capacity(url.len());
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            out.push_str(if user.contains(':') {
                "****:****@"
            } else {
                "****@"
            });
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_frag, frag) = match tail.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (tail, None),
    };
    let (path, query) = match before_frag.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_frag, None),
    };
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) => format!("{k}=****"),
                // A bare query value may be a token itself.
                None if pair.is_empty() => String::new(),
                None => "****".to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    if frag.is_some_and(|f| !f.is_empty()) {
        out.push_str("#****");
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Plain,
    Secret,
    Url,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::severity::Severity;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn collects_all_errors_and_unknown_keys() {
        let ov = Overrides::new();
        let mut errs = ConfigErrors::default();
        let mut eff = Vec::new();
        let mut r = TableReader::new(
            "stage[0]",
            table("threshold = 'HIGH'\nwindow = -1\ntypo = 1"),
            &ov,
            &mut errs,
            &mut eff,
        );
        let _: Option<Severity> = r.opt("threshold");
        let _: Option<u64> = r.opt("window");
        r.finish();
        assert_eq!(errs.len(), 3, "{errs}");
        let text = errs.to_string();
        assert!(
            text.contains("stage[0].threshold: invalid value \"HIGH\"; allowed: one of DEBUG"),
            "{text}"
        );
        assert!(text.contains("stage[0].window: invalid value -1"), "{text}");
        assert!(
            text.contains("stage[0].typo: unknown key; allowed keys: one of: threshold, window"),
            "{text}"
        );
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let t = table("threshold = 'warning'");
        let run = |ov: &Overrides, t: toml::Table| {
            let mut errs = ConfigErrors::default();
            let mut eff = Vec::new();
            let mut r = TableReader::new("s", t, ov, &mut errs, &mut eff);
            let v = r.layered("threshold", "SEVERITY_THRESHOLD", Severity::Error);
            r.finish();
            assert!(errs.is_empty());
            (v, eff[0].origin)
        };
        let mut ov = Overrides::new();
        assert_eq!(
            run(&ov, toml::Table::new()),
            (Severity::Error, Origin::Default)
        );
        assert_eq!(run(&ov, t.clone()), (Severity::Warning, Origin::File));
        ov.set("SEVERITY_THRESHOLD", "info", Origin::Env);
        assert_eq!(run(&ov, t.clone()), (Severity::Info, Origin::Env));
        ov.set("SEVERITY_THRESHOLD", "critical", Origin::Flag);
        assert_eq!(run(&ov, t.clone()), (Severity::Critical, Origin::Flag));
        // A later env value never beats a flag.
        ov.set("SEVERITY_THRESHOLD", "debug", Origin::Env);
        assert_eq!(run(&ov, t), (Severity::Critical, Origin::Flag));
    }

    #[test]
    fn masking() {
        assert_eq!(
            mask("https://hooks.slack.com/services/T0/B0/XYZ"),
            "https://hooks.slack.com/****"
        );
        assert_eq!(mask("http://user:pw@host:8080/x"), "http://host:8080/****");
        assert_eq!(mask("abc"), "****");
    }

    #[test]
    fn url_masking_hides_credentials_and_query_values_only() {
        for (url, shown) in [
            ("http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp"),
            (
                "https://alice:s3cr3t@mcp.example:443/a/mcp?access_token=tok&x=1#frag",
                "https://****:****@mcp.example:443/a/mcp?access_token=****&x=****#****",
            ),
            ("http://tok@host/mcp", "http://****@host/mcp"),
            ("http://host?tok", "http://host?****"),
            ("http://u:p@h@host/x", "http://****:****@host/x"),
            ("not a url?token=abc", "not a url?token=****"),
        ] {
            assert_eq!(mask_url(url), shown, "{url}");
        }
    }

    #[test]
    fn effective_endpoint_is_masked_from_file_and_env() {
        let url = "http://u:pw@h:1/mcp?access_token=tok";
        let expected = "\"http://****:****@h:1/mcp?access_token=****\"";
        let mut ov = Overrides::new();
        for from_env in [false, true] {
            let t = if from_env {
                ov.set("EP", url, Origin::Env);
                toml::Table::new()
            } else {
                table(&format!("endpoint = {url:?}"))
            };
            let mut errs = ConfigErrors::default();
            let mut eff = Vec::new();
            let mut r = TableReader::new("source[0]", t, &ov, &mut errs, &mut eff);
            assert_eq!(r.layered_url("endpoint", "EP").as_deref(), Some(url));
            r.finish();
            assert_eq!(eff[0].value, expected);
        }
    }
}
