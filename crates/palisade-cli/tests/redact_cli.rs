//! `palisade redact`, run as the built binary: stdin to stdout, every mode, large and non-UTF-8 input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], envs: &[(&str, &str)], input: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.arg("redact").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env_remove("PALISADE_TOKEN_KEY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the palisade binary starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // Feed stdin from another thread so a large input cannot deadlock against a full stdout pipe.
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("the palisade binary runs");
    let fed = feeder.join().expect("feeder thread");
    // A run that refuses its arguments exits before reading stdin, so the feeder may see a broken pipe then;
    // a successful run must have accepted every byte.
    if out.status.success() {
        fed.expect("stdin accepted everything");
    }
    out
}

#[test]
fn masks_cards_cvvs_and_tracks_and_keeps_other_bytes() {
    let input = b"2026-11-22 charge card=4242 4242 4242 4242 cvv: 123 ok\n\
                  \xff\xfe raw bytes id_5555555555554444 ts=1700000000000\n\
                  %B4111111111111111^DOE/JOHN^2512101000?\n";
    let out = run(&[], &[], input);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.stdout,
        b"2026-11-22 charge card=**** **** **** 4242 cvv: *** ok\n\
          \xff\xfe raw bytes id_************4444 ts=1700000000000\n\
          [REDACTED_TRACK1]\n"
    );
}

#[test]
fn every_mode() {
    let input = b"pan 4111111111111111 end";
    let out = run(&["--mode", "bin-last4"], &[], input);
    assert_eq!(out.stdout, b"pan 411111******1111 end");
    let out = run(&["--mode", "full"], &[], input);
    assert_eq!(out.stdout, b"pan [REDACTED_PAN] end");
    let key = [("MY_KEY", "0123456789abcdef0123456789abcdef")];
    let a = run(&["--mode", "token", "--token-key-env", "MY_KEY"], &key, b"x 4111 1111 1111 1111 y");
    let b = run(&["--mode", "token", "--token-key-env", "MY_KEY"], &key, b"x 4111111111111111 y");
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(a.stdout, b.stdout, "one card, one token");
    let text = String::from_utf8(a.stdout).expect("utf-8");
    assert!(text.starts_with("x [PAN_TOKEN:") && !text.contains("1111"), "{text}");
    let other = run(
        &["--mode", "token", "--token-key-env", "K2"],
        &[("K2", "another key of enough length, 32+ bytes")],
        b"x 4111 1111 1111 1111 y",
    );
    assert_eq!(other.status.code(), Some(0));
    assert_ne!(other.stdout, text.as_bytes(), "another key, another token");
}

#[test]
fn token_mode_without_a_key_is_a_usage_error() {
    let out = run(&["--mode", "token"], &[], b"4111111111111111");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PALISADE_TOKEN_KEY"));
    let out = run(&["--mode", "nope"], &[], b"");
    assert_eq!(out.status.code(), Some(2));
    // Issue 16, finding 11: a key too short for HMAC-SHA256 to mean something is a usage error too.
    let out = run(&["--mode", "token", "--token-key-env", "SHORT"], &[("SHORT", "12345")], b"4111111111111111");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing is written with a weak key");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"), "{out:?}");
}

#[test]
fn large_input_streams_and_matches_the_library() {
    // ~6 MiB: cards straddle every 64 KiB read boundary somewhere, plus a long line with no newline at all.
    let mut input = Vec::new();
    let mut i = 0u64;
    while input.len() < 6 * 1024 * 1024 {
        writeln!(input, "line {i} order={} card 4000 0566 5566 5556 note", 100_000_000_000u64 + i).expect("vec");
        if i.is_multiple_of(1000) {
            input.extend_from_slice(&b"x ".repeat(40_000));
            input.extend_from_slice(b"5105105105105100\xc3\x28");
        }
        i += 1;
    }
    let want = palisade_redaction::redact_bytes(&input).into_owned();
    assert_ne!(want, input);
    let out = run(&[], &[], &input);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout.len(), want.len());
    assert!(out.stdout == want, "streamed output differs from one-shot redaction");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("4000 0566 5566 5556") && !text.contains("5105105105105100"));
}

#[test]
fn empty_input_is_fine() {
    let out = run(&[], &[], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

/// `palisade redact < big.log | head`: the reader going away ends the run with 0, quietly.
#[test]
fn a_closed_stdout_exits_0_without_a_message() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("redact")
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the palisade binary starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feeder = std::thread::spawn(move || stdin.write_all(&b"card 4242424242424242\n".repeat(10_000)));
    let out = child.wait_with_output().expect("the palisade binary runs");
    let _ = feeder.join();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}
