//! Seeded generator of a ledger and a gateway report in the canonical CSV, with planted discrepancies.
//!
//! ```text
//! cargo run --release -p palisade-reconciliation --example gen_recon -- --rows 1000000 --seed 7 --out-dir DIR
//! ```
//!
//! Writes `DIR/internal.csv`, `DIR/gateway.csv` (the gateway's rows in another order) and `DIR/expected.json`
//! (how many of each kind were planted, and the cut-off to reconcile at). Each kind — missing_internal,
//! missing_gateway, amount_mismatch, currency_mismatch, status_mismatch, duplicate_internal, duplicate_gateway
//! and pending — is planted on about `--rate` of the rows (default 0.001, i.e. 0.1 %). Payments span the 30 days
//! before the cut-off, 2024-05-31T00:00:00Z; pending ones sit in its last 24 hours.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const AS_OF: i64 = 1_717_113_600; // 2024-05-31T00:00:00Z
const DAY: i64 = 86_400;
const KINDS: [&str; 8] = [
    "missing_internal",
    "missing_gateway",
    "amount_mismatch",
    "currency_mismatch",
    "status_mismatch",
    "duplicate_internal",
    "duplicate_gateway",
    "pending",
];

struct Args {
    rows: u64,
    seed: u64,
    rate: f64,
    out_dir: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut a = Args { rows: 1_000_000, seed: 7, rate: 0.001, out_dir: PathBuf::from(".") };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rows" => a.rows = value.parse().map_err(|e| format!("--rows: {e}"))?,
            "--seed" => a.seed = value.parse().map_err(|e| format!("--seed: {e}"))?,
            "--rate" => a.rate = value.parse().map_err(|e| format!("--rate: {e}"))?,
            "--out-dir" => a.out_dir = PathBuf::from(value),
            _ => return Err(format!("unknown flag {flag}: expected --rows, --seed, --rate or --out-dir")),
        }
    }
    Ok(a)
}

/// (code, exponent, weight in %)
const CURRENCIES: [(&str, u32, u32); 4] = [("USD", 2, 70), ("EUR", 2, 15), ("JPY", 0, 10), ("BHD", 3, 5)];

fn amount_text(minor: i64, exponent: u32) -> String {
    if exponent == 0 {
        return minor.to_string();
    }
    let p = 10i64.pow(exponent);
    format!("{}.{:0width$}", minor / p, minor % p, width = exponent as usize)
}

fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(DAY), unix.rem_euclid(DAY));
    // Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gen_recon: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = generate(&a) {
        eprintln!("gen_recon: {e}");
        std::process::exit(1);
    }
}

fn generate(a: &Args) -> std::io::Result<()> {
    std::fs::create_dir_all(&a.out_dir)?;
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let header = "id,amount,currency,status,created_at,customer\n";
    let mut internal = BufWriter::with_capacity(1 << 20, File::create(a.out_dir.join("internal.csv"))?);
    internal.write_all(header.as_bytes())?;
    // The gateway's rows go out in another order: buffered in blocks that are written in reverse block order
    // with the rows of each block rotated, so no row is near its ledger position.
    let mut gateway_rows: Vec<String> = Vec::with_capacity(usize::try_from(a.rows).unwrap_or(0));
    let mut planted = [0u64; KINDS.len()];
    for n in 0..a.rows {
        // A bijection of n (odd multiplier, then xor): distinct ids that do not sort like the rows.
        let id = format!("ch_{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ a.seed);
        let pick = rng.random_range(0..100u32);
        let mut acc = 0;
        let (code, exp, _) = CURRENCIES
            .iter()
            .copied()
            .find(|(_, _, w)| {
                acc += w;
                pick < acc
            })
            .unwrap_or(CURRENCIES[0]);
        let minor = rng.random_range(100..500_000i64) * if exp == 3 { 10 } else { 1 };
        let minor = if exp == 0 { minor / 100 + 1 } else { minor };
        let amount = amount_text(minor, exp);
        // Old enough not to be pending: more than a day before the cut-off.
        let created = AS_OF - DAY - 1 - rng.random_range(0..29 * DAY);
        let customer = rng.random_range(0..1_000_000u32);
        let roll: f64 = rng.random();
        let kind = if roll < a.rate * KINDS.len() as f64 { Some((roll / a.rate) as usize % KINDS.len()) } else { None };
        let line = |amount: &str, code: &str, status: &str, created: i64| {
            format!("{id},{amount},{code},{status},{},cus_{customer}\n", rfc3339(created))
        };
        let base = line(&amount, code, "succeeded", created);
        let (i, g): (Vec<String>, Vec<String>) = match kind.map(|k| KINDS[k]) {
            None => (vec![base.clone()], vec![base]),
            Some("missing_internal") => (vec![], vec![base]),
            Some("missing_gateway") => (vec![base], vec![]),
            Some("amount_mismatch") => {
                let other = amount_text(minor + rng.random_range(1..1000), exp);
                (vec![base], vec![line(&other, code, "succeeded", created)])
            }
            Some("currency_mismatch") => {
                // Between two-decimal currencies, so the amount stays valid in both.
                let (code, other) = if code == "USD" { ("USD", "EUR") } else { ("EUR", "USD") };
                let amount = amount_text(if exp == 2 { minor } else { 1999 }, 2);
                (vec![line(&amount, code, "succeeded", created)], vec![line(&amount, other, "succeeded", created)])
            }
            Some("status_mismatch") => (vec![base], vec![line(&amount, code, "refunded", created)]),
            Some("duplicate_internal") => (vec![base.clone(), base.clone()], vec![base]),
            Some("duplicate_gateway") => (vec![base.clone()], vec![base.clone(), base]),
            _ => {
                // Pending: on one side only, within the last 24 hours before the cut-off.
                let recent = line(&amount, code, "succeeded", AS_OF - rng.random_range(0..DAY - 1));
                if rng.random() { (vec![recent], vec![]) } else { (vec![], vec![recent]) }
            }
        };
        if let Some(k) = kind {
            planted[k] += 1;
        }
        for r in i {
            internal.write_all(r.as_bytes())?;
        }
        gateway_rows.extend(g);
    }
    internal.flush()?;
    let mut gateway = BufWriter::with_capacity(1 << 20, File::create(a.out_dir.join("gateway.csv"))?);
    gateway.write_all(header.as_bytes())?;
    const BLOCK: usize = 4096;
    for block in gateway_rows.chunks(BLOCK).rev() {
        let half = block.len() / 2;
        for r in block[half..].iter().chain(&block[..half]) {
            gateway.write_all(r.as_bytes())?;
        }
    }
    gateway.flush()?;
    let counts: Vec<String> = KINDS.iter().zip(planted).map(|(k, n)| format!("\"{k}\":{n}")).collect();
    std::fs::write(
        a.out_dir.join("expected.json"),
        format!("{{\"rows\":{},\"seed\":{},\"as_of\":\"{}\",{}}}\n", a.rows, a.seed, rfc3339(AS_OF), counts.join(",")),
    )?;
    Ok(())
}
