//! `runner plugin new --lang rust|ts|python NAME`: writes a plugin folder
//! that builds on its own (the WIT file and build script included) and
//! carries a `runner test` case file that its build passes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{EXIT_CONFIG, EXIT_FATAL, EXIT_OK};

const WIT: &str = include_str!("../../../plugins-wasm/wit/event-runner-plugin.wit");
const TESTS: &str = include_str!("scaffold/tests.toml");
const README: &str = include_str!("scaffold/README.md");
// The TypeScript declarations of the interface are the example's own.
const TS_TYPES: &str =
    include_str!("../../../plugins-wasm/examples/typescript/namespace-deny/plugin-types.ts");
const TS_HOST: &str =
    include_str!("../../../plugins-wasm/examples/typescript/namespace-deny/host.d.ts");
const TS_CONFIG: &str =
    include_str!("../../../plugins-wasm/examples/typescript/namespace-deny/tsconfig.json");

const LANGS: &str = "rust, ts, python";

/// Files of a language's scaffold: (path in the folder, template, executable).
fn files(lang: &str) -> Option<Vec<(&'static str, &'static str, bool)>> {
    let mut f = match lang {
        "rust" => vec![
            (
                "Cargo.toml",
                include_str!("scaffold/rust/Cargo.toml"),
                false,
            ),
            (
                "rust-toolchain.toml",
                include_str!("scaffold/rust/rust-toolchain.toml"),
                false,
            ),
            ("src/lib.rs", include_str!("scaffold/rust/lib.rs"), false),
            ("build.sh", include_str!("scaffold/rust/build.sh"), true),
        ],
        "ts" => vec![
            (
                "package.json",
                include_str!("scaffold/ts/package.json"),
                false,
            ),
            ("plugin.ts", include_str!("scaffold/ts/plugin.ts"), false),
            ("plugin-types.ts", TS_TYPES, false),
            ("host.d.ts", TS_HOST, false),
            ("tsconfig.json", TS_CONFIG, false),
            ("build.sh", include_str!("scaffold/ts/build.sh"), true),
        ],
        "python" => vec![
            ("app.py", include_str!("scaffold/python/app.py"), false),
            (
                "requirements.txt",
                include_str!("scaffold/python/requirements.txt"),
                false,
            ),
            ("build.sh", include_str!("scaffold/python/build.sh"), true),
        ],
        _ => return None,
    };
    f.extend([
        ("wit/event-runner-plugin.wit", WIT, false),
        ("tests.toml", TESTS, false),
        ("README.md", README, false),
    ]);
    Some(f)
}

/// A name that is at once a crate, an npm package, a file stem and a stage
/// label: lowercase letters, digits and `-`, starting with a letter.
fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && !n.ends_with('-')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn render(template: &str, name: &str, lang: &str) -> String {
    // Interpreted guests need 10-13 MiB to start and ~20x a Rust plugin's
    // time per call (docs/plugins.md, "Choosing timeout_ms").
    let (timeout, memory, lang_name, toolchain) = match lang {
        "rust" => (
            "20",
            "16",
            "Rust",
            "# Rust: rustup (rust-toolchain.toml adds the wasm32-wasip2 target)",
        ),
        "ts" => (
            "50",
            "64",
            "TypeScript",
            "npm install                     # tsc and componentize-js, versions from package.json",
        ),
        _ => (
            "50",
            "64",
            "Python",
            "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt\nexport COMPONENTIZE_PY=.venv/bin/componentize-py",
        ),
    };
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{timeout_ms}}", timeout)
        .replace("{{max_memory_mb}}", memory)
        .replace("{{lang}}", lang_name)
        .replace("{{lang_flag}}", lang)
        .replace("{{toolchain}}", toolchain)
}

/// Writes the scaffold into `dir/NAME`; the folder must not exist.
fn create(lang: &str, name: &str, dir: &Path) -> Result<PathBuf, Vec<String>> {
    let mut errors = Vec::new();
    let files = files(lang);
    if files.is_none() {
        errors.push(format!(
            "--lang: invalid value {lang:?}; allowed: one of {LANGS}"
        ));
    }
    if !valid_name(name) {
        errors.push(format!(
            "NAME: invalid value {name:?}; allowed: 1 to 64 of a-z 0-9 -, starting with a letter (it names the crate or package, the .wasm file and the stage wasm:NAME)"
        ));
    }
    let root = dir.join(name);
    if root.exists() {
        errors.push(format!(
            "NAME: invalid value {name:?}; allowed: a folder that does not exist yet ({} exists)",
            root.display()
        ));
    }
    let Some(files) = files.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let write = |rel: &str, text: &str, exec: bool| -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&path, text)?;
        if exec {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    };
    for (rel, template, exec) in files {
        write(rel, &render(template, name, lang), exec)
            .map_err(|e| vec![format!("cannot write {}: {e}", root.join(rel).display())])?;
    }
    Ok(root)
}

/// `runner plugin new`.
pub(super) fn run(lang: &str, name: &str, dir: &Path) -> ExitCode {
    match create(lang, name, dir) {
        Ok(root) => {
            super::print_stdout(&format!(
                "created {}\n  cd {}\n  ./build.sh\n  runner test tests.toml\n(see README.md there)\n",
                root.display(),
                root.display()
            ));
            ExitCode::from(EXIT_OK)
        }
        Err(errs) => {
            let fatal = errs.iter().any(|e| e.starts_with("cannot write"));
            for e in &errs {
                eprintln!("error: {e}");
            }
            ExitCode::from(if fatal { EXIT_FATAL } else { EXIT_CONFIG })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_renders_without_placeholders() {
        for lang in ["rust", "ts", "python"] {
            let dir = tempfile::tempdir().unwrap();
            let root = create(lang, "my-filter", dir.path()).unwrap();
            for (rel, _, _) in files(lang).unwrap() {
                let text = std::fs::read_to_string(root.join(rel)).unwrap();
                assert!(!text.contains("{{"), "{lang} {rel}:\n{text}");
            }
            let tests = std::fs::read_to_string(root.join("tests.toml")).unwrap();
            assert!(tests.contains("stage = \"wasm:my-filter\""), "{tests}");
            assert!(tests.contains("path = \"my-filter.wasm\""), "{tests}");
        }
        let dir = tempfile::tempdir().unwrap();
        let root = create("rust", "my-filter", dir.path()).unwrap();
        let build = std::fs::read_to_string(root.join("build.sh")).unwrap();
        assert!(
            build.contains("release/my_filter.wasm\" my-filter.wasm"),
            "{build}"
        );
    }

    #[test]
    fn bad_language_name_and_existing_folder_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("Bad_Name")).unwrap();
        let errs = create("go", "Bad_Name", dir.path()).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("--lang: invalid value \"go\"; allowed: one of rust, ts, python"));
        assert!(errs[1].contains("NAME: invalid value \"Bad_Name\""));
        assert!(errs[2].contains("a folder that does not exist yet"));
        for ok in ["a", "drop-noise", "x9"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a_b", "a-", "A"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
