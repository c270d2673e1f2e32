//! Properties of rule-file loading: whatever the text, loading answers (a rule set or a typed error) without
//! panicking, and an error names a line of the file; a valid file with one bad line inserted anywhere is refused
//! with exactly that line's number, whatever surrounds it (comments, blank lines, other rules).

use palisade_fraud::RuleSet;
use proptest::prelude::*;

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
        if let Err(e) = RuleSet::parse(&text) {
            let lines = text.split('\n').count().max(1);
            prop_assert!(e.line >= 1 && e.line <= lines, "line {} of {} in {:?}: {}", e.line, lines, text, e);
        }
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
