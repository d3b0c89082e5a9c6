//! `runner test FILE`: declarative test cases for a stage chain (a
//! plugin author's CI), in the spirit of `vector test`. A case feeds one or
//! more payloads through the stages, compiled exactly as `run` compiles
//! them, and checks where each ended: the outcome, the stage that stopped
//! it, and for events that reach the router, field values. No agent runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use runner_core::config::{ConfigErrors, Overrides};
use runner_core::pipeline::{ChainResult, StageChain};
use runner_core::{Event, RawPayload, Recorder, Stage};
use serde_json::Value;

use super::compile::{self, CompileOptions};
use super::{EXIT_CONFIG, EXIT_FATAL, EXIT_OK};

/// `expect` values: `passed` (reaches the router) or an outcome a stage
/// (or parsing) can end an event with.
const EXPECTS: &[&str] = &[
    "passed",
    "filtered",
    "duplicate",
    "plugin_dropped",
    "merged",
    "invalid",
    "failed",
];

/// Keys of `[case.fields]` besides `raw.<key>[.<key>…]`.
const FIELDS: &[&str] = &[
    "fault_id",
    "cluster",
    "resource.api_version",
    "resource.kind",
    "resource.name",
    "resource.namespace",
    "resource.uid",
    "fault_type",
    "severity",
    "context",
    "timestamp",
];

const CASE_KEYS: &str =
    "name, input, input_file, line, before, expect, stage, fields, plugin_failures";

/// One payload to feed, with where it came from for messages.
struct Input {
    label: String,
    payload: Value,
}

struct Case {
    /// Position in the file, for error keys.
    index: usize,
    name: String,
    before: Vec<Value>,
    inputs: Vec<Input>,
    expect: String,
    stage: Option<String>,
    fields: Vec<(String, String)>,
    plugin_failures: u64,
}

