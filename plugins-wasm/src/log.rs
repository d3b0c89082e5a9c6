//! What a plugin says during one call: `host.log` lines and whatever it
//! writes to stdout/stderr, sanitized and bounded, collected so the caller
//! can emit them inside the event's own context (calls may run on another
//! thread than the one that logs the event).

use std::sync::{Arc, Mutex};

// Plugin text may echo event data: log lines stay on one line and bounded.
use runner_core::text::excerpt;

/// Longest log line kept from a plugin.
pub(crate) const MAX_LOG_LEN: usize = 1024;
/// Log lines kept per call; the rest are counted and dropped so a chatty
/// plugin cannot flood the runner's log.
pub(crate) const MAX_LOGS_PER_CALL: usize = 16;

/// Severity of a plugin's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line a plugin logged (already sanitized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLogLine {
    pub level: LogLevel,
    pub message: String,
}

/// Which standard stream a write came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdio {
    Stdout = 0,
    Stderr = 1,
}

#[derive(Debug, Default)]
pub(crate) struct CallLog {
    lines: Vec<PluginLogLine>,
    suppressed: u32,
    /// The last error-level line (or stderr line) of this call: a Rust
    /// guest's panic hook and a Python traceback both end there just before
    /// the guest traps, so a trap reports it.
    last_error: Option<String>,
    /// Unterminated stdout/stderr text, until its newline arrives.
    partial: [Vec<u8>; 2],
}

/// Shared between the store's host state and its stdout/stderr streams.
pub(crate) type SharedLog = Arc<Mutex<CallLog>>;

impl CallLog {
    pub(crate) fn push(&mut self, level: LogLevel, message: &str) {
        let message = excerpt(message, MAX_LOG_LEN);
        if level == LogLevel::Error {
            self.last_error = Some(message.clone());
        }
        if self.lines.len() >= MAX_LOGS_PER_CALL {
            self.suppressed += 1;
            return;
        }
        self.lines.push(PluginLogLine { level, message });
    }

    /// Stdout lines log at info, stderr lines at warn; a line is cut at
    /// [`MAX_LOG_LEN`] bytes even without its newline.
    pub(crate) fn write(&mut self, stream: Stdio, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let buf = &mut self.partial[stream as usize];
            let room = MAX_LOG_LEN.saturating_sub(buf.len()).max(1);
            match rest.iter().take(room).position(|b| *b == b'\n') {
                Some(i) => {
                    buf.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    self.flush_stream(stream);
                }
                None => {
                    let n = room.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if buf.len() >= MAX_LOG_LEN {
                        self.flush_stream(stream);
                    }
                }
            }
        }
    }

    fn flush_stream(&mut self, stream: Stdio) {
        let buf = std::mem::take(&mut self.partial[stream as usize]);
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            return;
        }
        let level = match stream {
            Stdio::Stdout => LogLevel::Info,
            Stdio::Stderr => LogLevel::Warn,
        };
        if stream == Stdio::Stderr {
            self.last_error = Some(excerpt(text, MAX_LOG_LEN));
        }
        self.push(level, text);
    }

    /// Starts a new call: forgets the previous call's last error.
    pub(crate) fn begin(&mut self) {
        self.last_error = None;
    }

    pub(crate) fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The lines of the call so far (unterminated output included) and how
    /// many were dropped over the cap; resets both.
    pub(crate) fn take(&mut self) -> (Vec<PluginLogLine>, u32) {
        self.flush_stream(Stdio::Stdout);
        self.flush_stream(Stdio::Stderr);
        (
            std::mem::take(&mut self.lines),
            std::mem::take(&mut self.suppressed),
        )
    }
}

/// Emits collected lines under target `plugin`, tagged with the stage.
pub(crate) fn emit(stage: &str, lines: &[PluginLogLine], suppressed: u32) {
    for l in lines {
        let msg = &l.message;
        match l.level {
            LogLevel::Debug => tracing::debug!(target: "plugin", stage = %stage, "{msg}"),
            LogLevel::Info => tracing::info!(target: "plugin", stage = %stage, "{msg}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", stage = %stage, "{msg}"),
            LogLevel::Error => tracing::error!(target: "plugin", stage = %stage, "{msg}"),
        }
    }
    if suppressed > 0 {
        tracing::warn!(stage = %stage, suppressed, "plugin log lines dropped (limit {MAX_LOGS_PER_CALL} per event)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_is_split_into_lines_and_capped() {
        let mut l = CallLog::default();
        l.write(Stdio::Stdout, b"hello ");
        l.write(Stdio::Stdout, b"world\nsecond\x07 line\n\npartial");
        l.write(Stdio::Stderr, b"Traceback\nValueError: bad\n");
        let (lines, suppressed) = l.take();
        let got: Vec<(LogLevel, &str)> = lines
            .iter()
            .map(|l| (l.level, l.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (LogLevel::Info, "hello world"),
                (LogLevel::Info, "second  line"),
                (LogLevel::Warn, "Traceback"),
                (LogLevel::Warn, "ValueError: bad"),
                (LogLevel::Info, "partial"),
            ]
        );
        assert_eq!(suppressed, 0);
        assert_eq!(l.last_error(), Some("ValueError: bad"));

        l.write(Stdio::Stdout, &vec![b'x'; MAX_LOG_LEN * 3 + 5]);
        for _ in 0..20 {
            l.push(LogLevel::Debug, "d");
        }
        let (lines, suppressed) = l.take();
        assert_eq!(lines.len(), MAX_LOGS_PER_CALL);
        assert_eq!(lines[0].message.len(), MAX_LOG_LEN);
        // 3 full lines + 13 of the 20; the rest and the 5-byte tail are counted.
        assert_eq!(suppressed, 7 + 1);
    }
}
