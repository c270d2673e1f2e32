//! Exponents, duplicates, the lag window, every bad input with its message, the reject sink, Stripe and Adyen
//! folding, handlers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::Currency;
use palisade_reconciliation::{
    AdyenSettlement, CanonicalCsv, Discrepancy, Error, Kind, Reconciler, Report, Status, StripeBalance,
};

const HEADER: &str = "id,amount,currency,status,created_at\n";
const AS_OF: i64 = 1_714_608_000; // 2024-05-02T00:00:00Z

fn canonical(name: &str, body: &str) -> CanonicalCsv {
    CanonicalCsv::from_reader(name, std::io::Cursor::new(body.as_bytes().to_vec())).expect("header reads")
}

fn run(rec: &Reconciler, internal: &str, gateway: &str) -> Result<Report, Error> {
    rec.reconcile(canonical("internal.csv", internal), canonical("gateway.csv", gateway))
}

fn at_cutoff() -> Reconciler {
    Reconciler::builder().as_of(AS_OF).lag(Duration::from_secs(3600)).build()
}

fn kinds(r: &Report) -> Vec<(Kind, &str)> {
    r.discrepancies.iter().map(|d| (d.kind, &*d.id)).collect()
}

#[test]
fn amounts_compare_in_each_currencys_minor_units() {
    let internal = format!(
        "{HEADER}a,500,JPY,paid,2024-05-01T00:00:00Z\nb,1.234,BHD,paid,2024-05-01T00:00:00Z\n\
         c,12.3,USD,paid,2024-05-01T00:00:00Z\nd,0.001,KWD,paid,2024-05-01T00:00:00Z\n"
    );
    let gateway = format!(
        "{HEADER}a,500.000,jpy,paid,2024-05-01T00:00:00Z\nb,1.235,BHD,paid,2024-05-01T00:00:00Z\n\
         c,12.30,usd,paid,2024-05-01T00:00:00Z\nd,0.001,KWD,paid,2024-05-01T00:00:00Z\n"
    );
    let r = run(&at_cutoff(), &internal, &gateway).unwrap();
    assert_eq!(kinds(&r), [(Kind::AmountMismatch, "b")]);
    assert_eq!(r.matched, 3);
    let b = &r.discrepancies[0];
    assert_eq!(b.internal.as_ref().unwrap().amount.to_minor(), Ok(1234));
    assert_eq!(b.gateway.as_ref().unwrap().amount.to_minor(), Ok(1235));
    let json = serde_json::to_value(b).unwrap();
    assert_eq!(json["internal"]["amount"], "1.234");
    assert_eq!(json["gateway"]["amount"], "1.235");
    assert_eq!(json["gateway"]["currency"], "BHD");
    let jpy = r.totals.iter().find(|t| t.currency == Currency::JPY).unwrap();
    assert_eq!((jpy.internal, jpy.gross, jpy.difference()), (500, 500, 0));
    let bhd = r.totals.iter().find(|t| t.currency == Currency::BHD).unwrap();
    assert_eq!(bhd.difference(), -1);
    assert_eq!(serde_json::to_value(r.summary()).unwrap()["totals"][0]["difference"], "-0.001");
}

#[test]
fn more_decimals_than_the_currency_has_is_an_error_not_rounding() {
    let internal = format!("{HEADER}a,12.345,USD,paid,2024-05-01T00:00:00Z\n");
    let e = run(&at_cutoff(), &internal, HEADER).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("internal.csv:2: column 2 (amount): "), "{msg}");
    assert!(msg.contains("finer than the currency's minor unit"), "{msg}");
    let internal = format!("{HEADER}a,1.5,JPY,paid,2024-05-01T00:00:00Z\n");
    assert!(run(&at_cutoff(), &internal, HEADER).unwrap_err().to_string().contains("finer"));
}

#[test]
fn duplicates_on_each_side_are_one_discrepancy_per_extra_row() {
    let row = "x,10.00,USD,succeeded,2024-05-01T00:00:00Z\n";
    let internal = format!("{HEADER}{row}{row}");
    let gateway = format!("{HEADER}{row}{row}{row}");
    let r = run(&at_cutoff(), &internal, &gateway).unwrap();
    assert_eq!(r.count(Kind::DuplicateInternal), 1);
    assert_eq!(r.count(Kind::DuplicateGateway), 2);
    assert_eq!(r.matched, 1, "the first rows match");
    let dup = r.discrepancies.iter().find(|d| d.kind == Kind::DuplicateInternal).unwrap();
    assert_eq!(dup.internal.as_ref().unwrap().line, 3);
    assert_eq!(dup.first.as_ref().unwrap().line, 2);
    let lines: Vec<u64> = r
        .discrepancies
        .iter()
        .filter(|d| d.kind == Kind::DuplicateGateway)
        .map(|d| d.gateway.as_ref().unwrap().line)
        .collect();
    assert_eq!(lines, [3, 4], "in line order");
}