/// A parsed test file: the pipeline text to compile and the cases.
pub(super) struct TestFile {
    pipeline_text: String,
    /// What relative paths in the pipeline resolve against.
    base_dir: PathBuf,
    /// Prefix for compile errors of a separate pipeline file.
    pipeline_label: Option<String>,
    cases: Vec<Case>,
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A payload from TOML: an inline table, or a string holding JSON text.
fn payload(v: toml::Value) -> Result<Value, String> {
    match v {
        toml::Value::String(s) => {
            serde_json::from_str(&s).map_err(|e| format!("not valid JSON ({e})"))
        }
        toml::Value::Table(t) => serde_json::to_value(t).map_err(|e| e.to_string()),
        other => Err(format!("a {}", other.type_str())),
    }
}

fn scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn short(v: &toml::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

impl TestFile {
    /// Reads `path`; every problem is collected with its key.
    #[cfg(test)]
    fn read(path: &Path) -> Result<TestFile, ConfigErrors> {
        let (file, errors) = TestFile::parse(path)?;
        if errors.is_empty() {
            Ok(file)
        } else {
            Err(errors)
        }
    }

    /// Reads `path`: `Err` when it cannot be read as TOML at all, else
    /// what could be read (cases with errors left out) and every problem
    /// found, so the pipeline can still be compiled and its errors
    /// reported with these.
    fn parse(path: &Path) -> Result<(TestFile, ConfigErrors), ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut errs = ConfigErrors::default();
            errs.push(
                "FILE",
                format!("{:?}", path.display().to_string()),
                format!("a readable test file ({e})"),
            );
            errs
        })?;
        let mut root: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let mut errs = ConfigErrors::default();
            errs.push(
                "(file)",
                "(not valid TOML)",
                format!("TOML syntax: {}", e.to_string().trim()),
            );
            errs
        })?;
        let dir = dir_of(path);
        let pipeline = root.remove("pipeline");
        let stages = root.remove("stage");
        let settings = root.remove("settings");
        let cases = root.remove("case");
        for k in root.keys() {
            errors.push(
                k.clone(),
                "(unknown key)",
                "pipeline, stage, settings, case",
            );
        }
        let (pipeline_text, base_dir, pipeline_label) = match (pipeline, stages) {
            (Some(_), Some(_)) => {
                errors.push(
                    "pipeline",
                    "(set together with [[stage]])",
                    "either pipeline = \"FILE\" or [[stage]] tables, not both",
                );
                (String::new(), dir.clone(), None)
            }
            (None, None) => {
                errors.push(
                    "pipeline",
                    "(missing)",
                    "pipeline = \"FILE\" (a pipeline.toml whose stages are tested) or [[stage]] tables",
                );
                (String::new(), dir.clone(), None)
            }
            (Some(toml::Value::String(p)), None) => {
                if settings.is_some() {
                    errors.push(
                        "settings",
                        "(set together with pipeline)",
                        "[settings] only with [[stage]] tables (the pipeline file has its own)",
                    );
                }
                let file = dir.join(&p);
                match std::fs::read_to_string(&file) {
                    Ok(t) => (t, dir_of(&file), Some(p)),
                    Err(e) => {
                        errors.push(
                            "pipeline",
                            format!("{p:?}"),
                            format!("a readable pipeline file, relative to the test file ({e})"),
                        );
                        (String::new(), dir.clone(), None)
                    }
                }
            }
            (Some(other), None) => {
                errors.push(
                    "pipeline",
                    short(&other),
                    "a file name (string), relative to the test file",
                );
                (String::new(), dir.clone(), None)
            }
            (None, Some(stages)) => {
                // Only the stages are compiled; a sink is required by the
                // schema and never used (no agent runs).
                let mut t = toml::Table::new();
                if let Some(s) = settings {
                    t.insert("settings".into(), s);
                }
                t.insert("stage".into(), stages);
                let mut sink = toml::Table::new();
                sink.insert("kind".into(), "agent".into());
                sink.insert("preset".into(), "demo".into());
                t.insert("sink".into(), toml::Value::Table(sink));
                (t.to_string(), dir.clone(), None)
            }
        };
        let cases = match cases {
            Some(toml::Value::Array(items)) if !items.is_empty() => items,
            Some(toml::Value::Array(_)) | None => {
                errors.push("case", "(missing)", "at least one [[case]] table");
                Vec::new()
            }
            Some(other) => {
                errors.push("case", short(&other), "[[case]] tables");
                Vec::new()
            }
        };
        let mut parsed = Vec::new();
        for (i, c) in cases.into_iter().enumerate() {
            let prefix = format!("case[{i}]");
            match c {
                toml::Value::Table(t) => {
                    if let Some(c) = read_case(&prefix, t, &dir, &mut errors) {
                        parsed.push(Case { index: i, ..c });
                    }
                }
                other => errors.push(prefix, short(&other), "a table ([[case]])"),
            }
        }
        let mut names: Vec<&str> = parsed.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        for w in names.windows(2).filter(|w| w[0] == w[1]) {
            errors.push(
                "case.name",
                format!("{:?}", w[0]),
                "a name no other case uses",
            );
        }
        Ok((
            TestFile {
                pipeline_text,
                base_dir,
                pipeline_label,
                cases: parsed,
            },
            errors,
        ))
    }

    /// Compiles the stage chain afresh (each case gets its own: plugin
    /// globals and dedup tables do not leak from one case into the next).
    fn compile(&self, ov: &Overrides) -> Result<Vec<Box<dyn Stage>>, ConfigErrors> {
        let opts = CompileOptions {
            base_dir: self.base_dir.clone(),
            skip_sources: true,
        };
        compile::compile(&self.pipeline_text, ov, &opts)
            .map(|c| c.stages)
            .map_err(|mut errs| {
                if let Some(label) = &self.pipeline_label {
                    for e in &mut errs.0 {
                        e.key = format!("{label}: {}", e.key);
                    }
                }
                errs
            })
    }
}

