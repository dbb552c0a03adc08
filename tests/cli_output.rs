//! The command line's own output: a reader that closes stdout early (`| head`, `| grep -q`)
//! ends the command quietly, as it does `cat` or `grep`, instead of a panic and exit 101
//! that fails a `set -o pipefail` script.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `rampart hash-password` fed `stdin`, its stdout closed before it prints anything.
fn hash_password_into_a_closed_pipe(stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rampart");
    drop(child.stdout.take());
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("writing the password");
    drop(input);
    child.wait_with_output().expect("waiting for rampart")
}

#[test]
fn a_closed_stdout_ends_a_command_quietly_with_success() {
    let output = hash_password_into_a_closed_pipe(b"correct horse\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.is_empty(), "nothing to say on stderr: {stderr}");
}

#[test]
fn a_failing_command_still_fails_when_its_stdout_is_closed() {
    // An empty password is refused before anything is printed: the error is not mistaken
    // for a closed output.
    let output = hash_password_into_a_closed_pipe(b"\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("empty password"), "{stderr}");
}
