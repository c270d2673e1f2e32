//! Rule-file expressions, evaluated fast: `evalexpr` parses and type-checks a rule once at load
//! ([`crate::text::compile`]); here its operator tree is turned into a small typed tree over the attributes'
//! slots, evaluated without building a context, cloning strings or allocating. The translation covers what rules
//! are made of (`&&`, `||`, `!`, comparisons of integers or of strings, integer arithmetic, literals,
//! attributes); anything else (evalexpr's functions, tuples, ...) stays an `evalexpr` subtree, evaluated by
//! `evalexpr` itself over a full context built on first use.
//!
//! The semantics are `evalexpr`'s, exactly: both sides of `&&`/`||` are evaluated (a side that cannot fail is
//! skipped when the other decides, which cannot change the answer), arithmetic is checked, and on any error the
//! whole rule is evaluated again by `evalexpr`, so an error is `evalexpr`'s own. It is reported by its kind alone
//! ([`error_kind`]): `evalexpr`'s messages hold the values involved (the email, the amount), which must not reach
//! a log or an assessment.

use std::borrow::Cow;

use evalexpr::{DefaultNumericTypes, EvalexprError, Node, Operator, Value};
use palisade_core::Currency;

use crate::attributes::{
    AttrType, Attributes, Field, FieldSet, INDEX, NAMES, RISK_SCORE_SLOT, SCALAR_COUNT, VelocityCounts, VelocitySet,
    ascii_lower, ascii_upper, ip_form, lower, trimmed,
};
use crate::rules::EvalContext;

/// Slots of the text attributes (`currency` .. `customer_id`, see `SCALARS`).
const TEXT_SLOTS: std::ops::Range<usize> = 1..13;
const CURRENCY: usize = 1;
const EMAIL: usize = 2;
const EMAIL_DOMAIN: usize = 3;