#[test]
fn lag_window_makes_one_sided_records_pending() {
    // Cut-off 2024-05-02T00:00:00Z, lag 1 h: the window is (23:00:00, 00:00:00] and anything after the cut-off.
    let gateway = format!(
        "{HEADER}old,1.00,USD,paid,2024-05-01T23:00:00Z\nedge,1.00,USD,paid,2024-05-01T23:00:01Z\n\
         late,1.00,USD,paid,2024-05-02T05:00:00Z\n"
    );
    let internal =
        format!("{HEADER}mine,1.00,USD,paid,2024-05-01T23:30:00+00:00\nmine_old,1.00,USD,paid,2024-05-01T22:59:59Z\n");
    let r = run(&at_cutoff(), &internal, &gateway).unwrap();
    assert_eq!(kinds(&r), [(Kind::MissingGateway, "mine_old"), (Kind::MissingInternal, "old")]);
    let pending: Vec<&str> = r.pending.iter().map(|d| &*d.id).collect();
    assert_eq!(pending, ["edge", "late", "mine"]);
    assert_eq!(r.count(Kind::Pending), 3);

    // Without --as-of, the cut-off is the latest created_at on either side (here 05:00 on the 2nd).
    let r = run(&Reconciler::builder().lag(Duration::from_secs(3600)).build(), &internal, &gateway).unwrap();
    assert_eq!(r.as_of, AS_OF + 5 * 3600);
    assert_eq!(r.pending.iter().map(|d| &*d.id).collect::<Vec<_>>(), ["late"]);
    assert_eq!(r.count(Kind::MissingInternal), 2);
}

#[test]
fn statuses_are_normalised_and_configurable() {
    let internal =
        format!("{HEADER}a,1.00,USD,captured,2024-05-01T00:00:00Z\nb,1.00,USD,settled_ok,2024-05-01T00:00:00Z\n");
    let gateway = format!("{HEADER}a,1.00,USD,Paid,2024-05-01T00:00:00Z\nb,1.00,USD,succeeded,2024-05-01T00:00:00Z\n");
    let e = run(&at_cutoff(), &internal, &gateway).unwrap_err().to_string();
    assert!(e.starts_with("internal.csv:3: column 4 (status): unknown status \"settled_ok\": expected one of"), "{e}");
    let rec = Reconciler::builder().as_of(AS_OF).status("SETTLED_OK", Status::Succeeded).build();
    let r = run(&rec, &internal, &gateway).unwrap();
    assert_eq!(r.matched, 2);
}

/// Every malformed input stops the run with file, line, column and what was expected.
#[test]
fn bad_input_names_file_line_column_and_what_was_expected() {
    let ok = "a,1.00,USD,paid,2024-05-01T00:00:00Z\n";
    let cases: [(&str, &[u8], &str); 12] = [
        (
            "bad decimal",
            b"b,12.x,USD,paid,2024-05-01T00:00:00Z\n",
            "internal.csv:3: column 2 (amount): invalid amount \"12.x\": expected a plain decimal",
        ),
        (
            "leading plus",
            b"b,+1.00,USD,paid,2024-05-01T00:00:00Z\n",
            "internal.csv:3: column 2 (amount): invalid amount \"+1.00\"",
        ),
        (
            "unknown currency",
            b"b,1.00,XYZ,paid,2024-05-01T00:00:00Z\n",
            "internal.csv:3: column 3 (currency): unknown currency \"XYZ\": expected an ISO 4217 code",
        ),
        (
            "bad timestamp",
            b"b,1.00,USD,paid,2024-13-01T00:00:00Z\n",
            "internal.csv:3: column 5 (created_at): bad timestamp \"2024-13-01T00:00:00Z\": expected RFC 3339",
        ),
        ("no offset", b"b,1.00,USD,paid,2024-05-01 00:00:00\n", "internal.csv:3: column 5 (created_at): bad timestamp"),
        (
            "invalid UTF-8",
            b"b\xff,1.00,USD,paid,2024-05-01T00:00:00Z\n",
            "internal.csv:3: column 1 (id): invalid UTF-8: expected UTF-8 text",
        ),
        (
            "short row",
            b"b,1.00,USD\n",
            "internal.csv:3: column 4 (status): missing field: the row has 3 fields, the header 5",
        ),
        ("empty id", b",1.00,USD,paid,2024-05-01T00:00:00Z\n", "internal.csv:3: column 1 (id): empty id"),
        // Ids are read without surrounding spaces: spaces alone are no id.
        ("spaces for id", b"  ,1.00,USD,paid,2024-05-01T00:00:00Z\n", "internal.csv:3: column 1 (id): empty id"),
        (
            // An unquoted thousands separator: before, the row was read as 1.00 and matched a gateway's 1.00.
            "long row",
            b"b,1,234.56,USD,paid,2024-05-01T00:00:00Z\n",
            "internal.csv:3: column 6: extra fields: the row has 6 fields, the header 5",
        ),
        (
            // The csv crate takes a quote left open for a field running to the end of the file.
            "unclosed quote",
            b"b,1.00,USD,paid,\"2024-05-01T00:00:00Z\n",
            "internal.csv:3: column 5 (created_at): line break inside a field",
        ),
        (
            // A stray pair of quotes: the rows between them were one field.
            "stray quotes",
            b"b,\"1.00,USD,paid,2024-05-01T00:00:00Z\nc,2.00\",USD,paid,2024-05-01T00:00:00Z\n",
            "internal.csv:3: column 2 (amount): line break inside a field",
        ),
    ];
    for (what, row, expected) in cases {
        let mut body = format!("{HEADER}{ok}").into_bytes();
        body.extend_from_slice(row);
        let src = CanonicalCsv::from_reader("internal.csv", std::io::Cursor::new(body)).unwrap();
        let e = at_cutoff().reconcile(src, canonical("gateway.csv", HEADER)).unwrap_err();
        assert!(e.to_string().starts_with(expected), "{what}: {e}");
        let row = e.as_row().unwrap_or_else(|| panic!("{what}: a row error"));
        assert_eq!(row.line, 3, "{what}");
    }
}

