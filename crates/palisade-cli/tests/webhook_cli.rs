//! `palisade webhook sign|verify`, run as a process: output, exit codes 0/1/2, the body read byte for byte.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn palisade(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the palisade binary starts");
    // A usage error may exit before reading stdin; a broken pipe then is expected.
    let _ = child.stdin.take().expect("piped").write_all(stdin);
    child.wait_with_output().expect("the palisade binary finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr_kind(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or_default().to_owned()
}

// Standard Webhooks spec vector (standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py
// `test_sign_function`, libraries/go/webhook_test.go `TestWebhookSign`).
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

#[test]
fn sign_prints_each_schemes_header_value() {
    let o = palisade(
        &["webhook", "sign", "--scheme", "standard", "--secret", SW_SECRET, "--id", SW_ID, "--timestamp", "1614265330"],
        SW_BODY,
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o), format!("{SW_SIG}\n"));

    // Stripe: HMAC-SHA256(key = "whsec_test_secret", "1700000000.{body}"), cross-checked with
    // `printf '%s' '1700000000.{"id":"evt_1","object":"event"}' | openssl dgst -sha256 -hmac whsec_test_secret`.
    let o = palisade(
        &["webhook", "sign", "--scheme", "stripe", "--secret", "whsec_test_secret", "--timestamp", "1700000000"],
        br#"{"id":"evt_1","object":"event"}"#,
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o), "t=1700000000,v1=0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd\n");

    // GitHub's documented example.
    let o = palisade(
        &["webhook", "sign", "--scheme", "github", "--secret", "It's a Secret to Everybody"],
        b"Hello, World!",
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o), "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17\n");

    // Without --timestamp, Stripe signs the current time.
    let o = palisade(&["webhook", "sign", "--scheme", "stripe", "--secret", "whsec_x"], b"{}");
    let t: i64 = stdout(&o).trim().strip_prefix("t=").unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(t > 1_700_000_000);
}

#[test]
fn verify_accepts_valid_and_names_each_failure() {
    let base = ["webhook", "verify", "--scheme", "standard", "--secret", SW_SECRET, "--id", SW_ID];
    let run = |extra: &[&str], body: &[u8]| palisade(&[&base[..], extra].concat(), body);

    let o = run(&["--signature", SW_SIG, "--timestamp", "1614265330", "--now", "1614265330"], SW_BODY);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "valid\n".to_owned()), "{o:?}");

    let cases: &[(&[&str], &[u8], &str)] = &[
        (&["--signature", SW_SIG, "--timestamp", "1614265330", "--now", "1614265631"], SW_BODY, "too_old"),
        (&["--signature", SW_SIG, "--timestamp", "1614265330", "--now", "1614265029"], SW_BODY, "too_far_in_future"),
        (
            &["--signature", SW_SIG, "--timestamp", "1614265330", "--now", "1614265330"],
            br#"{"test": 2432232315}"#,
            "no_signature_matched",
        ),
        (
            &["--signature", "v1,garbage", "--timestamp", "1614265330", "--now", "1614265330"],
            SW_BODY,
            "header_malformed",
        ),
        (&["--signature", SW_SIG, "--timestamp", "yesterday", "--now", "1614265330"], SW_BODY, "timestamp_malformed"),
    ];
    for (extra, body, kind) in cases {
        let o = run(extra, body);
        assert_eq!(o.status.code(), Some(1), "{kind}: {o:?}");
        assert_eq!(stderr_kind(&o), *kind, "{o:?}");
        assert!(o.stdout.is_empty());
    }

    // Tolerance widens the window.
    let o = run(
        &["--signature", SW_SIG, "--timestamp", "1614265330", "--now", "1614266330", "--tolerance", "1000"],
        SW_BODY,
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}

#[test]
fn verify_supports_rotation_and_every_scheme() {
    let body = b"{\"id\":\"evt_rot\"}\n";
    let sig = palisade(
        &["webhook", "sign", "--scheme", "stripe", "--secret", "whsec_old", "--timestamp", "1700000000"],
        body,
    );
    let sig = stdout(&sig).trim().to_owned();
    let verify = |secrets: &[&str]| {
        let mut args = vec!["webhook", "verify", "--scheme", "stripe", "--signature", &sig, "--now", "1700000000"];
        for s in secrets {
            args.extend(["--secret", s]);
        }
        palisade(&args, body)
    };
    assert_eq!(verify(&["whsec_new", "whsec_old"]).status.code(), Some(0));
    let o = verify(&["whsec_new"]);
    assert_eq!((o.status.code(), stderr_kind(&o)), (Some(1), "no_signature_matched".to_owned()));

    let sig = palisade(&["webhook", "sign", "--scheme", "github", "--secret", "gh"], body);
    let sig = stdout(&sig).trim().to_owned();
    let o = palisade(&["webhook", "verify", "--scheme", "github", "--secret", "gh", "--signature", &sig], body);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = palisade(&["webhook", "verify", "--scheme", "github", "--secret", "gh", "--signature", "sha1=00"], body);
    assert_eq!((o.status.code(), stderr_kind(&o)), (Some(1), "header_malformed".to_owned()));
}

