//! Properties of rule-file loading: whatever the text, loading answers (a rule set or a typed error) without
//! panicking, and an error names a line of the file; a valid file with one bad line inserted anywhere is refused
//! with exactly that line's number, whatever surrounds it (comments, blank lines, other rules).
//!
//! These are the loader's fuzz targets, run as property tests: `cargo fuzz` needs a nightly compiler, which the
//! project's toolchain (stable, `rust-toolchain`/CI) does not have, while proptest runs in `cargo test` on every
//! CI run. The inputs cover what a fuzzer would send: any Unicode text, any bytes (decoded as the loader's
//! callers must, lossily), and valid files mutated at random places (bytes inserted, deleted, replaced), which
//! reach deeper than random text; a failure prints the input and proptest shrinks it.

use palisade_fraud::{Rule, RuleSet};
use proptest::prelude::*;

/// Loading answers without panicking; an error is typed, names a line of `text` and says something.
fn loads_or_names_a_line(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = RuleSet::parse(text) {
        // A line ends with `\n`, `\r\n` or a bare `\r`.
        let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count().max(1);
        prop_assert!(e.line >= 1 && e.line <= lines, "line {} of {} in {:?}: {}", e.line, lines, text, e);
        prop_assert!(!e.message.is_empty(), "an empty message for {:?}", text);
    }
    Ok(())
}

const VALID: &str = "big_foreign: block if card_country != ip_country and amount > 500 USD
review if risk_score > 65 # Radar's line
challenge if attempts_per_card_1h > 3 || declines_per_ip_10m >= 2
score 30 if email_domain == \"mailinator.com\"
trial: shadow block if declines_per_ip_10m >= 3 and amount < 5.25 EUR
review if not (avs_result == \"pass\") && amount_per_email_24h - amount_minor > 100000
";

/// A change to a valid file: insert, delete or replace one byte.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Replace(prop::sample::Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes the rule language gives meaning to, weighted over any byte.
    let byte = prop_oneof![
        3 => prop::sample::select(b"\"#()<>=!&|.,;:_ -+*/%^\n\r\\0123456789aUSDEnd'".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut b = text.as_bytes().to_vec();
    for m in mutations {
        match *m {
            Mutation::Insert(i, c) => b.insert(i.index(b.len() + 1), c),
            Mutation::Delete(i) if !b.is_empty() => {
                b.remove(i.index(b.len()));
            }
            Mutation::Replace(i, c) if !b.is_empty() => {
                let at = i.index(b.len());
                b[at] = c;
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Lines a rule file may hold: valid rules, comments, blanks.
fn good_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("review if true".to_owned()),
        Just("block if amount > 500 USD".to_owned()),
        Just("challenge if attempts_per_card_1h > 3".to_owned()),
        Just("shadow block if card_country != ip_country and amount > 25.00 EUR".to_owned()),
        Just("score 20 if email == \"x@example.com\"".to_owned()),
        Just("# a comment".to_owned()),
        Just(String::new()),
        Just("   ".to_owned()),
    ]
}

/// Lines that are never valid.
fn bad_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("deny if true".to_owned()),
        Just("block if cart_total > 3".to_owned()),
        Just("block if amount > 1.5".to_owned()),
        Just("block if ((".to_owned()),
        Just("block if".to_owned()),
        Just("review if email == 'single'".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_loads_or_names_a_line_of_it(text in "[ -~\n\t#\"()<>=!&|.0-9a-zA-Z_]{0,200}") {
        loads_or_names_a_line(&text)?;
    }

    #[test]
    fn any_unicode_text_loads_or_names_a_line_of_it(text in any::<String>()) {
        loads_or_names_a_line(&text)?;
        // A single expression too (`Rule::expression`): an answer, never a panic.
        let _ = Rule::expression("p", &text);
    }

    #[test]
    fn any_bytes_load_or_name_a_line_of_them(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        loads_or_names_a_line(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn a_mutated_valid_file_loads_or_names_a_line_of_it(mutations in prop::collection::vec(mutation(), 1..6)) {
        prop_assert!(RuleSet::parse(VALID).is_ok());
        loads_or_names_a_line(&mutate(VALID, &mutations))?;
    }

    #[test]
    fn one_bad_line_is_refused_with_its_own_number(
        good in prop::collection::vec(good_line(), 0..12),
        bad in bad_line(),
        at in any::<prop::sample::Index>(),
    ) {
        let mut lines = good.clone();
        let pos = at.index(good.len() + 1);
        // Named rules would collide; unnamed ones do not.
        lines.insert(pos, bad.clone());
        let text = lines.join("\n");
        prop_assert!(RuleSet::parse(&good.join("\n")).is_ok(), "the good lines load: {:?}", good);
        let err = RuleSet::parse(&text).expect_err("a bad line is refused");
        prop_assert_eq!(err.line, pos + 1, "{:?}: {}", text, err);
    }
}
