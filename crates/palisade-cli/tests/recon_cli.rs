//! `palisade recon`, run as a process: JSON lines, the summary, exit codes 0/1/2, --reject, report formats.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HEADER: &str = "id,amount,currency,status,created_at\n";

/// A fresh directory for one test's files.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-recon-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn write(dir: &Path, name: &str, body: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p.display().to_string()
}

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade")).args(args).output().expect("the palisade binary runs")
}

fn lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn agreeing_sides_exit_0_with_no_lines() {
    let d = dir("clean");
    let body = format!("{HEADER}a,12.34,USD,succeeded,2024-05-01T00:00:00Z\nb,500,JPY,paid,2024-05-01T00:00:00Z\n");
    let i = write(&d, "internal.csv", body.as_bytes());
    let g = write(&d, "gateway.csv", body.replace("paid", "captured").as_bytes());
    let o = palisade(&["recon", "--internal", &i, "--gateway", &g]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(err.contains("2 matched, 0 discrepancies, 0 pending"), "{err}");
    assert!(err.contains("USD: internal 12.34, gateway gross 12.34"), "{err}");
    assert!(!err.contains("rows read"), "no progress bar when stderr is not a terminal: {err}");
}

#[test]
fn discrepancies_exit_1_as_json_lines_with_both_sides() {
    let d = dir("diff");
    let i = write(
        &d,
        "internal.csv",
        format!(
            "{HEADER}a,12.34,USD,succeeded,2024-05-01T00:00:00Z\nb,1.000,BHD,succeeded,2024-05-01T00:00:00Z\n\
             c,5.00,USD,succeeded,2024-05-01T00:00:00Z\nlate,1.00,USD,succeeded,2024-05-01T23:30:00Z\n"
        )
        .as_bytes(),
    );
    let g = write(
        &d,
        "gateway.csv",
        format!(
            "{HEADER}a,12.35,USD,succeeded,2024-05-01T00:00:00Z\nb,1.000,BHD,refunded,2024-05-01T00:00:00Z\n\
             z,7.00,EUR,succeeded,2024-05-01T00:00:00Z\nz,7.00,EUR,succeeded,2024-05-01T00:00:00Z\n"
        )
        .as_bytes(),
    );
    let summary = d.join("summary.json").display().to_string();
    let o = palisade(&[
        "recon",
        "--internal",
        &i,
        "--gateway",
        &g,
        "--as-of",
        "2024-05-02T00:00:00Z",
        "--lag",
        "1h",
        "--summary-json",
        &summary,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let got = lines(&o);
    let kinds: Vec<(&str, &str)> =
        got.iter().map(|v| (v["type"].as_str().unwrap(), v["id"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [
            ("amount_mismatch", "a"),
            ("status_mismatch", "b"),
            ("missing_gateway", "c"),
            ("missing_internal", "z"),
            ("duplicate_gateway", "z"),
            ("pending", "late"),
        ]
    );
    assert_eq!(got[0]["internal"]["amount"], "12.34");
    assert_eq!(got[0]["gateway"]["amount"], "12.35");
    assert_eq!(got[0]["gateway"]["currency"], "USD");
    assert_eq!(got[1]["internal"]["amount"], "1.000");
    assert_eq!(got[1]["gateway"]["status"], "refunded");
    assert!(got[2].get("gateway").is_none() && got[2]["internal"]["line"] == 4);
    assert_eq!(got[4]["first"]["line"], 4);
    assert_eq!(got[4]["gateway"]["line"], 5);
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["discrepancies"], 5);
    assert_eq!(s["by_type"]["duplicate_gateway"], 1);
    assert_eq!(s["by_type"]["pending"], 1);
    assert_eq!(s["as_of"], "2024-05-02T00:00:00Z");
    assert_eq!(s["lag_seconds"], 3600);
    let usd = s["totals"].as_array().unwrap().iter().find(|t| t["currency"] == "USD").unwrap();
    assert_eq!(usd["internal"], "18.34");
    assert_eq!(usd["gateway_gross"], "12.35");
    assert_eq!(usd["difference"], "5.99");
}

#[test]
fn out_file_takes_the_lines() {
    let d = dir("out");
    let i = write(&d, "internal.csv", format!("{HEADER}a,1.00,USD,paid,2024-05-01T00:00:00Z\n").as_bytes());
    let g = write(&d, "gateway.csv", HEADER.as_bytes());
    let out = d.join("out.jsonl").display().to_string();
    let o = palisade(&["recon", "--internal", &i, "--gateway", &g, "--out", &out, "--lag", "0s"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let text = std::fs::read_to_string(&out).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("missing_gateway"), Some("a")));
}

#[test]
fn bad_input_exits_2_with_file_line_column_and_expectation() {
    let d = dir("bad");
    let g = write(&d, "gateway.csv", HEADER.as_bytes());
    let cases: [(&[u8], &str); 5] = [
        (b"a,12.x,USD,paid,2024-05-01T00:00:00Z\n", "internal.csv:2: column 2 (amount): invalid amount \"12.x\""),
        (b"a,1.00,XYZ,paid,2024-05-01T00:00:00Z\n", "internal.csv:2: column 3 (currency): unknown currency \"XYZ\""),
        (b"a,1.00,USD,paid,01/05/2024\n", "internal.csv:2: column 5 (created_at): bad timestamp \"01/05/2024\""),
        (b"a\xfe,1.00,USD,paid,2024-05-01T00:00:00Z\n", "internal.csv:2: column 1 (id): invalid UTF-8"),
        (b"a,12.345,USD,paid,2024-05-01T00:00:00Z\n", "internal.csv:2: column 2 (amount): 12.345 USD is finer"),
    ];
    for (row, expected) in cases {
        let mut body = HEADER.as_bytes().to_vec();
        body.extend_from_slice(row);
        let i = write(&d, "internal.csv", &body);
        let o = palisade(&["recon", "--internal", &i, "--gateway", &g]);
        assert_eq!(o.status.code(), Some(2), "{expected}");
        assert!(o.stdout.is_empty());
        let err = stderr(&o);
        assert!(err.starts_with("palisade recon: ") && err.contains(expected), "{expected}: {err}");
    }
    let i = write(&d, "internal.csv", b"id,amount,currency,created_at\n");
    let o = palisade(&["recon", "--internal", &i, "--gateway", &g]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("internal.csv:1: missing column \"status\""), "{}", stderr(&o));
    let o = palisade(&["recon", "--internal", "/nonexistent/ledger.csv", "--gateway", &g]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read /nonexistent/ledger.csv"), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["recon", "--internal", "x.csv"][..],
        &["recon", "--internal", "x.csv", "--gateway", "y.csv", "--lag", "tomorrow"],
        &["recon", "--internal", "x.csv", "--gateway", "y.csv", "--as-of", "yesterday"],
        &["recon", "--internal", "x.csv", "--gateway", "y.csv", "--gateway-format", "paypal"],
    ] {
        let o = palisade(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn reject_file_takes_bad_rows_and_the_run_goes_on() {
    let d = dir("reject");
    let i = write(
        &d,
        "internal.csv",
        format!("{HEADER}a,1.00,USD,paid,2024-05-01T00:00:00Z\nb,1..0,USD,paid,2024-05-01T00:00:00Z\n").as_bytes(),
    );
    let g = write(&d, "gateway.csv", format!("{HEADER}a,1.00,USD,paid,2024-05-01T00:00:00Z\n").as_bytes());
    let reject = d.join("rejected.jsonl").display().to_string();
    let o = palisade(&["recon", "--internal", &i, "--gateway", &g, "--reject", &reject]);
    assert_eq!(o.status.code(), Some(1), "a rejected row is not a clean run: {}", stderr(&o));
    assert!(o.stdout.is_empty(), "the good rows match");
    assert!(stderr(&o).contains("internal: 1 records, 1 rows rejected"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&reject).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!((v["line"].as_u64(), v["column"].as_u64()), (Some(3), Some(2)));
    assert_eq!(v["column_name"], "amount");
    assert_eq!(v["row"], "b,1..0,USD,paid,2024-05-01T00:00:00Z");
    assert!(v["reason"].as_str().unwrap().starts_with("invalid amount \"1..0\""), "{v}");
}

#[test]
fn stripe_balance_report_is_folded_per_charge() {
    let d = dir("stripe");
    let i = write(
        &d,
        "internal.csv",
        format!("{HEADER}ch_1,70.00,USD,partially_refunded,2024-05-01T10:00:00Z\n").as_bytes(),
    );
    let g = write(
        &d,
        "stripe.csv",
        b"balance_transaction_id,created_utc,charge_id,currency,gross,fee,net,reporting_category,source_id\n\
          txn_1,2024-05-01 10:00:00,ch_1,usd,100.00,3.20,96.80,charge,ch_1\n\
          txn_2,2024-05-01 12:00:00,ch_1,usd,-30.00,0.00,-30.00,refund,re_1\n",
    );
    let o = palisade(&["recon", "--internal", &i, "--gateway", &g, "--gateway-format", "stripe-balance"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("USD: internal 70.00, gateway gross 70.00, fees 3.20, net 66.80, difference 0.00"));
    // Read as the canonical format instead, the same file lacks the columns.
    let o = palisade(&["recon", "--internal", &i, "--gateway", &g]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("stripe.csv:1: missing column \"id\""), "{}", stderr(&o));
}

#[test]
fn adyen_settlement_report_is_folded_per_merchant_reference() {
    let d = dir("adyen");
    let i = write(
        &d,
        "internal.csv",
        format!("{HEADER}order-1,75.00,EUR,partially_refunded,2024-05-01T10:00:00Z\n").as_bytes(),
    );
    let g = write(
        &d,
        "adyen.csv",
        b"Merchant Reference,Creation Date,TimeZone,Type,Gross Currency,Gross Debit (GC),Gross Credit (GC),Net Currency,Net Debit (NC),Net Credit (NC),Commission (NC)\n\
          order-1,2024-05-01 12:00:00,CET,Settled,EUR,,100.00,EUR,,98.00,2.00\n\
          order-1,2024-05-01 13:00:00,CET,Refunded,EUR,25.00,,EUR,25.00,,\n\
          ,2024-05-01 23:00:00,CET,MerchantPayout,EUR,,,EUR,73.00,,\n",
    );
    let o = palisade(&["recon", "--internal", &i, "--gateway", &g, "--gateway-format", "adyen-settlement"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("gateway: 1 records, 1 rows skipped"), "{err}");
    assert!(err.contains("EUR: internal 75.00, gateway gross 75.00, fees 2.00, net 73.00, difference 0.00"), "{err}");
}

/// `palisade recon … | head -1`: the reader going away is not bad input (before: exit 2); the exit code is the one
/// the report warrants, 1 here, and the summary still goes to stderr.
#[test]
fn a_closed_stdout_keeps_the_exit_code_of_the_report() {
    let d = dir("closed-stdout");
    let i = write(&d, "internal.csv", format!("{HEADER}a,1.00,USD,paid,2024-05-01T00:00:00Z\n").as_bytes());
    let g = write(&d, "gateway.csv", format!("{HEADER}a,2.00,USD,paid,2024-05-01T00:00:00Z\n").as_bytes());
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["recon", "--internal", &i, "--gateway", &g])
        .stdout(writer)
        .output()
        .expect("the palisade binary runs");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("1 discrepancies") || err.contains("1 discrepancy"), "{err}");
    assert!(!err.contains("cannot write"), "{err}");
}
