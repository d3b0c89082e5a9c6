//! Fault severity, ordered `DEBUG < INFO < WARNING < ERROR < CRITICAL`.

use std::fmt;
use std::str::FromStr;

/// Severity of a fault. Servers send lowercase (`critical`, `warning`, `info`);
/// parsing is case-insensitive. An unknown string is an error, never a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARNING`.
    Warning,
    /// `ERROR`.
    Error,
    /// `CRITICAL`.
    Critical,
}

impl Severity {
    pub(crate) const ALL: [Severity; 5] = [
        Severity::Debug,
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];
    /// The allowed names, for error messages.
    pub const ALLOWED: &'static str = "DEBUG, INFO, WARNING, ERROR, CRITICAL";

    /// The upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity name that is not one of [`Severity::ALLOWED`] (the text received).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {0:?} (allowed: DEBUG, INFO, WARNING, ERROR, CRITICAL, any case)")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Case-insensitive without allocating: the per-event path calls this.
        let t = s.trim();
        for sev in Severity::ALL {
            if t.eq_ignore_ascii_case(sev.as_str()) {
                return Ok(sev);
            }
        }
        Err(UnknownSeverity(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_case() {
        assert!(Severity::Debug < Severity::Info);
        assert!(Severity::Info < Severity::Warning);
        assert!(Severity::Warning < Severity::Error);
        assert!(Severity::Error < Severity::Critical);
        assert_eq!("critical".parse::<Severity>().unwrap(), Severity::Critical);
        assert_eq!("Warning".parse::<Severity>().unwrap(), Severity::Warning);
        assert_eq!(" INFO ".parse::<Severity>().unwrap(), Severity::Info);
        assert!("high".parse::<Severity>().is_err());
        assert!("".parse::<Severity>().is_err());
    }
}