fn read_case(
    prefix: &str,
    mut t: toml::Table,
    dir: &Path,
    errors: &mut ConfigErrors,
) -> Option<Case> {
    let mut ok = true;
    let mut err = |key: &str, value: String, allowed: &str| {
        errors.push(format!("{prefix}.{key}"), value, allowed);
    };
    let name = match t.remove("name") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(other) => {
            err("name", short(&other), "a non-empty string");
            None
        }
        None => {
            err("name", "(missing)".into(), "a non-empty string");
            None
        }
    };
    let expect = match t.remove("expect") {
        Some(toml::Value::String(s)) if EXPECTS.contains(&s.as_str()) => Some(s),
        Some(other) => {
            err(
                "expect",
                short(&other),
                &format!("one of {}", EXPECTS.join(", ")),
            );
            None
        }
        None => {
            err(
                "expect",
                "(missing)".into(),
                &format!("one of {}", EXPECTS.join(", ")),
            );
            None
        }
    };
    let stage = match t.remove("stage") {
        None => None,
        Some(toml::Value::String(s)) => {
            if expect.as_deref() == Some("passed") {
                err(
                    "stage",
                    format!("{s:?}"),
                    "only with an expect other than \"passed\" (the stage that stops the event)",
                );
                ok = false;
            }
            Some(s)
        }
        Some(other) => {
            err(
                "stage",
                short(&other),
                "a stage name, e.g. \"wasm:my-filter\"",
            );
            ok = false;
            None
        }
    };
    let mut fields = Vec::new();
    match t.remove("fields") {
        None => {}
        Some(toml::Value::Table(f)) => {
            if expect.as_deref().is_some_and(|e| e != "passed") {
                err(
                    "fields",
                    "(set)".into(),
                    "only with expect = \"passed\" (fields are checked as the event leaves the last stage)",
                );
                ok = false;
            }
            for (k, v) in f {
                let known = FIELDS.contains(&k.as_str())
                    || k.strip_prefix("raw.").is_some_and(|r| !r.is_empty());
                if !known {
                    err(
                        &format!("fields.{k}"),
                        "(unknown field)".into(),
                        &format!("one of {}, raw.<key>[.<key>…]", FIELDS.join(", ")),
                    );
                    ok = false;
                    continue;
                }
                match scalar_text(&v) {
                    Some(s) => fields.push((k, s)),
                    None => {
                        err(
                            &format!("fields.{k}"),
                            short(&v),
                            "a string, number or boolean",
                        );
                        ok = false;
                    }
                }
            }
        }
        Some(other) => {
            err("fields", short(&other), "a table of field = value");
            ok = false;
        }
    }
    let plugin_failures = match t.remove("plugin_failures") {
        None => 0,
        Some(toml::Value::Integer(n)) if n >= 0 => n as u64,
        Some(other) => {
            err(
                "plugin_failures",
                short(&other),
                "an integer >= 0 (failed plugin calls this case expects; default 0)",
            );
            ok = false;
            0
        }
    };
    let mut before = Vec::new();
    match t.remove("before") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (j, v) in items.into_iter().enumerate() {
                let shown = short(&v);
                match payload(v) {
                    Ok(p) => before.push(p),
                    Err(e) => {
                        err(
                            &format!("before[{j}]"),
                            shown,
                            &format!("an inline table or a string of JSON ({e})"),
                        );
                        ok = false;
                    }
                }
            }
        }
        Some(other) => {
            err(
                "before",
                short(&other),
                "an array of payloads (inline tables or JSON strings)",
            );
            ok = false;
        }
    }
    let line = match t.remove("line") {
        None => None,
        Some(toml::Value::Integer(n)) if n >= 1 => Some(n as usize),
        Some(other) => {
            err("line", short(&other), "a line number >= 1 of input_file");
            ok = false;
            None
        }
    };
    let mut inputs = Vec::new();
    match (t.remove("input"), t.remove("input_file")) {
        (Some(_), Some(_)) => {
            err(
                "input",
                "(set together with input_file)".into(),
                "either input or input_file, not both",
            );
            ok = false;
        }
        (None, None) => {
            err(
                "input",
                "(missing)".into(),
                "input = { … } or a JSON string, or input_file = \"FILE.jsonl\"",
            );
            ok = false;
        }
        (Some(v), None) => {
            if line.is_some() {
                err("line", "(set)".into(), "only with input_file");
                ok = false;
            }
            let shown = short(&v);
            match payload(v) {
                Ok(p) => inputs.push(Input {
                    label: "input".into(),
                    payload: p,
                }),
                Err(e) => {
                    err(
                        "input",
                        shown,
                        &format!("an inline table or a string of JSON ({e})"),
                    );
                    ok = false;
                }
            }
        }
        (None, Some(toml::Value::String(f))) => match std::fs::read_to_string(dir.join(&f)) {
            Ok(text) => {
                let lines: Vec<(usize, &str)> = text
                    .lines()
                    .enumerate()
                    .map(|(n, l)| (n + 1, l))
                    .filter(|(_, l)| !l.trim().is_empty())
                    .collect();
                let chosen: Vec<(usize, &str)> = match line {
                    Some(n) => lines.iter().copied().filter(|(m, _)| *m == n).collect(),
                    None => lines,
                };
                if chosen.is_empty() {
                    err(
                        if line.is_some() { "line" } else { "input_file" },
                        match line {
                            Some(n) => n.to_string(),
                            None => format!("{f:?}"),
                        },
                        "a non-empty line of the input file (one JSON payload per line)",
                    );
                    ok = false;
                }
                for (n, l) in chosen {
                    // Like `runner replay`: a line that is not JSON is fed
                    // as text (and ends invalid), as a live source would.
                    let payload =
                        serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_string()));
                    inputs.push(Input {
                        label: format!("{f} line {n}"),
                        payload,
                    });
                }
            }
            Err(e) => {
                err(
                    "input_file",
                    format!("{f:?}"),
                    &format!("a readable JSON-lines file, relative to the test file ({e})"),
                );
                ok = false;
            }
        },
        (None, Some(other)) => {
            err(
                "input_file",
                short(&other),
                "a file name (string), relative to the test file",
            );
            ok = false;
        }
    }
    for k in t.keys() {
        err(k, "(unknown key)".into(), CASE_KEYS);
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(Case {
        index: 0,
        name: name?,
        before,
        inputs,
        expect: expect?,
        stage,
        fields,
        plugin_failures,
    })
}