/// One decision's view of the attributes, as the rule language sees them: text attributes are normalized on
/// first read (borrowed when already normal, the common case), the `evalexpr` context only if a rule needs it.
pub(crate) struct Scope<'a> {
    pub(crate) attrs: &'a Attributes,
    pub(crate) counts: &'a VelocityCounts,
    /// The running risk score (`risk_score`).
    pub(crate) score: i64,
    /// The velocity store could not be reached: the counts are zeros, not history.
    pub(crate) velocity_down: bool,
    text: [Option<Cow<'a, str>>; TEXT_SLOTS.end],
    currency: Currency,
    /// The amount in minor units, computed on first read (or given by the attempt, which has it).
    amount_minor: std::cell::Cell<Option<i64>>,
    ctx: Option<EvalContext>,
    /// Per text slot, the blocklist hash of its normal form ([`crate::rules::blocklist_hash`]), computed once per
    /// decision for every blocklist that reads it; `hashed` has bit `slot` set once it is.
    hashes: [u64; TEXT_SLOTS.end],
    hashed: u16,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(attrs: &'a Attributes, counts: &'a VelocityCounts) -> Self {
        Scope {
            attrs,
            counts,
            score: attrs.risk_score,
            velocity_down: false,
            text: Default::default(),
            currency: attrs.currency(),
            amount_minor: std::cell::Cell::new(None),
            ctx: None,
            hashes: [0; TEXT_SLOTS.end],
            hashed: 0,
        }
    }

    /// The blocklist hash of the email's normal form, computed once per decision.
    pub(crate) fn email_hash(&mut self) -> u64 {
        self.fill(EMAIL);
        self.hash_of(EMAIL, |s| crate::rules::blocklist_hash(s.text(EMAIL)))
    }

    /// The blocklist hash of `field`'s normal form `v`, computed once per decision.
    pub(crate) fn field_hash(&mut self, field: Field, v: &str) -> u64 {
        self.hash_of(field.slot(), |_| crate::rules::blocklist_hash(v))
    }

    fn hash_of(&mut self, slot: usize, hash: impl FnOnce(&Self) -> u64) -> u64 {
        let bit = 1 << slot;
        if self.hashed & bit == 0 {
            self.hashes[slot] = hash(self);
            self.hashed |= bit;
        }
        self.hashes[slot]
    }

    /// Takes the normalized email from the attempt, which has it already (so it is lower-cased once).
    pub(crate) fn set_email(&mut self, email: Cow<'a, str>) {
        self.text[EMAIL] = Some(email);
    }

    /// The email, trimmed and lower-cased.
    pub(crate) fn email(&mut self) -> &str {
        self.fill(EMAIL);
        self.text(EMAIL)
    }

    /// The amount in minor units (`Attributes::amount_minor`), computed once per decision.
    pub(crate) fn amount_minor(&self) -> i64 {
        if let Some(m) = self.amount_minor.get() {
            return m;
        }
        let m = self.attrs.amount_minor();
        self.amount_minor.set(Some(m));
        m
    }

    /// Takes the amount in minor units from the attempt, which has it already.
    pub(crate) fn set_amount_minor(&mut self, m: i64) {
        self.amount_minor.set(Some(m));
    }

    fn int(&self, slot: usize) -> i64 {
        match slot {
            0 => self.amount_minor(),
            RISK_SCORE_SLOT => self.score,
            s => self.counts.0[s - SCALAR_COUNT],
        }
    }

    /// Normalizes a text attribute (as `EvalContext` does) unless done already.
    #[inline]
    fn fill(&mut self, slot: usize) {
        if slot == CURRENCY || self.text[slot].is_some() {
            return;
        }
        self.normalize(slot);
    }

    #[inline(never)]
    fn normalize(&mut self, slot: usize) {
        let a = self.attrs;
        let raw = |v: &'a Option<String>| Cow::Borrowed(v.as_deref().unwrap_or(""));
        let upper = |v: &'a Option<String>| v.as_deref().map_or(Cow::Borrowed(""), ascii_upper);
        let value = match slot {
            EMAIL => a.email.as_deref().map_or(Cow::Borrowed(""), lower),
            EMAIL_DOMAIN => {
                self.fill(EMAIL);
                match &self.text[EMAIL] {
                    Some(Cow::Borrowed(e)) => Cow::Borrowed(e.rsplit_once('@').map_or("", |(_, d)| d)),
                    Some(Cow::Owned(e)) => Cow::Owned(e.rsplit_once('@').map_or("", |(_, d)| d).to_owned()),
                    None => Cow::Borrowed(""),
                }
            }
            4 => raw(&a.card_fingerprint),
            5 => raw(&a.card_bin),
            6 => upper(&a.card_country),
            7 => upper(&a.billing_country),
            8 => a.ip.as_deref().map_or(Cow::Borrowed(""), ip_form),
            9 => upper(&a.ip_country),
            10 => a.avs_result.as_deref().map_or(Cow::Borrowed(""), ascii_lower),
            11 => a.cvv_result.as_deref().map_or(Cow::Borrowed(""), ascii_lower),
            _ => raw(&a.customer_id),
        };
        self.text[slot] = Some(value);
    }

    /// For the attributes normalized by ASCII case alone: the field's accessor, and whether the normal form is
    /// upper case (`true`: countries) or lower case (`false`: AVS/CVC results).
    fn folding(slot: usize) -> Option<(Accessor, bool)> {
        Some(match slot {
            6 => (|a| &a.card_country, true),
            7 => (|a| &a.billing_country, true),
            9 => (|a| &a.ip_country, true),
            10 => (|a| &a.avs_result, false),
            11 => (|a| &a.cvv_result, false),
            _ => return None,
        })
    }

    fn text(&self, slot: usize) -> &str {
        if slot == CURRENCY { self.currency.code() } else { self.text[slot].as_deref().unwrap_or("") }
    }

    /// The full `evalexpr` context (built on first use), with the running score.
    fn context(&mut self) -> &EvalContext {
        let ctx = self.ctx.get_or_insert_with(|| EvalContext::new(self.attrs, self.counts));
        ctx.set_risk_score(self.score);
        ctx
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Neq,
    Lt,
    Leq,
    Gt,
    Geq,
}

impl Cmp {
    fn of(op: &Operator<DefaultNumericTypes>) -> Option<Cmp> {
        Some(match op {
            Operator::Eq => Cmp::Eq,
            Operator::Neq => Cmp::Neq,
            Operator::Lt => Cmp::Lt,
            Operator::Leq => Cmp::Leq,
            Operator::Gt => Cmp::Gt,
            Operator::Geq => Cmp::Geq,
            _ => return None,
        })
    }
    /// The comparison with its operands swapped (`a < b` is `b > a`).
    fn flipped(self) -> Cmp {
        match self {
            Cmp::Eq | Cmp::Neq => self,
            Cmp::Lt => Cmp::Gt,
            Cmp::Leq => Cmp::Geq,
            Cmp::Gt => Cmp::Lt,
            Cmp::Geq => Cmp::Leq,
        }
    }
    fn holds<T: Ord + ?Sized>(self, a: &T, b: &T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Neq => a != b,
            Cmp::Lt => a < b,
            Cmp::Leq => a <= b,
            Cmp::Gt => a > b,
            Cmp::Geq => a >= b,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Debug)]
enum Int {
    Const(i64),
    Slot(usize),
    Arith(Arith, Box<Int>, Box<Int>),
    Neg(Box<Int>),
}

impl Int {
    fn eval(&self, s: &Scope<'_>) -> Result<i64, ()> {
        Ok(match self {
            Int::Const(n) => *n,
            Int::Slot(i) => s.int(*i),
            Int::Arith(op, a, b) => {
                let (a, b) = (a.eval(s)?, b.eval(s)?);
                match op {
                    Arith::Add => a.checked_add(b),
                    Arith::Sub => a.checked_sub(b),
                    Arith::Mul => a.checked_mul(b),
                    Arith::Div => a.checked_div(b),
                    Arith::Mod => a.checked_rem(b),
                }
                .ok_or(())?
            }
            Int::Neg(a) => a.eval(s)?.checked_neg().ok_or(())?,
        })
    }
    fn fallible(&self) -> bool {
        !matches!(self, Int::Const(_) | Int::Slot(_))
    }
}

#[derive(Debug)]
enum Text {
    Const(Box<str>),
    Slot(usize),
}

impl Text {
    fn fill(&self, s: &mut Scope<'_>) {
        if let Text::Slot(i) = self {
            s.fill(*i);
        }
    }
    fn get<'s>(&'s self, s: &'s Scope<'_>) -> &'s str {
        match self {
            Text::Const(c) => c,
            Text::Slot(i) => s.text(*i),
        }
    }
}