#[test]
fn the_body_is_read_byte_for_byte() {
    // Trailing newlines, CRLF, NUL and invalid UTF-8 all count: dropping or re-encoding any byte breaks the MAC.
    let body: &[u8] = b"{\"a\":1}\r\n\x00\xff\xfe\n\n";
    let sign = |b: &[u8]| {
        let o = palisade(&["webhook", "sign", "--scheme", "github", "--secret", "k"], b);
        stdout(&o).trim().to_owned()
    };
    let sig = sign(body);
    // Independent HMAC of the same bytes: python3 -c 'import hmac,hashlib,sys;
    //   print(hmac.new(b"k", b"{\"a\":1}\r\n\x00\xff\xfe\n\n", hashlib.sha256).hexdigest())'
    assert_eq!(sig, "sha256=172d5f0f1f30aa79586ccf8cfc2c25024544b303492275b1b6722c02266e6b04");
    let o = palisade(&["webhook", "verify", "--scheme", "github", "--secret", "k", "--signature", &sig], body);
    assert_eq!(o.status.code(), Some(0));
    let o = palisade(
        &["webhook", "verify", "--scheme", "github", "--secret", "k", "--signature", &sig],
        &body[..body.len() - 1],
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &["webhook", "sign", "--scheme", "paypal", "--secret", "x"],
        &["webhook", "sign", "--scheme", "stripe"],
        &["webhook", "sign", "--scheme", "standard", "--secret", SW_SECRET],
        &["webhook", "sign", "--scheme", "standard", "--secret", "whsec_!!!", "--id", "m"],
        &["webhook", "sign", "--scheme", "stripe", "--secret", "x", "--timestamp", "soon"],
        &["webhook", "verify", "--scheme", "stripe", "--signature", "t=1,v1=00"],
        &["webhook", "verify", "--scheme", "stripe", "--secret", "x"],
        &["webhook", "verify", "--scheme", "standard", "--secret", SW_SECRET, "--signature", SW_SIG],
        &["webhook", "verify", "--scheme", "stripe", "--secret", "", "--signature", "t=1,v1=00"],
        &["webhook", "verify", "--scheme", "stripe", "--secret", "x", "--signature", "t=1,v1=00", "--now", "x"],
        &["webhook", "frobnicate"],
    ];
    for args in cases {
        let o = palisade(args, b"{}");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

/// Issue 16, finding 14: `sign` refuses a timestamp `verify` would never accept (16 digits, negative), as a usage
/// error (exit 2), and signs the largest one it accepts.
#[test]
fn sign_refuses_timestamps_verify_never_accepts() {
    for ts in ["1000000000000000", "9999999999999999", "-1"] {
        let o = palisade(
            &["webhook", "sign", "--scheme", "stripe", "--secret", "whsec_test_secret", "--timestamp", ts],
            b"{}",
        );
        assert_eq!(o.status.code(), Some(2), "{ts}: {o:?}");
        assert!(stdout(&o).is_empty(), "{ts}: nothing signed");
    }
    let max = "999999999999999";
    let o = palisade(
        &["webhook", "sign", "--scheme", "stripe", "--secret", "whsec_test_secret", "--timestamp", max],
        b"{}",
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let sig = stdout(&o).trim().to_owned();
    let o = palisade(
        &[
            "webhook",
            "verify",
            "--scheme",
            "stripe",
            "--secret",
            "whsec_test_secret",
            "--signature",
            &sig,
            "--now",
            max,
        ],
        b"{}",
    );
    assert_eq!(o.status.code(), Some(0), "what sign emits, verify reads: {o:?}");
}

/// Issue 16, finding 13: `verify` of a genuinely signed Stripe body that names its event id twice fails (exit 1)
/// with `event_id_ambiguous`, the check the webhook layer refuses it with.
#[test]
fn verify_names_an_ambiguous_event_id() {
    let body = br#"{"id":"evt_1","type":"charge.succeeded","id":"evt_2"}"#;
    let sig =
        palisade(&["webhook", "sign", "--scheme", "stripe", "--secret", "whsec_s", "--timestamp", "1700000000"], body);
    let sig = stdout(&sig).trim().to_owned();
    let verify = |body: &[u8]| {
        palisade(
            &[
                "webhook",
                "verify",
                "--scheme",
                "stripe",
                "--secret",
                "whsec_s",
                "--signature",
                &sig,
                "--now",
                "1700000000",
            ],
            body,
        )
    };
    let o = verify(body);
    assert_eq!((o.status.code(), stderr_kind(&o)), (Some(1), "event_id_ambiguous".to_owned()), "{o:?}");
    assert!(o.stdout.is_empty());
}

/// Runs the binary with stdout a pipe whose reader has already gone (`palisade … | head -c0`).
fn palisade_with_closed_stdout(args: &[&str], stdin: &[u8]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the palisade binary starts");
    let _ = child.stdin.take().expect("piped").write_all(stdin);
    child.wait_with_output().expect("the palisade binary finishes")
}

/// A reader that went away is not a failure and never a panic (before: exit 101 and a panic message): the
/// signature was made, the body verified, so the exit code is the one the result warrants.
#[test]
fn a_closed_stdout_keeps_the_exit_code_of_the_result() {
    let o = palisade_with_closed_stdout(&["webhook", "sign", "--scheme", "github", "--secret", "s"], b"body");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    let sig = stdout(&palisade(&["webhook", "sign", "--scheme", "github", "--secret", "s"], b"body"));
    let o = palisade_with_closed_stdout(
        &["webhook", "verify", "--scheme", "github", "--secret", "s", "--signature", sig.trim()],
        b"body",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}