/// The value of a `[case.fields]` key in `event`.
fn field(event: &Event, key: &str) -> Option<String> {
    let r = &event.resource;
    Some(match key {
        "fault_id" => event.fault_id.clone()?,
        "cluster" => event.cluster.clone(),
        "resource.api_version" => r.api_version.clone(),
        "resource.kind" => r.kind.clone(),
        "resource.name" => r.name.clone(),
        "resource.namespace" => r.namespace.clone(),
        "resource.uid" => r.uid.clone(),
        "fault_type" => event.fault_type.clone(),
        "severity" => event.severity.as_str().to_string(),
        "context" => event.context.clone(),
        "timestamp" => event.timestamp.clone()?,
        raw => {
            let mut v: &Value = &event.raw;
            for part in raw.strip_prefix("raw.")?.split('.') {
                v = v.get(part)?;
            }
            match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        }
    })
}

/// Where one input ended.
struct Got {
    outcome: String,
    stage: Option<String>,
    reason: String,
    event: Option<Event>,
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.stage, self.outcome.as_str()) {
            (_, "passed") => f.write_str("passed (reaches the router)"),
            (Some(s), o) => write!(f, "{o} by {s} ({})", self.reason),
            (None, o) => write!(f, "{o} ({})", self.reason),
        }
    }
}

async fn feed(chain: &StageChain, recorder: &Recorder, payload: Value) -> Got {
    let source: Arc<str> = Arc::from("test");
    recorder.received();
    let dropped_before: Vec<u64> = recorder.stage_stats().iter().map(|s| s.dropped).collect();
    let raw = RawPayload {
        data: payload,
        source,
        cluster_fill: None,
        received_at: tokio::time::Instant::now(),
    };
    match chain.process(raw).await {
        ChainResult::Passed(env) => Got {
            outcome: "passed".into(),
            stage: None,
            reason: String::new(),
            event: Some(env.event),
        },
        ChainResult::Stopped(o, reason) => {
            // The stopping stage is the one whose drop counter moved.
            let stage = recorder
                .stage_stats()
                .iter()
                .zip(dropped_before)
                .find(|(s, before)| s.dropped > *before)
                .map(|(s, _)| s.name.clone());
            Got {
                outcome: o.as_str().to_string(),
                stage,
                reason: reason.into_owned(),
                event: None,
            }
        }
    }
}