/// Whether two raw values, trimmed, are equal but for ASCII case (two-letter codes, the common case, byte by byte).
#[inline]
fn folded_equal(a: &str, b: &str) -> bool {
    if let (&[a0, a1], &[b0, b1]) = (a.as_bytes(), b.as_bytes()) {
        return a0.eq_ignore_ascii_case(&b0) && a1.eq_ignore_ascii_case(&b1);
    }
    a.eq_ignore_ascii_case(b)
}

/// Reads one text attribute of the attributes.
type Accessor = fn(&Attributes) -> &Option<String>;

#[derive(Debug)]
enum Bool {
    Const(bool),
    Not(Box<Bool>),
    And(Box<Bool>, Box<Bool>),
    Or(Box<Bool>, Box<Bool>),
    Int(Cmp, Int, Int),
    /// An integer attribute against a constant (`attempts_per_card_10m >= 5`), the constant on the right.
    SlotConst(Cmp, usize, i64),
    Text(Cmp, Text, Text),
    /// `==` / `!=` of two booleans.
    Same(bool, Box<Bool>, Box<Bool>),
    /// `currency == "USD"` (`true`) or `!=` (`false`) against the currency of that exact code, `None` when the
    /// constant is no currency's code (the currency never equals it). Compared as a `Currency`, not as text: a
    /// currency's minor-unit exponent is a function of its code (palisade_core takes both from one table), so
    /// two currencies are equal exactly when their codes are, and `Currency::code` is not called per decision.
    Currency(bool, Option<Currency>),
    /// `avs_result == "fail"` (`true`) or `!=` (`false`) for an attribute normalized by ASCII case alone (see
    /// [`Scope::folding`]): the attribute's accessor and the constant, `None` when it is not in the normal form
    /// (no value's normal form equals it). Compared on the raw value, trimmed, ignoring ASCII case: no
    /// normalized copy is made, and whether the constant is in normal form is decided once, at load.
    Folded(bool, Accessor, Option<Box<str>>),
    /// `card_country != billing_country` (`false`) or `==` (`true`): two attributes of the same ASCII case
    /// folding, their accessors; compared on the raw values, trimmed, ignoring ASCII case.
    FoldedPair(bool, Accessor, Accessor),
    /// A subtree left to `evalexpr`.
    Eval(Box<Node<DefaultNumericTypes>>),
}

