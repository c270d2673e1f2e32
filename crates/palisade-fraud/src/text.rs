//! The rule file's line syntax and the small pre-translation in front of `evalexpr`: comments, `and`/`or`/`not`,
//! and money literals (`amount > 500 USD` → `(currency == "USD" && amount_minor > 50000)`). Not a parser of
//! expressions: `evalexpr` parses them; this only scans tokens so that it never looks inside a string literal.

use evalexpr::{DefaultNumericTypes, Node, Operator, Value};
use palisade_core::{Currency, Money};

use crate::attributes::{INDEX, is_money_attribute};
use crate::decision::Action;

/// Removes a `#` comment (outside string literals).
pub(crate) fn strip_comment(line: &str) -> Result<&str, String> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '#' {
            return Ok(&line[..i]);
        }
    }
    if in_str { Err("unterminated string literal: a `\"` is missing".to_owned()) } else { Ok(line) }
}

pub(crate) struct Line<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) shadow: bool,
    pub(crate) action: Action,
    pub(crate) expression: &'a str,
}

fn next_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// `[<name>:] [shadow] <action> if <expression>`.
pub(crate) fn parse_line(body: &str) -> Result<Line<'_>, String> {
    let (mut word, mut rest) = next_word(body);
    let mut name = None;
    if let Some(n) = word.strip_suffix(':') {
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
            return Err(format!("rule name `{n}` must be letters, digits, `_`, `-` or `.`"));
        }
        name = Some(n);
        (word, rest) = next_word(rest);
    }
    let shadow = word == "shadow";
    if shadow {
        (word, rest) = next_word(rest);
    }
    let action = match word {
        "block" => Action::Block,
        "review" => Action::Review,
        "challenge" => Action::Challenge,
        "score" => {
            let (n, r) = next_word(rest);
            rest = r;
            let n: i64 = n.parse().map_err(|_| format!("`score` needs an integer (`score 20 if ...`), found `{n}`"))?;
            Action::Score(n)
        }
        "" => return Err("expected an action (block, review, challenge, score <n>)".to_owned()),
        other => {
            return Err(format!(
                "unknown action `{other}`: expected block, review, challenge or score <n> (optionally after `shadow`)"
            ));
        }
    };
    let (kw, expression) = next_word(rest);
    if kw != "if" {
        return Err(format!("expected `if` after the action `{action}`, found `{kw}`"));
    }
    let expression = expression.trim();
    if expression.is_empty() {
        return Err("the condition after `if` is empty".to_owned());
    }
    Ok(Line { name, shadow, action, expression })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Number,
    Str,
    Space,
    Punct,
}

struct Tok<'a> {
    kind: Kind,
    text: &'a str,
}

fn tokenize(s: &str) -> Result<Vec<Tok<'_>>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let kind = if c == b'"' {
            i += 1;
            let mut escaped = false;
            loop {
                if i >= b.len() {
                    return Err("unterminated string literal: a `\"` is missing".to_owned());
                }
                let d = b[i];
                i += 1;
                match (escaped, d) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => break,
                    _ => {}
                }
            }
            Kind::Str
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            Kind::Ident
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            Kind::Number
        } else if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            Kind::Space
        } else {
            // One character (multi-byte UTF-8 kept whole).
            i += s[i..].chars().next().map_or(1, char::len_utf8);
            Kind::Punct
        };
        out.push(Tok { kind, text: &s[start..i] });
    }
    Ok(out)
}

fn prev_non_space(toks: &[Tok<'_>], mut k: usize) -> Option<usize> {
    while k > 0 {
        k -= 1;
        if toks[k].kind != Kind::Space {
            return Some(k);
        }
    }
    None
}

fn next_non_space(toks: &[Tok<'_>], mut k: usize) -> Option<usize> {
    k += 1;
    while k < toks.len() {
        if toks[k].kind != Kind::Space {
            return Some(k);
        }
        k += 1;
    }
    None
}

fn is_currency_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|c| c.is_ascii_uppercase())
}