#[test]
fn missing_column_is_named_with_the_columns_expected() {
    let e = CanonicalCsv::from_reader("ledger.csv", "id,amount,currency,created_at\n".as_bytes()).err().unwrap();
    assert_eq!(
        e.to_string(),
        "ledger.csv:1: missing column \"status\": the header must name the columns id,amount,currency,status,created_at"
    );
    let e = StripeBalance::from_reader("stripe.csv", "balance_transaction_id,gross\n".as_bytes()).err().unwrap();
    assert!(e.to_string().starts_with("stripe.csv:1: missing column \"created_utc\""), "{e}");
}

#[test]
fn reject_sink_records_bad_rows_and_goes_on() {
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let sink = rejected.clone();
    let rec = Reconciler::builder()
        .as_of(AS_OF)
        .reject(move |e| sink.lock().unwrap().push((e.line, e.column, e.problem.to_string(), e.row.clone())))
        .build();
    let internal = format!(
        "{HEADER}a,1.00,USD,paid,2024-05-01T00:00:00Z\nb,1.0.0,USD,paid,2024-05-01T00:00:00Z\n\
         c,2.00,USD,paid,2024-05-01T00:00:00Z\n"
    );
    let gateway = format!("{HEADER}a,1.00,USD,paid,2024-05-01T00:00:00Z\nc,2.00,ZZZ,paid,2024-05-01T00:00:00Z\n");
    let r = run(&rec, &internal, &gateway).unwrap();
    assert_eq!((r.internal.rejected, r.gateway.rejected), (1, 1));
    assert_eq!((r.internal.records, r.gateway.records), (2, 1));
    assert_eq!(kinds(&r), [(Kind::MissingGateway, "c")], "the rejected gateway row is not there");
    let mut got = rejected.lock().unwrap().clone();
    got.sort();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0, got[0].1), (3, 2));
    assert!(got[0].2.starts_with("invalid amount \"1.0.0\""), "{got:?}");
    assert_eq!(got[0].3, "b,1.0.0,USD,paid,2024-05-01T00:00:00Z");
    assert_eq!((got[1].0, got[1].1), (3, 3));
    assert!(r.summary().to_string().contains("1 rows rejected"));
}

const STRIPE_HEADER: &str =
    "balance_transaction_id,created_utc,charge_id,currency,gross,fee,net,reporting_category,source_id,description\n";

fn stripe(body: &str) -> StripeBalance {
    StripeBalance::from_reader("stripe.csv", std::io::Cursor::new(format!("{STRIPE_HEADER}{body}").into_bytes()))
        .unwrap()
}

#[test]
fn stripe_report_folds_charge_partial_refunds_and_fees_per_charge() {
    let report = "\
txn_1,2024-05-01 10:00:00,ch_1,usd,100.00,3.20,96.80,charge,ch_1,Order 1
txn_2,2024-05-01 12:00:00,ch_1,usd,-30.00,0.00,-30.00,refund,re_1,
txn_3,2024-05-01 13:00:00,ch_2,usd,20.00,0.88,19.12,charge,ch_2,
txn_4,2024-05-01 14:00:00,ch_1,usd,-20.00,0.00,-20.00,refund,re_2,
txn_5,2024-05-01 15:00:00,,usd,-50.00,0.00,-50.00,payout,po_1,
txn_6,2024-05-01 15:30:00,ch_2,usd,-20.00,0.00,-20.00,refund,re_3,
txn_7,2024-05-01 16:00:00,ch_3,jpy,500,15,485,charge,ch_3,
txn_8,2024-05-01 16:30:00,ch_3,jpy,0,10,-10,fee,fee_1,
";
    let internal = format!(
        "{HEADER}ch_1,50.00,USD,partially_refunded,2024-05-01T10:00:00Z\nch_2,0.00,USD,refunded,2024-05-01T13:00:00Z\n\
         ch_3,500,JPY,succeeded,2024-05-01T16:00:00Z\n"
    );
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), stripe(report)).unwrap();
    assert!(r.is_clean(), "{:?}", r.discrepancies);
    assert_eq!(r.matched, 3);
    assert_eq!(r.gateway.records, 3);
    assert_eq!(r.gateway.skipped, 1, "the payout");
    let usd = r.totals.iter().find(|t| t.currency == Currency::USD).unwrap();
    assert_eq!((usd.internal, usd.gross, usd.fee, usd.net), (5000, 5000, 408, 4592));
    let jpy = r.totals.iter().find(|t| t.currency == Currency::JPY).unwrap();
    assert_eq!((jpy.gross, jpy.fee, jpy.net), (500, 25, 475));

    // The ledger missed the second refund: an amount and a status mismatch, each with both records.
    let internal = format!(
        "{HEADER}ch_1,70.00,USD,partially_refunded,2024-05-01T10:00:00Z\nch_2,20.00,USD,succeeded,2024-05-01T13:00:00Z\n\
         ch_3,500,JPY,succeeded,2024-05-01T16:00:00Z\n"
    );
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), stripe(report)).unwrap();
    assert_eq!(
        kinds(&r),
        [(Kind::AmountMismatch, "ch_1"), (Kind::AmountMismatch, "ch_2"), (Kind::StatusMismatch, "ch_2")]
    );
    let g = r.discrepancies[0].gateway.as_ref().unwrap();
    assert_eq!((g.amount.to_minor(), g.status, g.line), (Ok(5000), Status::PartiallyRefunded, 2));
    assert_eq!(g.created_at, AS_OF - 14 * 3600, "the charge's time, read as UTC");
}