impl Bool {
    fn fallible(&self) -> bool {
        match self {
            Bool::Const(_)
            | Bool::Text(..)
            | Bool::SlotConst(..)
            | Bool::Currency(..)
            | Bool::Folded(..)
            | Bool::FoldedPair(..) => false,
            Bool::Not(a) => a.fallible(),
            Bool::And(a, b) | Bool::Or(a, b) | Bool::Same(_, a, b) => a.fallible() || b.fallible(),
            Bool::Int(_, a, b) => a.fallible() || b.fallible(),
            Bool::Eval(_) => true,
        }
    }

    fn eval(&self, s: &mut Scope<'_>) -> Result<bool, ()> {
        Ok(match self {
            Bool::Const(b) => *b,
            Bool::Not(a) => !a.eval(s)?,
            // evalexpr evaluates both sides: skipping one is only allowed when it cannot fail.
            Bool::And(a, b) => {
                let a = a.eval(s)?;
                if !a && !b.fallible() { false } else { b.eval(s)? && a }
            }
            Bool::Or(a, b) => {
                let a = a.eval(s)?;
                if a && !b.fallible() { true } else { b.eval(s)? || a }
            }
            Bool::Int(op, a, b) => op.holds(&a.eval(s)?, &b.eval(s)?),
            Bool::SlotConst(op, i, n) => op.holds(&s.int(*i), n),
            Bool::Currency(eq, c) => (Some(s.currency) == *c) == *eq,
            // `avs_result == "fail"`: compared without making the lower-case copy ("FAIL" -> "fail").
            Bool::Folded(eq, get, c) => {
                let raw = trimmed(get(s.attrs).as_deref().unwrap_or(""));
                c.as_deref().is_some_and(|c| raw.eq_ignore_ascii_case(c)) == *eq
            }
            Bool::FoldedPair(eq, a, b) => {
                let raw = |get: &Accessor| trimmed(get(s.attrs).as_deref().unwrap_or(""));
                folded_equal(raw(a), raw(b)) == *eq
            }
            Bool::Text(op, a, b) => {
                a.fill(s);
                b.fill(s);
                op.holds(a.get(s), b.get(s))
            }
            Bool::Same(eq, a, b) => (a.eval(s)? == b.eval(s)?) == *eq,
            Bool::Eval(node) => node.eval_boolean_with_context(s.context()).map_err(|_| ())?,
        })
    }
}

enum Typed {
    Bool(Bool),
    Int(Int),
    Text(Text),
}