/// Runs one case on a fresh chain; returns the mismatches.
async fn run_case(case: &Case, stages: Vec<Box<dyn Stage>>) -> Vec<String> {
    let recorder = Arc::new(Recorder::new(stages.into()));
    let chain = StageChain::new(recorder.clone());
    let mut problems = Vec::new();
    for p in &case.before {
        feed(&chain, &recorder, p.clone()).await;
    }
    for input in &case.inputs {
        let got = feed(&chain, &recorder, input.payload.clone()).await;
        let stage_ok = case
            .stage
            .as_ref()
            .is_none_or(|s| got.stage.as_deref() == Some(s.as_str()));
        if got.outcome != case.expect || !stage_ok {
            let expected = match &case.stage {
                Some(s) => format!("{} by {s}", case.expect),
                None => case.expect.clone(),
            };
            problems.push(format!("{}: expected {expected}, got {got}", input.label));
            continue;
        }
        if let Some(ev) = &got.event {
            for (k, want) in &case.fields {
                let have = field(ev, k);
                let same = match (k.as_str(), &have) {
                    ("severity", Some(h)) => h.eq_ignore_ascii_case(want),
                    (_, Some(h)) => h == want,
                    (_, None) => false,
                };
                if !same {
                    let have = have.map_or_else(|| "(absent)".into(), |h| format!("{h:?}"));
                    problems.push(format!(
                        "{}: field {k}: expected {want:?}, got {have}",
                        input.label
                    ));
                }
            }
        }
    }
    let failures: u64 = recorder.stages().iter().map(|s| s.health().errors).sum();
    if failures != case.plugin_failures {
        problems.push(format!(
            "plugin failures: expected {}, got {failures} (the warnings above say what failed)",
            case.plugin_failures
        ));
    }
    problems
}