#[test]
fn stripe_refund_without_charge_id_is_refused() {
    let header = "balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category,source_id\n";
    let body = format!("{header}txn_1,2024-05-01 10:00:00,usd,-3.00,0.00,-3.00,refund,re_1\n");
    let src = StripeBalance::from_reader("stripe.csv", std::io::Cursor::new(body.into_bytes())).unwrap();
    let e = at_cutoff().reconcile(canonical("internal.csv", HEADER), src).unwrap_err().to_string();
    assert!(
        e.starts_with("stripe.csv:2: column 7 (reporting_category): unexpected \"refund\": expected a charge_id"),
        "{e}"
    );
    let e = at_cutoff()
        .reconcile(
            canonical("internal.csv", HEADER),
            stripe("txn_1,2024-05-01 10:00:00,ch_1,usd,1.005,0,1.005,charge,ch_1,\n"),
        )
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("stripe.csv:2: column 5 (gross): ") && e.contains("finer"), "{e}");
}

#[test]
fn adyen_settlement_folds_per_merchant_reference_in_its_time_zone() {
    let report = "\
Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,Creation Date,TimeZone,Type,Modification Reference,Gross Currency,Gross Debit (GC),Gross Credit (GC),Exchange Rate,Net Currency,Net Debit (NC),Net Credit (NC),Commission (NC),Markup (NC),Scheme Fees (NC),Interchange (NC),Batch Number
Acme,AcmeShop,8815,order-1,visa,2024-05-01 12:00:00,CET,Settled,8815,EUR,,100.00,1,EUR,,97.50,0.50,0.20,0.30,1.50,42
Acme,AcmeShop,8816,order-1,visa,2024-05-01 13:00:00,CET,Refunded,9901,EUR,25.00,,1,EUR,25.00,,,,,,42
Acme,AcmeShop,,,,2024-05-01 23:00:00,CET,MerchantPayout,,EUR,,,1,EUR,72.50,,,,,,42
Acme,AcmeShop,8817,order-2,mc,2024-05-01 13:00:00,PDT,Settled,8817,USD,,10.00,1,EUR,,9.00,0.10,0.00,0.00,0.00,42
";
    let internal = format!(
        "{HEADER}order-1,75.00,EUR,partially_refunded,2024-05-01T10:00:00Z\norder-2,10.00,USD,paid,2024-05-01T20:00:00Z\n"
    );
    let src = AdyenSettlement::from_reader("adyen.csv", std::io::Cursor::new(report.as_bytes().to_vec())).unwrap();
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), src).unwrap();
    assert!(r.is_clean(), "{:?}", r.discrepancies);
    assert_eq!((r.matched, r.gateway.skipped), (2, 1));
    let eur = r.totals.iter().find(|t| t.currency == Currency::EUR).unwrap();
    assert_eq!((eur.internal, eur.gross, eur.fee, eur.net), (7500, 7500, 260, 7250 + 900));
    let usd = r.totals.iter().find(|t| t.currency == Currency::USD).unwrap();
    assert_eq!((usd.gross, usd.fee, usd.net), (1000, 0, 0), "fee and net are in the net currency");

    // 12:00 CET is 11:00 UTC, exactly the cut-off less 13 h: missing. 13:00 PDT is 20:00 UTC: pending.
    let src = AdyenSettlement::from_reader("adyen.csv", std::io::Cursor::new(report.as_bytes().to_vec())).unwrap();
    let rec = Reconciler::builder().as_of(AS_OF).lag(Duration::from_secs(13 * 3600)).build();
    let r = rec.reconcile(canonical("internal.csv", HEADER), src).unwrap();
    assert_eq!(r.pending.iter().map(|d| &*d.id).collect::<Vec<_>>(), ["order-2"]);
    assert_eq!(kinds(&r), [(Kind::MissingInternal, "order-1")]);
    assert_eq!(r.discrepancies[0].gateway.as_ref().unwrap().created_at, AS_OF - 13 * 3600);
}

#[test]
fn handlers_run_per_kind_sync_and_async() {
    let internal = format!("{HEADER}a,1.00,USD,paid,2024-05-01T00:00:00Z\nb,1.00,USD,paid,2024-05-01T00:00:00Z\n");
    let gateway = format!("{HEADER}a,2.00,USD,paid,2024-05-01T00:00:00Z\nz,1.00,USD,paid,2024-05-01T00:00:00Z\n");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s1, s2) = (seen.clone(), seen.clone());
    let rec = Reconciler::builder()
        .as_of(AS_OF)
        .on(Kind::MissingGateway, move |d: &Discrepancy| s1.lock().unwrap().push(format!("sync {}", d.id)))
        .on_async(Kind::AmountMismatch, move |d: Discrepancy| {
            let s2 = s2.clone();
            async move {
                std::future::ready(()).await;
                s2.lock().unwrap().push(format!("async {}", d.id));
            }
        })
        .build();
    run(&rec, &internal, &gateway).unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["async a", "sync b"]);

    seen.lock().unwrap().clear();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report = rt
        .block_on(rec.reconcile_async(canonical("internal.csv", &internal), canonical("gateway.csv", &gateway)))
        .unwrap();
    assert_eq!(report.discrepancies.len(), 3);
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["async a", "sync b"]);
}

/// A new format is one type implementing `Source`: here, records already in memory.
struct Memory {
    rows: Vec<(String, i64, Currency, Status)>,
    next: usize,
}

impl palisade_reconciliation::Source for Memory {
    fn name(&self) -> &str {
        "memory"
    }
    fn next_record(
        &mut self,
        _statuses: &palisade_reconciliation::StatusMap,
    ) -> Result<Option<palisade_reconciliation::RecordRef<'_>>, Error> {
        let Some((id, amount, currency, status)) = self.rows.get(self.next) else { return Ok(None) };
        self.next += 1;
        Ok(Some(palisade_reconciliation::RecordRef {
            id,
            amount: *amount,
            currency: *currency,
            net_currency: *currency,
            status: *status,
            created_at: AS_OF - 86_400,
            fee: 0,
            net: *amount,
            line: self.next as u64,
        }))
    }
}