/// Rewrites the rule-file conveniences into plain `evalexpr`. Errors name the problem and the fix.
pub(crate) fn translate(expr: &str) -> Result<String, String> {
    let toks = tokenize(expr)?;
    // (first token, last token, replacement)
    let mut rewrites: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        // `.5`: evalexpr reads a float there.
        if toks[i].kind == Kind::Punct
            && toks[i].text == "."
            && let Some(next) = toks.get(i + 1).filter(|t| t.kind == Kind::Number)
        {
            return Err(format!(
                "`.{}` is not an integer: decimals are only allowed in money literals, with a digit before the \
                 point (`amount > 0.50 USD`); rules never use floating point",
                next.text
            ));
        }
        if toks[i].kind != Kind::Number {
            i += 1;
            continue;
        }
        let number = toks[i].text;
        let cur_tok =
            next_non_space(&toks, i).filter(|&j| toks[j].kind == Kind::Ident && is_currency_code(toks[j].text));
        let Some(j) = cur_tok else {
            if !number.bytes().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "`{number}` is not an integer: decimals are only allowed in money literals (`amount > 12.50 USD`); \
                     rules never use floating point"
                ));
            }
            i += 1;
            continue;
        };
        let code = toks[j].text;
        let currency = Currency::from_code(code).map_err(|_| format!("`{code}` is not an ISO 4217 currency code"))?;
        let money = Money::parse(number, currency)
            .map_err(|e| format!("money literal `{number} {code}` is not an exact amount: {e}"))?;
        let minor = money.to_minor().map_err(|e| format!("money literal `{number} {code}`: {e}"))?;
        // Walk back: operator characters, then the money attribute.
        let mut k = i;
        let mut op = String::new();
        while let Some(p) = prev_non_space(&toks, k) {
            if toks[p].kind == Kind::Punct && matches!(toks[p].text, "<" | ">" | "=" | "!") {
                op.insert_str(0, toks[p].text);
                k = p;
            } else {
                break;
            }
        }
        let attr =
            prev_non_space(&toks, k).filter(|&a| toks[a].kind == Kind::Ident && is_money_attribute(toks[a].text));
        let (Some(a), true) = (attr, matches!(op.as_str(), ">" | ">=" | "<" | "<=" | "==" | "!=")) else {
            return Err(format!(
                "money literal `{number} {code}` must be compared with a money attribute, attribute first: \
                 `amount > {number} {code}` or `amount_per_email_24h >= {number} {code}`"
            ));
        };
        let attr_name = if toks[a].text == "amount" { "amount_minor" } else { toks[a].text };
        rewrites.push((a, j, format!("(currency == \"{}\" && {attr_name} {op} {minor})", currency.code())));
        i = j + 1;
    }
    let mut out = String::with_capacity(expr.len() + 32);
    let mut r = rewrites.iter().peekable();
    let mut t = 0;
    while t < toks.len() {
        if let Some((a, j, rep)) = r.peek().filter(|(a, _, _)| *a == t) {
            let _ = a;
            out.push_str(rep);
            t = j + 1;
            r.next();
            continue;
        }
        let tok = &toks[t];
        match (tok.kind, tok.text) {
            (Kind::Ident, "and") => out.push_str("&&"),
            (Kind::Ident, "or") => out.push_str("||"),
            (Kind::Ident, "not") => out.push('!'),
            (Kind::Ident, "amount") => {
                return Err("`amount` needs a currency: write `amount > 500 USD`, or compare `amount_minor` \
                            (minor units) together with `currency`"
                    .to_owned());
            }
            (Kind::Punct, "'") => {
                return Err("strings use double quotes: `email == \"a@example.com\"`".to_owned());
            }
            _ => out.push_str(tok.text),
        }
        t += 1;
    }
    Ok(out)
}

/// Translates, parses with `evalexpr`, checks every attribute is known, and type-checks the expression on
/// sample values (it must give `true` or `false`).
pub(crate) fn compile(expr: &str) -> Result<Node<DefaultNumericTypes>, String> {
    let translated = translate(expr)?;
    let node = evalexpr::build_operator_tree::<DefaultNumericTypes>(&translated)
        .map_err(|e| format!("invalid expression `{}`: {e}", expr.trim()))?;
    for id in node.iter_variable_identifiers() {
        if !INDEX.contains_key(id) {
            return Err(format!(
                "unknown attribute `{id}` (see the attribute list in docs/fraud.md; velocity attributes are \
                 `<attempts|amount|declines>_per_<card|email|ip|customer>_<10m|1h|24h>`)"
            ));
        }
    }
    if node.iter_write_variable_identifiers().next().is_some() {
        return Err("a condition cannot assign: use `==` to compare".to_owned());
    }
    if let Some(f) = first_float(&node) {
        return Err(format!(
            "`{f}` is not an integer: decimals are only allowed in money literals (`amount > 12.50 USD`); rules \
             never use floating point"
        ));
    }
    check_refused_functions(&node)?;
    let ctx = crate::rules::sample_context();
    node.eval_boolean_with_context(&ctx)
        .map_err(|e| format!("`{}` does not evaluate to true or false: {e}", expr.trim()))?;
    check_if_branches(&node, &ctx)?;
    check_no_float_results(&node, &ctx)?;
    Ok(node)
}

