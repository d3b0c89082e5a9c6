//! Field formatting for the text log format.
//!
//! tracing-subscriber's text format writes `%`-recorded fields bare, so an
//! event field such as a resource name `x outcome=completed` would read as
//! two fields and could forge what a reader (or a log parser) sees. Here
//! every field value that is not a plain token is written quoted with Rust
//! string escapes (`"x outcome=completed"`, `\"`, `\n`), whatever its type
//! and however it was recorded. The message stays bare unless it contains
//! `=`, a quote or a control character.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// [`FormatFields`] for the text log format: `key=value`, values quoted
/// and escaped unless they are plain tokens.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QuotedFields;

impl<'w> FormatFields<'w> for QuotedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Visitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

/// A value that cannot be mistaken for more than one token.
fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-,()[]%*#".contains(&b))
}

/// `s` as it appears in a text log line.
pub(crate) fn quoted(s: &str) -> String {
    if is_plain(s) {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            if value.contains(['=', '"']) || value.chars().any(char::is_control) {
                write!(self.writer, "{sep}{value:?}")
            } else {
                write!(self.writer, "{sep}{value}")
            }
        } else {
            // Field names come from our own code (`r#type` style prefixes
            // are trimmed as the default formatter does).
            let name = field.name().trim_start_matches("r#");
            write!(self.writer, "{sep}{name}={}", quoted(value))
        };
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` arrives here as Display-through-Debug; `?x` as Debug.
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.write(field, &s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_stay_bare_everything_else_is_quoted() {
        assert_eq!(quoted("failed"), "failed");
        assert_eq!(quoted("12"), "12");
        assert_eq!(quoted("prod/shop/Pod/web-1"), "prod/shop/Pod/web-1");
        assert_eq!(
            quoted("x outcome=\"completed\""),
            "\"x outcome=\\\"completed\\\"\""
        );
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
    }
}
