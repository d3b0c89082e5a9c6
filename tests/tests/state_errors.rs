//! A state directory the runner cannot use stops it at startup with a clear
//! error and exit code 2 (configuration), and the state file is left
//! exactly as it was: never a silent reset that loses the history.

use std::path::Path;
use std::time::Duration;

use e2e::Runner;

const T: Duration = Duration::from_secs(30);

/// A pipeline whose source is never reached (the state is opened first).
fn config(state_dir: &Path) -> String {
    format!(
        "[settings]\nlog_format = \"json\"\nstate_dir = {:?}\n\
         [[source]]\nkind = \"mcp\"\nendpoint = \"http://127.0.0.1:9/mcp\"\n\
         [sink]\nkind = \"agent\"\ncommand = [\"true\"]\nworkspace_root = \"{{dir}}/incidents\"\n",
        state_dir.display().to_string()
    )
}

/// Runs the runner on `state_dir`; returns (exit code, stderr text).
async fn refused(state_dir: &Path, user: Option<(u32, u32)>) -> (Option<i32>, String) {
    let mut b = Runner::builder(&config(state_dir));
    if let Some((u, g)) = user {
        b = b.as_user(u, g);
    }
    let mut r = b.spawn();
    let status = r.wait_exit(T).await.expect("the runner exits by itself");
    (status.code(), r.lines().join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_refused_and_left_untouched() {
    e2e::runner_bin();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(state.join("state.db"), &garbage).unwrap();
    let (code, out) = refused(&state, None).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("state.db"), "{out}");
    assert!(out.contains("not a readable SQLite database"), "{out}");
    assert!(out.contains("left untouched"), "{out}");
    assert_eq!(std::fs::read(state.join("state.db")).unwrap(), garbage);
    assert!(
        !out.contains("final statistics"),
        "nothing may start: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_runner_is_refused_and_left_untouched() {
    e2e::runner_bin();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A real state file, written by this runner.
    let mut r = Runner::builder(&config(&state)).spawn();
    assert!(
        r.wait_for_message("state store opened", T).await.is_some(),
        "{}",
        r.dump()
    );
    assert_eq!(r.stop(T).await.code(), Some(0), "{}", r.dump());
    // SQLite's header keeps `user_version` (our schema version) at byte 60,
    // big-endian: a newer runner would have written a higher one.
    let db = state.join("state.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    bytes[60..64].copy_from_slice(&999u32.to_be_bytes());
    std::fs::write(&db, &bytes).unwrap();
    let (code, out) = refused(&state, None).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("schema version 999"), "{out}");
    assert!(out.contains("newer runner"), "{out}");
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "the file was changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_state_directory_is_refused() {
    e2e::runner_bin();
    // Root writes anywhere: the runner runs as `nobody` here.
    let (uid, gid) = (65534, 65534);
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o555)).unwrap();
    let (code, out) = refused(&state, Some((uid, gid))).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not writable"), "{out}");
    assert!(out.contains(&state.display().to_string()), "{out}");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_never_share_a_state_directory() {
    e2e::runner_bin();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut first = Runner::builder(&config(&state)).spawn();
    assert!(
        first
            .wait_for_message("state store opened", T)
            .await
            .is_some(),
        "{}",
        first.dump()
    );
    let (code, out) = refused(&state, None).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("in use by another runner"), "{out}");
    assert_eq!(first.stop(T).await.code(), Some(0), "{}", first.dump());
}