/// evalexpr functions a rule may not call: `str::substring` slices by byte, and panics (inside the fraud layer,
/// on a live charge) when a position falls inside a multi-byte character of an email or a name; `random` would
/// make a decision that cannot be replayed or explained.
const REFUSED_FUNCTIONS: &[(&str, &str)] = &[
    ("str::substring", "it counts bytes and fails on text that is not ASCII; compare whole values, or use str::from"),
    ("random", "a decision must be explainable and the same on a replay"),
];

fn check_refused_functions(node: &Node<DefaultNumericTypes>) -> Result<(), String> {
    if let Operator::FunctionIdentifier { identifier } = node.operator()
        && let Some((name, why)) = REFUSED_FUNCTIONS.iter().find(|(name, _)| name == identifier)
    {
        return Err(format!("`{name}(...)` cannot be used in a rule: {why}"));
    }
    node.children().iter().try_for_each(check_refused_functions)
}

/// No function may give a float either (`math::sqrt(amount_minor)`, `floor(amount_minor)`: evalexpr's math
/// functions answer in floats whatever they are given). Each call is evaluated on the sample values (evalexpr
/// evaluated every one of them above: both sides of `&&`/`||`, every argument of a function), and one whose
/// value holds a float is refused.
fn check_no_float_results(node: &Node<DefaultNumericTypes>, ctx: &crate::rules::EvalContext) -> Result<(), String> {
    fn holds_float(v: &Value<DefaultNumericTypes>) -> bool {
        match v {
            Value::Float(_) => true,
            Value::Tuple(t) => t.iter().any(holds_float),
            _ => false,
        }
    }
    if let Operator::FunctionIdentifier { identifier } = node.operator()
        && node.eval_with_context(ctx).is_ok_and(|v| holds_float(&v))
    {
        return Err(format!(
            "`{identifier}(...)` gives a floating-point number: rules never use floating point; use integer \
             arithmetic on minor units (`amount_minor / 100 > 5`)"
        ));
    }
    node.children().iter().try_for_each(|child| check_no_float_results(child, ctx))
}

/// The first float constant of the tree, if any (whatever its spelling: the scan above refuses the usual ones
/// with a better message).
fn first_float(node: &Node<DefaultNumericTypes>) -> Option<f64> {
    if let Operator::Const { value: Value::Float(f) } = node.operator() {
        return Some(*f);
    }
    node.children().iter().find_map(first_float)
}

/// Every `if(condition, a, b)` must give one type whichever branch it takes: the load-time check evaluates the
/// expression on sample values, which take one branch only, and a branch of another type would fail at run
/// time on the charges that take it (`if(currency == "USD", amount_minor, email) > 5` on a EUR charge). evalexpr
/// evaluates all three arguments, so both branches are evaluated here on the sample values and their types
/// compared (tuples element by element).
fn check_if_branches(node: &Node<DefaultNumericTypes>, ctx: &crate::rules::EvalContext) -> Result<(), String> {
    if let Operator::FunctionIdentifier { identifier } = node.operator()
        && identifier == "if"
        && let [arguments] = node.children()
    {
        let err = |what: String| format!("`if(condition, a, b)`: {what}; both branches must have one type");
        match arguments.eval_with_context(ctx) {
            Ok(Value::Tuple(args)) if args.len() == 3 => {
                if !same_shape(&args[1], &args[2]) {
                    return Err(err(format!(
                        "its branches have different types ({} and {})",
                        shape(&args[1]),
                        shape(&args[2])
                    )));
                }
            }
            // The expression evaluated on these values already, so this is not reached; refused all the same.
            _ => return Err(err("its arguments could not be checked".to_owned())),
        }
    }
    node.children().iter().try_for_each(|child| check_if_branches(child, ctx))
}