#[test]
fn any_source_reconciles() {
    let gateway = Memory {
        rows: vec![
            ("a".into(), 1234, Currency::USD, Status::Succeeded),
            ("b".into(), 500, Currency::JPY, Status::Refunded),
        ],
        next: 0,
    };
    let internal = format!("{HEADER}a,12.34,USD,paid,2024-05-01T00:00:00Z\nb,500,JPY,paid,2024-05-01T00:00:00Z\n");
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), gateway).unwrap();
    assert_eq!(kinds(&r), [(Kind::StatusMismatch, "b")]);
    assert_eq!(r.matched, 1);
}

/// A row longer than its header is a row error, whichever column its extra field follows. Before, the fields past
/// the header were dropped: with the amount last, an unquoted `1,234.56` was read as 1.00 and matched the
/// gateway's 1.00, exit 0.
#[test]
fn a_row_longer_than_its_header_is_refused() {
    let header = "id,currency,status,created_at,amount\n";
    let internal = format!("{header}ch_1,USD,paid,2024-05-01T00:00:00Z,1,234.56\n");
    let gateway = format!("{header}ch_1,USD,paid,2024-05-01T00:00:00Z,1.00\n");
    let e = run(&at_cutoff(), &internal, &gateway).unwrap_err();
    assert_eq!(e.to_string(), "internal.csv:2: column 6: extra fields: the row has 6 fields, the header 5");
    assert_eq!(e.as_row().map(|r| r.line), Some(2));
}

/// A quote left open, even in a column no reader looks at, made the csv crate read the rest of the file (or the
/// rows up to the next quote) as one field: those rows vanished, and a discrepancy in them with them (exit 0).
#[test]
fn an_open_quote_never_swallows_the_rows_after_it() {
    let header = "id,amount,currency,status,created_at,note\n";
    let gateway = format!("{HEADER}a,1.00,USD,paid,2024-05-01T00:00:00Z\n");
    // b and c are on the ledger only (missing_gateway). First a stray pair of quotes, then one left open.
    let stray = format!(
        "{header}a,1.00,USD,paid,2024-05-01T00:00:00Z,\"gift\nb,2.00,USD,paid,2024-05-01T00:00:00Z,\n\
         c,3.00,USD,paid,2024-05-01T00:00:00Z,wrap\"\n"
    );
    let open = format!("{header}a,1.00,USD,paid,2024-05-01T00:00:00Z,\"gift\nb,2.00,USD,paid,2024-05-01T00:00:00Z,\n");
    for internal in [&stray, &open] {
        let e = run(&at_cutoff(), internal, &gateway).unwrap_err();
        assert!(e.to_string().starts_with("internal.csv:2: column 6 (note): line break inside a field"), "{e}");
        // With a reject sink the swallowed rows are one rejected row: the run is not clean (exit 1).
        let rec = Reconciler::builder().as_of(AS_OF).reject(|_| {}).build();
        assert_eq!(run(&rec, internal, &gateway).unwrap().internal.rejected, 1);
    }
    // The same in a report: the refund after an open quote in Stripe's description vanished, and the charge
    // matched a ledger that never heard of the refund.
    let report = "txn_1,2024-05-01 10:00:00,ch_1,usd,100.00,3.20,96.80,charge,ch_1,\"Order 1\n\
                  txn_2,2024-05-01 12:00:00,ch_1,usd,-30.00,0.00,-30.00,refund,re_1,\n";
    let internal = format!("{HEADER}ch_1,100.00,USD,succeeded,2024-05-01T10:00:00Z\n");
    let e = at_cutoff().reconcile(canonical("internal.csv", &internal), stripe(report)).unwrap_err();
    assert!(e.to_string().starts_with("stripe.csv:2: column 10 (description): line break inside a field"), "{e}");
}

/// Every malformed report row stops the run too, naming file, line, column and what was expected.
#[test]
fn bad_report_rows_name_file_line_column_and_what_was_expected() {
    let cases: [(&str, &str, &str); 4] = [
        (
            // Skipped before, as a payout is: a new category that moves a charge's money passed unseen.
            "unknown reporting_category",
            "txn_2,2024-05-01 11:00:00,ch_1,usd,-10.00,0.00,-10.00,charge_clawback,ch_1,\n",
            "stripe.csv:3: column 8 (reporting_category): unexpected \"charge_clawback\": expected a known \
             reporting_category",
        ),
        (
            "open quote in a report",
            "txn_2,2024-05-01 11:00:00,ch_1,usd,-10.00,0.00,-10.00,refund,re_1,\"Refund\n",
            "stripe.csv:3: column 10 (description): line break inside a field",
        ),
        (
            "unknown Type",
            "p1,order-1,2024-05-01 11:00:00,UTC,RefundedMystery,EUR,10.00,,EUR,10.00,,\n",
            "adyen.csv:3: column 5 (Type): unexpected \"RefundedMystery\": expected a known Type",
        ),
        (
            // Fee and net are summed per payment in its net currency: a second one cannot be added to it.
            "net currency changes",
            "p1,order-1,2024-05-01 11:00:00,UTC,Refunded,EUR,5.00,,USD,5.50,,\n",
            "adyen.csv:3: column 9 (Net Currency): unexpected \"USD\": expected EUR",
        ),
    ];
    for (what, row, expected) in cases {
        let gateway: Box<dyn palisade_reconciliation::Source> = if expected.starts_with("stripe") {
            Box::new(stripe(&format!("txn_1,2024-05-01 10:00:00,ch_1,usd,10.00,0.59,9.41,charge,ch_1,\n{row}")))
        } else {
            Box::new(adyen(&format!("p1,order-1,2024-05-01 10:00:00,UTC,Settled,EUR,,10.00,EUR,,9.80,0.20\n{row}")))
        };
        let e = at_cutoff().reconcile(canonical("internal.csv", HEADER), gateway).unwrap_err();
        assert!(e.to_string().starts_with(expected), "{what}: {e}");
        assert_eq!(e.as_row().map(|r| r.line), Some(3), "{what}");
    }
}