/// The typed tree of `node`, or `None` where it is not one of the forms translated (left to `evalexpr`).
fn typed(node: &Node<DefaultNumericTypes>) -> Option<Typed> {
    let kids = node.children();
    let two = || -> Option<(Typed, Typed)> {
        match kids {
            [a, b] => Some((typed(a)?, typed(b)?)),
            _ => None,
        }
    };
    let boolean = |n: &Node<DefaultNumericTypes>| match typed(n) {
        Some(Typed::Bool(b)) => b,
        _ => Bool::Eval(Box::new(n.clone())),
    };
    let op = node.operator();
    Some(match op {
        Operator::RootNode => match kids {
            [only] => typed(only)?,
            _ => return None,
        },
        Operator::Const { value: Value::Int(n) } => Typed::Int(Int::Const(*n)),
        Operator::Const { value: Value::String(s) } => Typed::Text(Text::Const(s.as_str().into())),
        Operator::Const { value: Value::Boolean(b) } => Typed::Bool(Bool::Const(*b)),
        Operator::VariableIdentifierRead { identifier } => {
            let slot = *INDEX.get(identifier.as_str())?;
            match NAMES[slot].1 {
                AttrType::Int => Typed::Int(Int::Slot(slot)),
                AttrType::Text => Typed::Text(Text::Slot(slot)),
                AttrType::Money => return None,
            }
        }
        Operator::Not => match kids {
            [a] => Typed::Bool(Bool::Not(Box::new(boolean(a)))),
            _ => return None,
        },
        Operator::And | Operator::Or => match kids {
            [a, b] => {
                let (a, b) = (Box::new(boolean(a)), Box::new(boolean(b)));
                Typed::Bool(if matches!(op, Operator::And) { Bool::And(a, b) } else { Bool::Or(a, b) })
            }
            _ => return None,
        },
        Operator::Add | Operator::Sub | Operator::Mul | Operator::Div | Operator::Mod => {
            let arith = match op {
                Operator::Add => Arith::Add,
                Operator::Sub => Arith::Sub,
                Operator::Mul => Arith::Mul,
                Operator::Div => Arith::Div,
                _ => Arith::Mod,
            };
            match two()? {
                (Typed::Int(a), Typed::Int(b)) => Typed::Int(Int::Arith(arith, Box::new(a), Box::new(b))),
                _ => return None,
            }
        }
        Operator::Neg => match kids {
            [a] => match typed(a)? {
                Typed::Int(a) => Typed::Int(Int::Neg(Box::new(a))),
                _ => return None,
            },
            _ => return None,
        },
        _ => {
            let cmp = Cmp::of(op)?;
            match (two()?, cmp) {
                ((Typed::Int(Int::Slot(i)), Typed::Int(Int::Const(n))), _) => Typed::Bool(Bool::SlotConst(cmp, i, n)),
                ((Typed::Int(Int::Const(n)), Typed::Int(Int::Slot(i))), _) => {
                    Typed::Bool(Bool::SlotConst(cmp.flipped(), i, n))
                }
                ((Typed::Int(a), Typed::Int(b)), _) => Typed::Bool(Bool::Int(cmp, a, b)),
                (
                    (Typed::Text(Text::Slot(CURRENCY)), Typed::Text(Text::Const(c)))
                    | (Typed::Text(Text::Const(c)), Typed::Text(Text::Slot(CURRENCY))),
                    Cmp::Eq | Cmp::Neq,
                ) => {
                    // Only the exact code (upper case, untrimmed) equals the currency's text.
                    let currency = Currency::from_code(&c).ok().filter(|k| k.code() == &*c);
                    Typed::Bool(Bool::Currency(cmp == Cmp::Eq, currency))
                }
                (
                    (Typed::Text(Text::Slot(i)), Typed::Text(Text::Const(c)))
                    | (Typed::Text(Text::Const(c)), Typed::Text(Text::Slot(i))),
                    Cmp::Eq | Cmp::Neq,
                ) if Scope::folding(i).is_some() => {
                    let (get, upper) = Scope::folding(i)?;
                    // The normal form equals `c` exactly when `c` is in normal form and equals the raw value, trimmed,
                    // but for ASCII case.
                    let normal =
                        !c.bytes().any(|b| if upper { b.is_ascii_lowercase() } else { b.is_ascii_uppercase() });
                    Typed::Bool(Bool::Folded(cmp == Cmp::Eq, get, normal.then_some(c)))
                }
                ((Typed::Text(Text::Slot(i)), Typed::Text(Text::Slot(j))), Cmp::Eq | Cmp::Neq)
                    if Scope::folding(i).zip(Scope::folding(j)).is_some_and(|((_, u), (_, v))| u == v) =>
                {
                    let ((a, _), (b, _)) = Scope::folding(i).zip(Scope::folding(j))?;
                    Typed::Bool(Bool::FoldedPair(cmp == Cmp::Eq, a, b))
                }
                ((Typed::Text(a), Typed::Text(b)), _) => Typed::Bool(Bool::Text(cmp, a, b)),
                ((Typed::Bool(a), Typed::Bool(b)), Cmp::Eq | Cmp::Neq) => {
                    Typed::Bool(Bool::Same(cmp == Cmp::Eq, Box::new(a), Box::new(b)))
                }
                _ => return None,
            }
        }
    })
}

