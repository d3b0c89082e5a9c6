//! Running an `AGENT_COMMAND` line without a shell when it needs none.
//!
//! Starting `sh -c LINE` costs a second `execve` and the shell's start-up
//! (about 1–2 ms of the spawn path, see docs/performance.md). A line made
//! only of plain words (no quotes, expansions, redirections, operators or
//! assignments) means the same thing split on blanks, so its program is
//! executed directly; anything else still goes through `sh -c`.

use std::io::Read;

/// Characters that never mean anything to `sh` inside a word.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ',' | '+' | '@' | '%' | ':')
}

/// The argv to execute `line` directly, when that is what `sh -c` would do:
/// every word is plain, the first is no assignment, and it names an
/// executable on `path` (or by absolute path) that starts with `#!` or is an
/// ELF file (a script without `#!` only runs through a shell). Builtins and
/// functions are not on `path`, so they keep the shell.
pub(super) fn direct_argv(line: &str, path: &str) -> Option<Vec<String>> {
    if !line.chars().all(|c| c == ' ' || c == '\t' || plain(c)) {
        return None;
    }
    let words: Vec<String> = line
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    let prog = words.first()?;
    // A relative path with a slash would be resolved against a different
    // directory by `execve` than by the shell's search: leave it to `sh`.
    if prog.contains('/') && !prog.starts_with('/') {
        return None;
    }
    let exe = super::presets::which(prog, path)?;
    let mut head = [0u8; 4];
    let n = std::fs::File::open(&exe).ok()?.read(&mut head).ok()?;
    let runnable = (n >= 2 && &head[..2] == b"#!") || (n == 4 && &head == b"\x7fELF");
    runnable.then_some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh_path() -> String {
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    }

    #[test]
    fn plain_words_run_directly() {
        let p = sh_path();
        assert_eq!(direct_argv("true", &p), Some(vec!["true".to_string()]));
        assert_eq!(
            direct_argv("  env  -u\tX  /tmp/a,b@c ", &p),
            Some(
                vec!["env", "-u", "X", "/tmp/a,b@c"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        let sh = super::super::presets::which("sh", &p).expect("sh on PATH");
        let abs = format!("{} -c x", sh.display());
        assert_eq!(direct_argv(&abs, "").map(|v| v.len()), Some(3));
    }

    #[test]
    fn anything_shell_keeps_the_shell() {
        let p = sh_path();
        for line in [
            "echo $INCIDENT_ID",
            "echo \"a b\"",
            "echo 'a'",
            "true > out",
            "true | cat",
            "true && true",
            "true; true",
            "echo ~",
            "ls *.md",
            "X=1 env",
            "cd /tmp",
            "exec true",
            "./agent.sh",
            "echo `id`",
            "echo a\\ b",
            "true\nid",
            "no-such-program-anywhere",
            "",
            "   ",
        ] {
            assert_eq!(direct_argv(line, &p), None, "{line:?}");
        }
    }

    #[test]
    fn scripts_without_shebang_keep_the_shell() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("bare");
        std::fs::write(&bare, "echo hi\n").unwrap();
        std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bang = dir.path().join("bang");
        std::fs::write(&bang, "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&bang, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().display().to_string();
        assert_eq!(direct_argv("bare", &path), None);
        assert_eq!(
            direct_argv("bang x", &path),
            Some(vec!["bang".into(), "x".into()])
        );
    }
}