/// Whether two values have one type: the same kind, and for tuples the same length and element types.
fn same_shape(a: &Value<DefaultNumericTypes>, b: &Value<DefaultNumericTypes>) -> bool {
    match (a, b) {
        (Value::Tuple(a), Value::Tuple(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_shape(a, b)),
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// A value's type in words (never the value).
fn shape(v: &Value<DefaultNumericTypes>) -> String {
    match v {
        Value::String(_) => "text".to_owned(),
        Value::Int(_) => "integer".to_owned(),
        Value::Float(_) => "float".to_owned(),
        Value::Boolean(_) => "boolean".to_owned(),
        Value::Empty => "empty".to_owned(),
        Value::Tuple(t) => format!("({})", t.iter().map(shape).collect::<Vec<_>>().join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_literals_become_exact_minor_units() {
        assert_eq!(translate("amount > 500 USD").unwrap(), "(currency == \"USD\" && amount_minor > 50000)");
        assert_eq!(translate("amount>=12.5 EUR").unwrap(), "(currency == \"EUR\" && amount_minor >= 1250)");
        assert_eq!(translate("amount < 1000 JPY").unwrap(), "(currency == \"JPY\" && amount_minor < 1000)");
        assert_eq!(translate("amount == 1.234 BHD").unwrap(), "(currency == \"BHD\" && amount_minor == 1234)");
        assert_eq!(
            translate("amount_per_email_24h > 1000 USD and ip_country != \"US\"").unwrap(),
            "(currency == \"USD\" && amount_per_email_24h > 100000) && ip_country != \"US\""
        );
        assert_eq!(translate("email == \"and or 5 USD\"").unwrap(), "email == \"and or 5 USD\"");
    }

    #[test]
    fn money_mistakes_are_refused() {
        for bad in [
            "amount > 500",
            "amount > 0.001 USD",
            "amount > 5 XYZ",
            "500 USD < amount",
            "risk_score > 5 USD",
            "amount_minor > 1.5",
        ] {
            assert!(translate(bad).is_err(), "{bad}");
        }
    }

    /// No floats: not as a literal in any spelling, not as a function's result.
    #[test]
    fn floats_are_refused_in_every_form() {
        for bad in [
            "risk_score > .5",
            "risk_score > 0 + .5",
            "amount_minor > 1.5",
            "math::sqrt(amount_minor) > 5",
            "floor(amount_minor) > 1",
            "min(amount_minor, math::sqrt(4)) > 1",
            "if(true, floor(amount_minor), 1.0) > 0",
        ] {
            let err = compile(bad).err();
            assert!(err.as_deref().is_some_and(|e| e.contains("float") || e.contains("integer")), "{bad}: {err:?}");
        }
        for good in ["math::abs(amount_minor) > 1", "min(amount_minor, 5) > 1", "max(risk_score, 0) >= 0"] {
            assert!(compile(good).is_ok(), "{good}");
        }
    }

    /// `str::substring` slices by byte: on `é` it would panic inside the layer. Refused at load, as `random` is.
    #[test]
    fn functions_that_panic_or_are_random_are_refused() {
        for bad in [
            "str::substring(email, 0, min(1, len(email))) == \"a\"",
            "str::substring(email, 1) == \"\"",
            "random() > 0",
        ] {
            let err = compile(bad).err();
            assert!(err.as_deref().is_some_and(|e| e.contains("cannot be used in a rule")), "{bad}: {err:?}");
        }
        assert!(compile("str::to_lowercase(email) == \"a@example.com\"").is_ok());
    }

    /// `if(...)`: both branches are type-checked, not only the one the sample values take.
    #[test]
    fn if_branches_must_have_one_type() {
        assert!(compile("if(currency == \"USD\", amount_minor, email) > 5").is_err());
        assert!(compile("if(currency == \"EUR\", email, amount_minor) > 5").is_err(), "the branch not taken");
        assert!(compile("if(currency == \"USD\", (1, email), (2, email)) == (1, \"\")").is_ok());
        assert!(compile("if(currency == \"USD\", (1, email), (email, 2)) == (1, \"\")").is_err());
        assert!(compile("if(currency == \"USD\", 1, 2) + if(true, 3, 4) > 1").is_ok());
    }

    #[test]
    fn comments_respect_strings() {
        assert_eq!(strip_comment("block if email == \"a#b\" # why").unwrap(), "block if email == \"a#b\" ");
    }
}