/// A rule-file condition: `evalexpr`'s tree (the reference, and what errors are reported from) and its typed
/// translation.
pub(crate) struct Program {
    node: Node<DefaultNumericTypes>,
    fast: Bool,
    /// The velocity attributes it reads.
    pub(crate) reads: VelocitySet,
    /// The other attributes it reads.
    pub(crate) fields: FieldSet,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").field("fast", &self.fast).finish_non_exhaustive()
    }
}

impl Program {
    pub(crate) fn new(node: Node<DefaultNumericTypes>) -> Self {
        let fast = match typed(&node) {
            Some(Typed::Bool(b)) => b,
            _ => Bool::Eval(Box::new(node.clone())),
        };
        let reads = node
            .iter_variable_identifiers()
            .filter_map(|v| INDEX.get(v).copied())
            .filter(|&i| i >= SCALAR_COUNT)
            .fold(VelocitySet::EMPTY, |set, i| set.union(VelocitySet::of_index(i - SCALAR_COUNT)));
        let fields = node
            .iter_variable_identifiers()
            .filter_map(|v| INDEX.get(v).copied())
            .fold(FieldSet::EMPTY, |set, i| set.union(FieldSet::of_slot(i)));
        Program { node, fast, reads, fields }
    }

    #[cfg(test)]
    pub(crate) fn node(&self) -> &Node<DefaultNumericTypes> {
        &self.node
    }

    /// True when the condition holds; an evaluation error is the kind of `evalexpr`'s error ([`error_kind`]),
    /// without the values involved.
    #[inline(never)]
    pub(crate) fn eval(&self, s: &mut Scope<'_>) -> Result<bool, &'static str> {
        match self.fast.eval(s) {
            Ok(b) => Ok(b),
            Err(()) => self.slow(s),
        }
    }

    /// `evalexpr`'s evaluation, for the subtrees left to it and the errors (out of line: rare).
    #[cold]
    #[inline(never)]
    fn slow(&self, s: &mut Scope<'_>) -> Result<bool, &'static str> {
        self.node.eval_boolean_with_context(s.context()).map_err(|e| error_kind(&e))
    }
}

/// What went wrong in an evaluation, in words that hold no value: `evalexpr`'s messages quote the operands
/// (`Error dividing 4242 / 0`, `Expected a Int, but got String("alice@example.com")`), and what a rule reads is
/// the customer's data. Only this goes into a [`RuleVerdict`](crate::RuleVerdict)'s reason and the logs; the rule
/// and the charge say the rest to whoever may see them.
pub(crate) fn error_kind(e: &EvalexprError<DefaultNumericTypes>) -> &'static str {
    use EvalexprError as E;
    let zero = |v: &Value<DefaultNumericTypes>| matches!(v, Value::Int(0));
    match e {
        E::DivisionError { divisor, .. } if zero(divisor) => "evaluation error: division by zero",
        E::ModulationError { divisor, .. } if zero(divisor) => "evaluation error: remainder of a division by zero",
        E::AdditionError { .. }
        | E::SubtractionError { .. }
        | E::MultiplicationError { .. }
        | E::DivisionError { .. }
        | E::ModulationError { .. }
        | E::NegationError { .. } => "evaluation error: integer overflow",
        E::ExpectedString { .. }
        | E::ExpectedInt { .. }
        | E::ExpectedFloat { .. }
        | E::ExpectedNumber { .. }
        | E::ExpectedNumberOrString { .. }
        | E::ExpectedBoolean { .. }
        | E::ExpectedTuple { .. }
        | E::ExpectedFixedLengthTuple { .. }
        | E::ExpectedRangedLengthTuple { .. }
        | E::ExpectedEmpty { .. }
        | E::TypeError { .. }
        | E::WrongTypeCombination { .. }
        | E::WrongFunctionArgumentAmount { .. }
        | E::WrongOperatorArgumentAmount { .. } => "evaluation error: a value of the wrong type",
        E::OutOfBoundsAccess | E::IntFromUsize { .. } | E::IntIntoUsize { .. } => {
            "evaluation error: a number out of range"
        }
        E::InvalidRegex { .. } => "evaluation error: an invalid regular expression",
        _ => "evaluation error",
    }
}

#[cfg(test)]
mod tests {
    use palisade_core::{Currency, Money};