const ADYEN_HEADER: &str = "Psp Reference,Merchant Reference,Creation Date,TimeZone,Type,Gross Currency,\
                            Gross Debit (GC),Gross Credit (GC),Net Currency,Net Debit (NC),Net Credit (NC),\
                            Commission (NC)\n";

fn adyen(body: &str) -> AdyenSettlement {
    AdyenSettlement::from_reader("adyen.csv", std::io::Cursor::new(format!("{ADYEN_HEADER}{body}").into_bytes()))
        .unwrap()
}

/// Stripe's `charge_failure` (a bank debit that bounced after it was counted) was skipped: a failed charge
/// reconciled as succeeded.
#[test]
fn stripe_charge_failure_is_a_failed_charge() {
    let report = "\
txn_1,2024-05-01 10:00:00,ch_1,usd,100.00,0.80,99.20,charge,ch_1,
txn_2,2024-05-01 12:00:00,ch_1,usd,-100.00,0.00,-100.00,charge_failure,ch_1,
txn_3,2024-05-01 13:00:00,,usd,-5.00,0.00,-5.00,transfer,tr_1,
";
    // The ledger never heard of the failure: an amount and a status mismatch.
    let stale = format!("{HEADER}ch_1,100.00,USD,succeeded,2024-05-01T10:00:00Z\n");
    let r = at_cutoff().reconcile(canonical("internal.csv", &stale), stripe(report)).unwrap();
    assert_eq!(kinds(&r), [(Kind::AmountMismatch, "ch_1"), (Kind::StatusMismatch, "ch_1")]);
    let g = r.discrepancies[1].gateway.as_ref().unwrap();
    assert_eq!((g.amount.to_minor(), g.status), (Ok(0), Status::Failed));
    // A ledger with the charge failed and nothing left agrees; the transfer is skipped.
    let failed = format!("{HEADER}ch_1,0.00,USD,failed,2024-05-01T10:00:00Z\n");
    let r = at_cutoff().reconcile(canonical("internal.csv", &failed), stripe(report)).unwrap();
    assert!(r.is_clean(), "{:?}", r.discrepancies);
    assert_eq!((r.matched, r.gateway.skipped), (1, 1));
}

/// Adyen's bulk, installment, external and `*WithInfo` bookings move a payment's money as `Settled`, `Refunded`
/// and `Chargeback` do; they were skipped.
#[test]
fn adyen_types_that_move_money_are_folded() {
    let report = "\
p1,order-1,2024-05-01 10:00:00,UTC,SettledBulk,EUR,,100.00,EUR,,99.00,1.00
p1,order-1,2024-05-01 11:00:00,UTC,RefundedExternallyWithInfo,EUR,25.00,,EUR,25.00,,
p2,order-2,2024-05-01 10:00:00,UTC,SettledExternallyWithInfo,EUR,,10.00,EUR,,10.00,
p2,order-2,2024-05-01 11:00:00,UTC,ChargebackExternallyWithInfo,EUR,10.00,,EUR,10.00,,
p3,order-3,2024-05-01 10:00:00,UTC,SettledInstallment,EUR,,30.00,EUR,,30.00,
p3,order-3,2024-05-01 10:30:00,UTC,SettledInstallment,EUR,,30.00,EUR,,30.00,
p4,order-4,2024-05-01 10:00:00,UTC,Settled,EUR,,50.00,EUR,,50.00,
p4,order-4,2024-05-01 11:00:00,UTC,RefundedBulk,EUR,50.00,,EUR,50.00,,
p5,order-5,2024-05-01 10:00:00,UTC,Settled,EUR,,20.00,EUR,,20.00,
p5,order-5,2024-05-01 11:00:00,UTC,ChargebackExternally,EUR,20.00,,EUR,20.00,,
,,2024-05-01 23:00:00,UTC,MerchantPayout,EUR,,,EUR,100.00,,
";
    let internal = format!(
        "{HEADER}order-1,75.00,EUR,partially_refunded,2024-05-01T10:00:00Z\n\
         order-2,0.00,EUR,disputed,2024-05-01T10:00:00Z\norder-3,60.00,EUR,succeeded,2024-05-01T10:00:00Z\n\
         order-4,0.00,EUR,refunded,2024-05-01T10:00:00Z\norder-5,0.00,EUR,disputed,2024-05-01T10:00:00Z\n"
    );
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), adyen(report)).unwrap();
    assert!(r.is_clean(), "{:?}", r.discrepancies);
    assert_eq!((r.matched, r.gateway.records, r.gateway.skipped), (5, 5, 1));
    let eur = r.totals.iter().find(|t| t.currency == Currency::EUR).unwrap();
    assert_eq!((eur.gross, eur.fee), (13500, 100));

    // A ledger that missed the external refund no longer matches.
    let stale = format!("{HEADER}order-1,100.00,EUR,succeeded,2024-05-01T10:00:00Z\n");
    let r = at_cutoff().reconcile(canonical("internal.csv", &stale), adyen(report)).unwrap();
    let order_1: Vec<Kind> = r.discrepancies.iter().filter(|d| &*d.id == "order-1").map(|d| d.kind).collect();
    assert_eq!(order_1, [Kind::AmountMismatch, Kind::StatusMismatch]);
}