/// `runner test FILE`. Exit 0: every case passed; 1: a case failed;
/// 2: the test file (or the pipeline it names) is invalid.
pub(super) async fn run(path: &Path, ov: &Overrides) -> ExitCode {
    let format = ov
        .get(crate::settings::LOG_FORMAT.env)
        .map_or("text", |(v, _)| v)
        .to_string();
    // As in replay: what plugins log (init included) and failures' warnings.
    super::init_logging(
        "warn,plugin=debug,plugins_wasm=warn",
        &format,
        ov.environment(),
    );
    // Each case compiles the chain again: the components compile once.
    plugins_wasm::remember_compiled(true);
    let (file, mut errs) = match TestFile::parse(path) {
        Ok(f) => f,
        Err(errs) => {
            eprint!("error: {}: {errs}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The stages compile even when the cases have errors: all at once.
    let first = if file.pipeline_text.is_empty() {
        None
    } else {
        match file.compile(ov) {
            Ok(stages) => Some(stages),
            Err(e) => {
                errs.0.extend(e.0);
                None
            }
        }
    };
    if let Some(stages) = &first {
        let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
        for c in &file.cases {
            if let Some(s) = &c.stage
                && !names.contains(&s.as_str())
            {
                errs.push(
                    format!("case[{}].stage", c.index),
                    format!("{s:?}"),
                    format!("one of the chain's stages: {}", names.join(", ")),
                );
            }
        }
    }
    let first = match first {
        Some(stages) if errs.is_empty() => stages,
        _ => {
            eprint!("error: {}: {errs}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    let mut first = Some(first);
    let mut failed = 0usize;
    let out = std::io::stdout();
    for case in &file.cases {
        let stages = match first.take() {
            Some(s) => s,
            None => match file.compile(ov) {
                Ok(s) => s,
                Err(e) => {
                    // It compiled a moment ago: a plugin file changed or
                    // its init is not deterministic.
                    eprint!("error: compiling the stages again failed: {e}");
                    return ExitCode::from(EXIT_FATAL);
                }
            },
        };
        let problems = run_case(case, stages).await;
        let mut out = out.lock();
        if problems.is_empty() {
            let _ = writeln!(out, "ok    {}", case.name);
        } else {
            failed += 1;
            let _ = writeln!(out, "FAIL  {}", case.name);
            for p in problems {
                let _ = writeln!(out, "      {p}");
            }
        }
    }
    let total = file.cases.len();
    let _ = writeln!(
        out.lock(),
        "\n{total} case{}: {} passed, {failed} failed",
        if total == 1 { "" } else { "s" },
        total - failed
    );
    if failed > 0 {
        ExitCode::from(EXIT_FATAL)
    } else {
        ExitCode::from(EXIT_OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<TestFile, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::write(dir.path().join("rec.jsonl"), "{\"a\":1}\n\n{\"b\":2}\n").unwrap();
        TestFile::read(&p)
    }

    #[test]
    fn reads_cases_with_inline_json_and_jsonl_inputs() {
        let f = read(
            r#"
[[stage]]
kind = "severity"
threshold = "ERROR"

[[case]]
name = "a"
input = { cluster = "c", severity = "info" }
expect = "filtered"
stage = "severity"

[[case]]
name = "b"
input = '{"cluster": "c"}'
before = [{ x = 1 }, '{"y": 2}']
expect = "passed"
fields = { severity = "critical", "raw.resource.name" = "n", plugin_failures = 1 }

[[case]]
name = "c"
input_file = "rec.jsonl"
expect = "invalid"
"#,
        );
        // `plugin_failures` inside fields is an unknown field name.
        let e = f.err().expect("unknown field").to_string();
        assert!(
            e.contains("case[1].fields.plugin_failures: invalid value (unknown field)"),
            "{e}"
        );

        let f = read(
            r#"
[[stage]]
kind = "severity"

[[case]]
name = "b"
input = '{"cluster": "c"}'
before = [{ x = 1 }, '{"y": 2}']
expect = "passed"
fields = { severity = "critical", "raw.resource.name" = "n" }
plugin_failures = 1

[[case]]
name = "c"
input_file = "rec.jsonl"
expect = "invalid"
"#,
        )
        .unwrap();
        assert!(f.pipeline_text.contains("preset = \"demo\""));
        let b = &f.cases[0];
        assert_eq!(b.before.len(), 2);
        assert_eq!(b.inputs[0].payload["cluster"], "c");
        assert_eq!(b.plugin_failures, 1);
        assert_eq!(b.fields.len(), 2);
        let c = &f.cases[1];
        let labels: Vec<&str> = c.inputs.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(labels, ["rec.jsonl line 1", "rec.jsonl line 3"]);
    }

    #[test]
    fn every_error_at_once_with_key_value_and_allowed() {
        let e = read(
            r#"
pipeline = "nope.toml"
typo = 1

[[stage]]
kind = "severity"

[[case]]
input = "{not json"
expect = "dropped_by_magic"
stage = 5

[[case]]
name = "x"
input_file = "rec.jsonl"
line = 2
expect = "filtered"
fields = { severity = "ERROR" }
color = "red"
"#,
        )
        .err()
        .expect("bad file")
        .to_string();
        for needle in [
            "typo: unknown key; allowed keys: pipeline, stage, settings, case",
            "pipeline: invalid value (set together with [[stage]]); allowed: either",
            "case[0].name: missing; expected a non-empty string",
            "case[0].expect: invalid value \"dropped_by_magic\"; allowed: one of passed, filtered",
            "case[0].stage: invalid value 5",
            "case[0].input: invalid value \"{not json\"; allowed: an inline table or a string of JSON (not valid JSON",
            "case[1].line: invalid value 2; allowed: a non-empty line",
            "case[1].fields: invalid value (set); allowed: only with expect = \"passed\"",
            "case[1].color: unknown key; allowed keys: name, input,",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
    }

    #[test]
    fn fields_read_typed_and_raw_values() {
        let ev = Event::from_str(
            r#"{"cluster":"prod","faultId":"a","faultType":"CrashLoop","severity":"warning","resource":{"kind":"Pod","name":"p","namespace":"ns"},"context":"c","logs":{"n":3}}"#,
            None,
        )
        .unwrap();
        assert_eq!(field(&ev, "severity").as_deref(), Some("WARNING"));
        assert_eq!(field(&ev, "resource.namespace").as_deref(), Some("ns"));
        assert_eq!(field(&ev, "raw.resource.kind").as_deref(), Some("Pod"));
        assert_eq!(field(&ev, "raw.logs.n").as_deref(), Some("3"));
        assert_eq!(field(&ev, "raw.nothing"), None);
        assert_eq!(field(&ev, "timestamp"), None);
    }
}