    use super::*;
    use crate::attributes::{Measure, Subject, Velocity, Window};

    /// Without the load-time check, so rules that fail on the sample values (a division by 0) are tried too.
    fn program(src: &str) -> Program {
        Program::new(evalexpr::build_operator_tree(&crate::text::translate(src).unwrap()).unwrap())
    }

    /// The typed evaluation answers what evalexpr answers, errors included, on the same attributes.
    #[test]
    fn fast_path_agrees_with_evalexpr() {
        let attrs = Attributes::new(Money::from_minor(12_345, Currency::EUR))
            .email("  Alice@Example.COM ")
            .card_country("us")
            .billing_country(" GB")
            .ip_country("US")
            .avs_result("FAIL")
            .customer_id("c1")
            .risk_score(40);
        let mut counts = VelocityCounts::default();
        counts.set(Velocity::new(Measure::Attempts, Subject::Card, Window::Hour), 4);
        counts.set(Velocity::new(Measure::Amount, Subject::Email, Window::Day), i64::MAX);
        let rules = [
            "email == \"alice@example.com\"",
            "email_domain == \"example.com\" and card_country == \"US\"",
            "card_country != billing_country",
            "card_country == ip_country or not (avs_result == \"fail\")",
            "avs_result != \"FAIL\" and \"us\" != card_country and \"US\" == card_country",
            "billing_country == \"GB\" and cvv_result == \"\"",
            "amount > 100 EUR and attempts_per_card_1h >= 4",
            "amount_minor / (attempts_per_card_10m) > 1",
            "false && amount_minor / attempts_per_card_10m > 1",
            "amount_per_email_24h + 1 > 0",
            "-amount_minor < 0 && risk_score == 40",
            "(risk_score > 30) == (customer_id == \"c1\")",
            "card_bin < \"4\" || ip > \"\"",
            "str::trim(email) == email",
            "str::to_uppercase(customer_id) == \"C1\"",
            "true",
            "currency == \"EUR\"",
            "\"EUR\" != currency",
            "currency == \"eur\" or currency == \" EUR\" or currency == \"USD\" or currency == \"XYZ\"",
            "currency != \"eur\" and \"JPY\" != currency",
            "currency < \"USD\"",
            "10000 < amount_minor and 4 >= attempts_per_card_1h and 40 == risk_score and 3 != attempts_per_card_1h",
            "5 > amount_minor or 4 <= attempts_per_card_10m or amount_minor > 12345 or amount_minor >= 12345",
            "card_country == ip_country and billing_country != \"gb\"",
            "avs_result != card_country or ip_country == \"US\"",
        ];
        for src in rules {
            let p = program(src);
            let mut scope = Scope::new(&attrs, &counts);
            let fast = p.eval(&mut scope);
            let ctx = EvalContext::new(&attrs, &counts);
            let slow = p.node().eval_boolean_with_context(&ctx).map_err(|e| error_kind(&e));
            assert_eq!(fast, slow, "{src}");
        }
    }

    /// `currency == "EUR"` is compared as a `Currency`; a constant that is no exact code never equals it.
    #[test]
    fn currency_equality_is_typed() {
        let p = program("currency == \"EUR\"");
        assert!(matches!(p.fast, Bool::Currency(true, Some(c)) if c == Currency::EUR));
        let p = program("\"eur\" != currency");
        assert!(matches!(p.fast, Bool::Currency(false, None)));
    }

    #[test]
    fn only_the_velocity_attributes_read_are_listed() {
        let p = program("attempts_per_card_1h > 3 and declines_per_ip_10m > 1 and amount > 5 USD");
        let want = VelocitySet::EMPTY
            .with(Velocity::new(Measure::Attempts, Subject::Card, Window::Hour))
            .with(Velocity::new(Measure::Declines, Subject::Ip, Window::TenMinutes));
        assert_eq!(p.reads, want);
    }
}