/// A `refund_failure` gives a refund back to the merchant and a `partial_capture_reversal` releases the part of an
/// authorisation never captured: neither is a refund, and folding them as refunds invented status mismatches.
/// Adyen's `RefundedReversed` is a failed refund too.
#[test]
fn refund_failures_and_capture_reversals_are_not_refunds() {
    let report = "\
txn_1,2024-05-01 10:00:00,ch_1,usd,100.00,3.20,96.80,charge,ch_1,
txn_2,2024-05-01 11:00:00,ch_1,usd,-30.00,0.00,-30.00,refund,re_1,
txn_3,2024-05-01 12:00:00,ch_1,usd,30.00,0.00,30.00,refund_failure,re_1,
txn_4,2024-05-01 10:00:00,ch_2,usd,50.00,1.75,48.25,charge,ch_2,
txn_5,2024-05-01 10:00:00,ch_2,usd,-20.00,0.00,-20.00,partial_capture_reversal,ch_2,
txn_6,2024-05-01 10:00:00,ch_3,usd,50.00,1.75,48.25,charge,ch_3,
txn_7,2024-05-01 10:00:00,ch_3,usd,-20.00,0.00,-20.00,partial_capture_reversal,ch_3,
txn_8,2024-05-01 13:00:00,ch_3,usd,-10.00,0.00,-10.00,refund,re_3,
";
    let internal = format!(
        "{HEADER}ch_1,100.00,USD,succeeded,2024-05-01T10:00:00Z\nch_2,30.00,USD,succeeded,2024-05-01T10:00:00Z\n\
         ch_3,20.00,USD,partially_refunded,2024-05-01T10:00:00Z\n"
    );
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), stripe(report)).unwrap();
    assert!(r.is_clean(), "{:?}", r.discrepancies);
    assert_eq!(r.matched, 3);

    let report = "\
p1,order-1,2024-05-01 10:00:00,UTC,Settled,EUR,,100.00,EUR,,100.00,
p1,order-1,2024-05-01 11:00:00,UTC,Refunded,EUR,30.00,,EUR,30.00,,
p1,order-1,2024-05-01 12:00:00,UTC,RefundedReversed,EUR,,30.00,EUR,,30.00,
";
    let internal = format!("{HEADER}order-1,100.00,EUR,succeeded,2024-05-01T10:00:00Z\n");
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), adyen(report)).unwrap();
    assert!(r.is_clean(), "{:?}", r.discrepancies);
}

/// A T-1 report holds only the day's activity: the refund or dispute of a charge reported the day before, with
/// no charge row. Compared as a charge it was an amount and a status mismatch; only what it holds is compared.
#[test]
fn activity_on_a_charge_from_an_earlier_report_is_compared_for_what_it_holds() {
    let report = "\
txn_2,2024-05-01 12:00:00,ch_1,usd,-30.00,0.00,-30.00,refund,re_1,
txn_3,2024-05-01 13:00:00,ch_2,usd,-20.00,15.00,-35.00,dispute,dp_1,
txn_4,2024-05-01 14:00:00,ch_3,usd,-40.00,0.00,-40.00,refund,re_3,
txn_5,2024-05-01 15:00:00,ch_4,usd,-10.00,0.00,-10.00,refund,re_4,
";
    let internal = format!(
        "{HEADER}ch_1,70.00,USD,partially_refunded,2024-04-30T10:00:00Z\nch_2,0.00,USD,disputed,2024-04-30T10:00:00Z\n\
         ch_3,0.00,USD,refunded,2024-04-30T10:00:00Z\n"
    );
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), stripe(report)).unwrap();
    assert_eq!(kinds(&r), [(Kind::MissingInternal, "ch_4")], "a refund the ledger has no payment for");
    assert_eq!(r.matched, 3);

    // A ledger that missed the refund and the dispute: status mismatches (without the charge, its amount
    // cannot be checked).
    let stale = format!(
        "{HEADER}ch_1,100.00,USD,succeeded,2024-04-30T10:00:00Z\nch_2,20.00,USD,succeeded,2024-04-30T10:00:00Z\n\
         ch_3,0.00,USD,partially_refunded,2024-04-30T10:00:00Z\nch_4,0.00,USD,refunded,2024-04-30T10:00:00Z\n"
    );
    let r = at_cutoff().reconcile(canonical("internal.csv", &stale), stripe(report)).unwrap();
    assert_eq!(kinds(&r), [(Kind::StatusMismatch, "ch_1"), (Kind::StatusMismatch, "ch_2")]);

    // The same in Adyen.
    let report = "p1,order-1,2024-05-01 11:00:00,UTC,Refunded,EUR,25.00,,EUR,25.00,,\n";
    let internal = format!("{HEADER}order-1,75.00,EUR,partially_refunded,2024-04-30T10:00:00Z\n");
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), adyen(report)).unwrap();
    assert!(r.is_clean(), "{:?}", r.discrepancies);
}

