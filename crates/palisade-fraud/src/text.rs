//! The rule file's line syntax and the small pre-translation in front of `evalexpr`: comments, `and`/`or`/`not`,
//! and money literals (`amount > 500 USD` → `(currency == "USD" && amount_minor > 50000)`). Not a parser of
//! expressions: `evalexpr` parses them; this only scans tokens so that it never looks inside a string literal.

use evalexpr::{DefaultNumericTypes, Node};
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
    let ctx = crate::rules::sample_context();
    node.eval_boolean_with_context(&ctx)
        .map_err(|e| format!("`{}` does not evaluate to true or false: {e}", expr.trim()))?;
    Ok(node)
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

    #[test]
    fn comments_respect_strings() {
        assert_eq!(strip_comment("block if email == \"a#b\" # why").unwrap(), "block if email == \"a#b\" ");
    }
}
