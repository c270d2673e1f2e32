//! Which separators between card-number digit groups the scanner should accept (issue 16, finding 10), decided
//! by measurement: for each candidate separator, how many strings of a seeded look-alike corpus (timestamps and
//! dates, phone numbers, order and snowflake ids, IP addresses, versions, amounts) would be taken for a card if
//! that separator joined digit groups, next to the same count for the space and dash the scanner has always
//! accepted. The figures are in docs/redaction.md.
//!
//! ```text
//! cargo run --release -p palisade-redaction --example separators [-- --per-class 20000 --seed 7]
//! ```
//!
//! Method: a string counts as a false positive for separator S when the scanner, reading S as a group
//! separator (S replaced by one space, the separator it accepts), finds a card number in it. Every look-alike
//! is rendered with S wherever its format has a separator, so each separator is judged on the strings it
//! would actually join.

use palisade_redaction::Redactor;

use palisade_testkit::Rng;

/// A class of look-alike strings: groups of digits, and the separators such strings are written with.
struct Class {
    name: &'static str,
    uses: &'static [&'static str],
    make: fn(&mut Rng) -> Vec<String>,
}

const NBSP: &str = "\u{a0}";
const THIN: &str = "\u{2009}";
const EN: &str = "\u{2013}";
const EM: &str = "\u{2014}";
/// A no-break space as Rust's `{:?}` writes it.
const NBSP_DEBUG: &str = "\\u{a0}";
/// A no-break space as a JSON serializer that escapes non-ASCII writes it.
const NBSP_JSON: &str = "\\u00a0";

const CLASSES: &[Class] = &[
    Class {
        name: "date-times",
        uses: &["-", "/", ".", " ", "_"],
        make: |r| {
            vec![
                format!("{}", 2000 + r.below(40)),
                format!("{:02}", 1 + r.below(12)),
                format!("{:02}", 1 + r.below(28)),
                format!("{:02}", r.below(24)),
                format!("{:02}", r.below(60)),
                format!("{:02}", r.below(60)),
                format!("{:03}", r.below(1000)),
            ]
        },
    },
    Class {
        name: "date ranges",
        uses: &[EN, EM, "-", "/"],
        make: |r| {
            let y = 1990 + r.below(40);
            vec![
                format!("{y}"),
                format!("{:02}", 1 + r.below(12)),
                format!("{}", y + r.below(5)),
                format!("{:02}", 1 + r.below(12)),
            ]
        },
    },
    Class {
        name: "timestamp pairs (ms)",
        uses: &[" ", "  ", "\t", "_", "/", "-", "%20", "+"],
        make: |r| vec![format!("17{}", r.digits(11)), format!("17{}", r.digits(11))],
    },
    Class {
        name: "phone numbers (E.164)",
        uses: &[" ", "-", ".", NBSP, THIN, "%20", "+", NBSP_DEBUG, NBSP_JSON],
        make: |r| {
            let cc = ["1", "44", "49", "33", "91", "86", "81", "61", "55"][r.below(9) as usize];
            vec![format!("+{cc}"), r.digits(3), r.digits(3), r.digits(4)]
        },
    },
    Class {
        name: "phone numbers (national)",
        uses: &[" ", ".", "-", NBSP, "/", NBSP_DEBUG, NBSP_JSON],
        make: |r| vec![format!("0{}", r.digits(3)), r.digits(3), r.digits(2), r.digits(2), r.digits(2)],
    },
    Class {
        name: "grouped ids (4-4-4-4)",
        uses: &[" ", "-", "_", "/", ".", "  ", "\t", NBSP, THIN, EN, EM, "%20", "+", NBSP_DEBUG, NBSP_JSON],
        make: |r| vec![r.digits(4), r.digits(4), r.digits(4), r.digits(4)],
    },
    Class { name: "snowflake parts", uses: &["_", "-", "/", ".", " "], make: |r| vec![r.digits(10), r.digits(9)] },
    Class { name: "IPv4 lists", uses: &[".", " "], make: |r| (0..8).map(|_| format!("{}", r.below(256))).collect() },
    Class { name: "versions", uses: &["."], make: |r| (0..5).map(|_| format!("{}", r.below(100))).collect() },
    Class {
        name: "amount columns",
        uses: &["\t", "  ", " ", THIN, NBSP, NBSP_DEBUG, NBSP_JSON],
        make: |r| (0..6).map(|_| format!("{}", r.below(100_000))).collect(),
    },
    Class {
        name: "URL paths",
        uses: &["/"],
        make: |r| {
            (0..5)
                .map(|_| {
                    let n = 1 + r.below(6) as usize;
                    r.digits(n)
                })
                .collect()
        },
    },
];

/// The separators under test.
const SEPARATORS: &[(&str, &str)] = &[
    ("space (accepted before)", " "),
    ("dash (accepted before)", "-"),
    ("double space", "  "),
    ("tab", "\t"),
    ("no-break space U+00A0", NBSP),
    ("thin space U+2009", THIN),
    ("en dash U+2013", EN),
    ("em dash U+2014", EM),
    ("dot", "."),
    ("slash", "/"),
    ("underscore", "_"),
    ("%20 (URL-encoded space)", "%20"),
    ("+ (form-encoded space)", "+"),
    ("\\u{a0} (U+00A0 in Rust's Debug)", NBSP_DEBUG),
    ("\\u00a0 (U+00A0 escaped in JSON)", NBSP_JSON),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let per_class = arg("--per-class", 20_000) as usize;
    let seed = arg("--seed", 7);
    let mut rng = Rng::new(seed);
    let corpus: Vec<(&Class, Vec<Vec<String>>)> =
        CLASSES.iter().map(|c| (c, (0..per_class).map(|_| (c.make)(&mut rng)).collect())).collect();
    let redactor = Redactor::new();
    println!("look-alike corpus: {} classes x {per_class} strings, seed {seed}\n", CLASSES.len());
    println!("| separator | look-alikes written with it | taken for a card | rate | worst class |");
    println!("|---|---:|---:|---:|---|");
    for (name, sep) in SEPARATORS {
        let (mut tested, mut flagged) = (0usize, 0usize);
        let mut worst = ("", 0usize);
        for (class, items) in &corpus {
            if !class.uses.contains(sep) {
                continue;
            }
            // As the scanner reads the string if `sep` joins digit groups: joined by one space.
            let hits = items
                .iter()
                .filter(|groups| redactor.is_sensitive(format!("ref {} end", groups.join(" ")).as_bytes()))
                .count();
            tested += items.len();
            flagged += hits;
            if hits > worst.1 {
                worst = (class.name, hits);
            }
        }
        let worst = if worst.1 == 0 { "-".to_owned() } else { format!("{} ({})", worst.0, worst.1) };
        let rate = 100.0 * flagged as f64 / tested.max(1) as f64;
        println!("| {name} | {tested} | {flagged} | {rate:.3} % | {worst} |");
    }
}