/// Two payments for one order (two PSP references under one merchant reference) were folded into one, twice the
/// amount: an amount mismatch. It is a double charge: `duplicate_gateway`, the first payment matched.
#[test]
fn a_second_payment_for_one_order_is_a_duplicate_gateway() {
    let report = "\
p1,order-1,2024-05-01 10:00:00,UTC,Settled,EUR,,100.00,EUR,,98.00,2.00
p2,order-1,2024-05-01 10:01:00,UTC,Settled,EUR,,100.00,EUR,,98.00,2.00
p2,order-1,2024-05-01 15:00:00,UTC,Refunded,EUR,100.00,,EUR,100.00,,
p3,order-2,2024-05-01 10:00:00,UTC,Settled,EUR,,60.00,EUR,,60.00,
p3,order-2,2024-05-01 12:00:00,UTC,Settled,EUR,,40.00,EUR,,40.00,
";
    let internal = format!(
        "{HEADER}order-1,100.00,EUR,succeeded,2024-05-01T10:00:00Z\norder-2,100.00,EUR,succeeded,2024-05-01T10:00:00Z\n"
    );
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), adyen(report)).unwrap();
    assert_eq!(kinds(&r), [(Kind::DuplicateGateway, "order-1")], "order-2 is one payment captured in two parts");
    assert_eq!(r.matched, 2);
    let d = &r.discrepancies[0];
    let (extra, first) = (d.gateway.as_ref().unwrap(), d.first.as_ref().unwrap());
    assert_eq!((extra.line, extra.amount.to_minor(), extra.status), (3, Ok(0), Status::Refunded), "refunded since");
    assert_eq!((first.line, first.amount.to_minor(), first.status), (2, Ok(10000), Status::Succeeded));

    // Stripe: the charge's row twice.
    let row = "txn_1,2024-05-01 10:00:00,ch_1,usd,10.00,0.59,9.41,charge,ch_1,\n";
    let internal = format!("{HEADER}ch_1,10.00,USD,succeeded,2024-05-01T10:00:00Z\n");
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), stripe(&format!("{row}{row}"))).unwrap();
    assert_eq!(kinds(&r), [(Kind::DuplicateGateway, "ch_1")]);
    assert_eq!(r.matched, 1);
}

/// The `TimeZone` was ignored for a date with a fraction of a second (taken for a date with its own offset).
#[test]
fn adyen_time_zone_applies_to_dates_with_fractions_of_a_second() {
    let report = "\
p1,order-1,2024-05-01 12:00:00.500,CET,Settled,EUR,,1.00,EUR,,1.00,
p2,order-2,2024-05-01 12:00:00.5+02:00,CET,Settled,EUR,,1.00,EUR,,1.00,
";
    let r = Reconciler::builder()
        .as_of(AS_OF)
        .lag(Duration::from_secs(60))
        .build()
        .reconcile(canonical("internal.csv", HEADER), adyen(report))
        .unwrap();
    let at: Vec<i64> = r.discrepancies.iter().map(|d| d.gateway.as_ref().unwrap().created_at).collect();
    assert_eq!(at, [AS_OF - 13 * 3600, AS_OF - 14 * 3600], "11:00 UTC; the date's own offset wins");
}

/// Ids with spaces around them (a padded export) matched nothing on the other side.
#[test]
fn ids_are_read_without_surrounding_spaces() {
    let internal = format!(
        "{HEADER} ch_1 ,10.00,USD,succeeded,2024-05-01T10:00:00Z\norder-1,1.00,EUR,paid,2024-05-01T10:00:00Z\n"
    );
    let report = " txn_1,2024-05-01 10:00:00, ch_1,usd,10.00,0.59,9.41,charge,ch_1 ,\n";
    let r = at_cutoff().reconcile(canonical("internal.csv", &internal), stripe(report)).unwrap();
    assert_eq!(kinds(&r), [(Kind::MissingGateway, "order-1")]);
    let r = at_cutoff()
        .reconcile(
            canonical("internal.csv", &internal),
            adyen("p1,order-1 ,2024-05-01 10:00:00,UTC,Settled,EUR,,1.00,EUR,,1.00,\n"),
        )
        .unwrap();
    assert_eq!(kinds(&r), [(Kind::MissingGateway, "ch_1")]);
}

/// A header naming a column twice was read from the first silently; the other may be the one meant.
#[test]
fn a_column_named_twice_is_refused() {
    let e = CanonicalCsv::from_reader("ledger.csv", "id,amount,currency,status,created_at,amount\n".as_bytes())
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "ledger.csv:1: the header names column \"amount\" twice (columns 2 and 6): keep one, or rename the other"
    );
    let header = format!("{},charge_id\n", STRIPE_HEADER.trim_end());
    assert!(
        StripeBalance::from_reader("stripe.csv", std::io::Cursor::new(header.into_bytes())).is_err(),
        "an optional column too"
    );
    let header = "Merchant Reference,Creation Date,Type,Gross Currency,Gross Debit (GC),Gross Credit (GC),\
                  Net Currency,Net Debit (NC),Net Credit (NC),TimeZone,TimeZone\n";
    assert!(AdyenSettlement::from_reader("adyen.csv", header.as_bytes()).is_err());
    // A column no reader uses may repeat.
    assert!(CanonicalCsv::from_reader("ledger.csv", "id,amount,currency,status,created_at,x,x\n".as_bytes()).is_ok());
}

/// The progress counter counts rows read, a folded report's too (it counted its folded payments).
#[test]
fn progress_counts_every_row_read() {
    let rows = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let report = "\
txn_1,2024-05-01 10:00:00,ch_1,usd,100.00,3.20,96.80,charge,ch_1,
txn_2,2024-05-01 12:00:00,ch_1,usd,-30.00,0.00,-30.00,refund,re_1,
txn_3,2024-05-01 15:00:00,,usd,-50.00,0.00,-50.00,payout,po_1,
";
    let internal = format!("{HEADER}ch_1,70.00,USD,partially_refunded,2024-05-01T10:00:00Z\n");
    let rec = Reconciler::builder().as_of(AS_OF).progress(rows.clone()).build();
    rec.reconcile(canonical("internal.csv", &internal), stripe(report)).unwrap();
    assert_eq!(rows.load(std::sync::atomic::Ordering::Relaxed), 1 + 3);
}
