//! Rules: built-in ones as Rust values ([`Rule::blocklist`], [`Rule::velocity`], ...) and rules written as
//! text ([`Rule::expression`], [`RuleSet::parse`]), evaluated in order.

use std::borrow::Cow;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};

use evalexpr::{Context, DefaultNumericTypes, EvalexprError, Value};
use hashbrown::{DefaultHashBuilder, HashSet, HashTable};
use palisade_core::Money;

use crate::attributes::{
    Attributes, Field, FieldSet, INDEX, Measure, NAMES, RISK_SCORE_SLOT, SCALAR_COUNT, Subject, Velocity,
    VelocityCounts, VelocitySet, Window, ascii_upper, ip_form, lower, trimmed,
};
use crate::decision::Action;
use crate::defaults::{
    DEFAULT_CARD_TESTING_DECLINES, DEFAULT_CARD_TESTING_SMALL_ATTEMPTS, DEFAULT_CARD_TESTING_SMALL_MINOR,
};
use crate::error::RuleFileError;
use crate::expr::{Program, Scope};
use crate::text;

/// One rule: a name, a condition, an action, and whether it runs in shadow.
///
/// ```
/// use palisade_fraud::{Action, Field, Rule};
/// let r = Rule::blocklist("bad_emails", Field::Email, ["fraud@example.com"]).action(Action::Block);
/// assert_eq!(r.name(), "bad_emails");
/// let s = Rule::expression("big_foreign", "card_country != ip_country and amount > 500 USD")
///     .unwrap()
///     .action(Action::Review)
///     .shadow(true);
/// assert!(s.is_shadow());
/// ```
#[derive(Clone)]
pub struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) action: Action,
    pub(crate) shadow: bool,
    pub(crate) condition: Condition,
    pub(crate) reason: Arc<str>,
    pub(crate) stats: Arc<RuleStats>,
}

/// Counters of one rule since it was loaded: how often it matched (enforced or in shadow) and how often its
/// condition failed to evaluate. (Evaluations are not counted per rule — that would be an atomic operation per
/// rule per decision; `palisade_fraud_decisions_total` counts the decisions.)
#[derive(Debug, Default)]
pub struct RuleStats {
    /// Matches, enforced.
    pub matched: AtomicU64,
    /// Matches of a shadow rule (not enforced).
    pub shadow_matched: AtomicU64,
    /// Evaluation errors.
    pub errors: AtomicU64,
}

#[derive(Clone)]
pub(crate) enum Condition {
    Expr(Arc<Program>),
    Blocklist {
        field: Field,
        values: Arc<Blocklist>,
    },
    ResultFails(Field),
    Velocity {
        attr: Velocity,
        max: i64,
        /// `attr`'s index in [`VelocityCounts`], computed once.
        index: usize,
    },
    CountryMismatch(Field, Field),
    /// The thresholds, each with its amount in minor units (every `Money` has one; compared as integers).
    AmountOver(Arc<[(Money, Option<i64>)]>),
    CardTesting(CardTesting),
}

/// The card-testing pattern: many small attempts, or many declines, on one card or IP within ten minutes.
///
/// It matches when the attempt is small (at or below `small_minor` minor units, or the `small` amount given
/// for its currency) and `attempts_per_<subject>_10m >= small_attempts`, or when
/// `declines_per_<subject>_10m >= declines`. Attempts are counted when decided, so a tester whose every attempt
/// is declined is still counted; a retry (the same idempotency key, amount and currency) counts once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardTesting {
    /// Whose attempts: [`Subject::Card`] or [`Subject::Ip`] (any subject works).
    pub subject: Subject,
    /// "Small", per currency; a currency not listed uses `small_minor`.
    pub small: Vec<Money>,
    /// "Small" in minor units for currencies not in `small` ([`DEFAULT_CARD_TESTING_SMALL_MINOR`]).
    pub small_minor: i64,
    /// Small attempts in ten minutes ([`DEFAULT_CARD_TESTING_SMALL_ATTEMPTS`]).
    pub small_attempts: i64,
    /// Declines in ten minutes ([`DEFAULT_CARD_TESTING_DECLINES`]).
    pub declines: i64,
}

impl CardTesting {
    /// The pattern on `subject` with the documented defaults.
    #[must_use]
    pub fn new(subject: Subject) -> Self {
        CardTesting {
            subject,
            small: Vec::new(),
            small_minor: DEFAULT_CARD_TESTING_SMALL_MINOR,
            small_attempts: DEFAULT_CARD_TESTING_SMALL_ATTEMPTS,
            declines: DEFAULT_CARD_TESTING_DECLINES,
        }
    }
}

/// Values that count as a failed AVS or CVC check (case-insensitive): the words gateways use and the
/// single-letter "no match" code.
pub const FAILED_CHECK_RESULTS: &[&str] = &["fail", "failed", "no_match", "mismatch", "n"];

impl Rule {
    fn new(name: &str, action: Action, condition: Condition, reason: String) -> Self {
        Rule {
            name: name.into(),
            action,
            shadow: false,
            condition,
            reason: reason.into(),
            stats: Arc::new(RuleStats::default()),
        }
    }

    /// Matches when `field` is one of `values`. Emails are compared case-insensitively, countries and other
    /// fields as given (countries upper-cased). Default action: block.
    #[must_use]
    pub fn blocklist<I, S>(name: &str, field: Field, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let values = Blocklist::new(values.into_iter().map(|v| normalize(field, v.as_ref()).into_owned()));
        let reason = format!("{} is on the blocklist", field.as_str());
        Rule::new(name, Action::Block, Condition::Blocklist { field, values: Arc::new(values) }, reason)
    }
    /// Matches when the AVS result is a failure ([`FAILED_CHECK_RESULTS`]). Default action: review.
    #[must_use]
    pub fn avs_fails(name: &str) -> Self {
        Rule::new(name, Action::Review, Condition::ResultFails(Field::AvsResult), "address verification failed".into())
    }
    /// Matches when the CVC check is a failure ([`FAILED_CHECK_RESULTS`]). Default action: block.
    #[must_use]
    pub fn cvv_fails(name: &str) -> Self {
        Rule::new(name, Action::Block, Condition::ResultFails(Field::CvvResult), "CVC check failed".into())
    }
    /// Matches when the velocity attribute is above `max` (`attempts_per_card_1h > 3`). Default action: review.
    #[must_use]
    pub fn velocity(name: &str, attr: Velocity, max: i64) -> Self {
        Rule::new(
            name,
            Action::Review,
            Condition::Velocity { attr, max, index: attr.index() },
            format!("{} > {max}", attr.name()),
        )
    }
    /// Matches when both countries are known and differ (`card_country` vs `ip_country`, or vs
    /// `billing_country`). Default action: score 20.
    #[must_use]
    pub fn country_mismatch(name: &str, a: Field, b: Field) -> Self {
        let reason = format!("{} differs from {}", a.as_str(), b.as_str());
        Rule::new(name, Action::Score(20), Condition::CountryMismatch(a, b), reason)
    }
    /// Matches when the amount is above the threshold given for its currency (exact `Money` comparison); a
    /// currency with no threshold never matches. Default action: review.
    #[must_use]
    pub fn amount_over(name: &str, thresholds: impl IntoIterator<Item = Money>) -> Self {
        let t: Arc<[(Money, Option<i64>)]> = thresholds.into_iter().map(|m| (m, m.to_minor().ok())).collect();
        let reason = format!("amount over {}", t.iter().map(|(m, _)| m.to_string()).collect::<Vec<_>>().join(" / "));
        Rule::new(name, Action::Review, Condition::AmountOver(t), reason)
    }
    /// The card-testing pattern ([`CardTesting`]). Default action: block.
    #[must_use]
    pub fn card_testing(name: &str, pattern: CardTesting) -> Self {
        let s = pattern.subject.as_str();
        let reason = format!(
            "card testing: {} small attempts or {} declines per {s} in 10m",
            pattern.small_attempts, pattern.declines
        );
        Rule::new(name, Action::Block, Condition::CardTesting(pattern), reason)
    }
    /// A rule written in the rule language (the part after `if` in a rule file; see [`RuleSet::parse`]).
    /// Default action: review.
    ///
    /// # Errors
    /// [`RuleFileError`] (line 1) when the expression is invalid or names an unknown attribute.
    pub fn expression(name: &str, expression: &str) -> Result<Self, RuleFileError> {
        let node = text::compile(expression).map_err(|message| RuleFileError { line: 1, message })?;
        Ok(Rule::new(name, Action::Review, Condition::Expr(Arc::new(Program::new(node))), expression.trim().to_owned()))
    }

    /// Sets the action.
    #[must_use]
    pub fn action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }
    /// Runs the rule in shadow: evaluated, logged and counted, never enforced.
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }
    /// The name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The action.
    #[must_use]
    pub fn get_action(&self) -> Action {
        self.action
    }
    /// True for a shadow rule.
    #[must_use]
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }
    /// What the rule checks, in words (the source text for rules written in the rule language).
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }
    /// The rule's counters since it was loaded.
    #[must_use]
    pub fn stats(&self) -> &RuleStats {
        &self.stats
    }
    /// True when the condition reads a velocity attribute.
    #[must_use]
    pub fn uses_velocity(&self) -> bool {
        !self.reads().is_empty()
    }

    /// The velocity attributes the condition reads.
    pub(crate) fn reads(&self) -> VelocitySet {
        match &self.condition {
            Condition::Velocity { attr, .. } => VelocitySet::EMPTY.with(*attr),
            Condition::CardTesting(p) => VelocitySet::EMPTY
                .with(Velocity::new(Measure::Attempts, p.subject, Window::TenMinutes))
                .with(Velocity::new(Measure::Declines, p.subject, Window::TenMinutes)),
            Condition::Expr(p) => p.reads,
            _ => VelocitySet::EMPTY,
        }
    }

    /// The attributes other than velocity the condition reads (with those velocity needs when it reads any).
    pub(crate) fn fields(&self) -> FieldSet {
        let own = match &self.condition {
            Condition::Expr(p) => p.fields,
            Condition::Blocklist { field, .. } | Condition::ResultFails(field) => FieldSet::EMPTY.with(*field),
            Condition::CountryMismatch(a, b) => FieldSet::EMPTY.with(*a).with(*b),
            Condition::AmountOver(_) | Condition::Velocity { .. } | Condition::CardTesting(_) => FieldSet::EMPTY,
        };
        let own = if self.action == Action::Challenge { own.union(FieldSet::CHALLENGE) } else { own };
        if self.reads().is_empty() { own } else { own.union(FieldSet::VELOCITY) }
    }

    /// Evaluates the condition: a velocity limit here, rule-language programs (the only ones that can fail) and
    /// each other built-in condition in a small function of its own, inlined into the evaluation loop.
    #[inline]
    pub(crate) fn matches(&self, scope: &mut Scope<'_>) -> Result<bool, &'static str> {
        Ok(match &self.condition {
            Condition::Velocity { max, index, .. } => scope.counts.0.get(*index).is_some_and(|c| c > max),
            Condition::Expr(program) => return program.eval(scope),
            // The email is normalized once per decision, for every rule that reads it.
            Condition::Blocklist { field: Field::Email, values } => email_listed(scope, values),
            Condition::Blocklist { field, values } => listed(scope, *field, values),
            Condition::ResultFails(field) => result_fails(scope.attrs, *field),
            Condition::CountryMismatch(a, b) => countries_differ(scope.attrs, *a, *b),
            Condition::AmountOver(t) => amount_over(scope, t),
            Condition::CardTesting(p) => card_testing(scope, p),
        })
    }
}

/// The hasher every blocklist shares (foldhash, seeded at random once per process): a value read by several
/// blocklists (the email by an email blocklist and a fraud-email list) is hashed once per decision, and each list
/// is probed with that hash. The lists are the operator's, not the client's: a client's value can only be looked
/// up, never inserted, so it cannot lengthen a probe sequence.
static BLOCKLIST_HASHER: LazyLock<DefaultHashBuilder> = LazyLock::new(DefaultHashBuilder::default);

/// The hash of a blocklisted value (its normal form) with [`BLOCKLIST_HASHER`].
pub(crate) fn blocklist_hash(v: &str) -> u64 {
    BLOCKLIST_HASHER.hash_one(v)
}

/// One blocklist's values in their normal form ([`normalize`]), in a table hashed with [`BLOCKLIST_HASHER`].
pub(crate) struct Blocklist {
    table: HashTable<Box<str>>,
}

impl Blocklist {
    fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut table: HashTable<Box<str>> = HashTable::new();
        for v in values {
            let hash = blocklist_hash(&v);
            if table.find(hash, |e| **e == *v).is_none() {
                table.insert_unique(hash, v.into_boxed_str(), |e| blocklist_hash(e));
            }
        }
        Blocklist { table }
    }

    /// True when `v` (its hash `hash`, from [`blocklist_hash`]) is listed.
    #[inline]
    pub(crate) fn contains(&self, hash: u64, v: &str) -> bool {
        self.table.find(hash, |e| **e == *v).is_some()
    }
}

#[inline]
fn email_listed(scope: &mut Scope<'_>, values: &Blocklist) -> bool {
    if scope.attrs.email.is_none() {
        return false;
    }
    let hash = scope.email_hash();
    values.contains(hash, scope.email())
}

#[inline]
fn listed(scope: &mut Scope<'_>, field: Field, values: &Blocklist) -> bool {
    let Some(v) = scope.attrs.field(field) else { return false };
    let v = normalize(field, v);
    let hash = scope.field_hash(field, &v);
    values.contains(hash, &v)
}

#[inline]
fn result_fails(attrs: &Attributes, field: Field) -> bool {
    attrs.field(field).is_some_and(|v| {
        let v = trimmed(v).as_bytes();
        FAILED_CHECK_RESULTS.iter().any(|f| f.len() == v.len() && f.as_bytes().eq_ignore_ascii_case(v))
    })
}

#[inline]
fn countries_differ(attrs: &Attributes, a: Field, b: Field) -> bool {
    let (Some(x), Some(y)) = (attrs.field(a), attrs.field(b)) else { return false };
    // The common case, two-letter codes with nothing to trim: compared byte by byte, ignoring ASCII case.
    if let (&[x0, x1], &[y0, y1]) = (x.as_bytes(), y.as_bytes())
        && x0.is_ascii_graphic()
        && x1.is_ascii_graphic()
        && y0.is_ascii_graphic()
        && y1.is_ascii_graphic()
    {
        return !(x0.eq_ignore_ascii_case(&y0) && x1.eq_ignore_ascii_case(&y1));
    }
    !x.is_empty() && !y.is_empty() && !trimmed(x).eq_ignore_ascii_case(trimmed(y))
}

#[inline]
fn amount_over(scope: &Scope<'_>, t: &[(Money, Option<i64>)]) -> bool {
    let attrs = scope.attrs;
    t.iter().any(|(m, minor)| {
        m.currency() == attrs.amount.currency()
            && match (*minor, scope.amount_minor()) {
                // `amount_minor` is i64::MAX only when the amount has no minor units (it always has when built
                // through palisade_core): compare the decimals then.
                (Some(t), a) if a != i64::MAX => a > t,
                _ => attrs.amount.checked_cmp(m).is_ok_and(|o| o.is_gt()),
            }
    })
}

#[inline(never)]
fn card_testing(scope: &Scope<'_>, p: &CardTesting) -> bool {
    let (attrs, counts) = (scope.attrs, scope.counts);
    let small_limit = p
        .small
        .iter()
        .find(|m| m.currency() == attrs.amount.currency())
        .and_then(|m| m.to_minor().ok())
        .unwrap_or(p.small_minor);
    let attempts = counts.get(Velocity::new(Measure::Attempts, p.subject, Window::TenMinutes));
    let declines = counts.get(Velocity::new(Measure::Declines, p.subject, Window::TenMinutes));
    let present = attrs.subject(p.subject).is_some();
    present && ((scope.amount_minor() <= small_limit && attempts >= p.small_attempts) || declines >= p.declines)
}

/// A blocklist's form of a value: emails lower-cased, countries upper-cased, IP addresses in one form
/// ([`ip_form`]), all trimmed (borrowed when the value already is in that form, the common case: no allocation
/// to look it up).
#[inline]
fn normalize(field: Field, v: &str) -> Cow<'_, str> {
    match field {
        Field::Email => lower(v),
        Field::CardCountry | Field::BillingCountry | Field::IpCountry => ascii_upper(v),
        Field::Ip => ip_form(v),
        _ => Cow::Borrowed(trimmed(v)),
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("action", &self.action)
            .field("shadow", &self.shadow)
            .finish_non_exhaustive()
    }
}

/// An ordered list of rules: what the engine evaluates, swapped whole on reload.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    /// The velocity attributes its rules read (all the store has to compute).
    pub(crate) reads: VelocitySet,
    /// The velocity attributes its enforced (not shadow) rules read: when the store is down, only these make the
    /// [`OnStoreDown`](crate::OnStoreDown) policy apply.
    pub(crate) enforced_reads: VelocitySet,
    /// The other attributes its rules read (all an extraction has to copy).
    pub(crate) fields: FieldSet,
    /// Per rule, `palisade_fraud_rule_matches_total{engine, rule, outcome}` for matched, shadow_matched and
    /// error, made once when an engine takes the set (empty before).
    #[cfg(feature = "metrics")]
    pub(crate) match_keys: Vec<[metrics::Key; 3]>,
}

impl RuleSet {
    /// A rule set of these rules, in this order.
    #[must_use]
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Self {
        let rules: Vec<Rule> = rules.into_iter().collect();
        let reads = rules.iter().fold(VelocitySet::EMPTY, |set, r| set.union(r.reads()));
        let enforced_reads = rules.iter().filter(|r| !r.shadow).fold(VelocitySet::EMPTY, |set, r| set.union(r.reads()));
        let fields = rules.iter().fold(FieldSet::EMPTY, |set, r| set.union(r.fields()));
        RuleSet {
            rules,
            reads,
            enforced_reads,
            fields,
            #[cfg(feature = "metrics")]
            match_keys: Vec::new(),
        }
    }

    /// The set as `engine` runs it (without the `metrics` feature, as it is).
    #[cfg(not(feature = "metrics"))]
    pub(crate) fn for_engine(self, _engine: &str) -> Self {
        self
    }

    /// The set as `engine` runs it: with its metric keys made.
    #[cfg(feature = "metrics")]
    pub(crate) fn for_engine(mut self, engine: &str) -> Self {
        {
            self.match_keys = self
                .rules
                .iter()
                .map(|r| {
                    ["matched", "shadow_matched", "error"].map(|outcome| {
                        let labels = vec![
                            metrics::Label::new("engine", engine.to_owned()),
                            metrics::Label::new("rule", r.name.to_string()),
                            metrics::Label::new("outcome", outcome),
                        ];
                        metrics::Key::from_parts("palisade_fraud_rule_matches_total", labels)
                    })
                })
                .collect();
        }
        self
    }

    /// Parses a rule file: one rule per line (a line ends with `\n`, `\r\n` or a bare `\r`), `#` starts a
    /// comment, blank lines are ignored.
    ///
    /// ```text
    /// [<name>:] [shadow] <action> if <expression>
    /// <action> = block | review | challenge | score <integer>
    /// ```
    ///
    /// A rule without a name is called `line_<n>`. Names are unique, and `velocity_store`, `review_threshold`
    /// and `block_threshold` (the engine's own `decided_by`) are reserved. The expression is [`evalexpr`]'s
    /// language over the documented attributes, with `and` / `or` / `not` accepted for `&&` / `||` / `!` and money literals
    /// (`amount > 500 USD`) translated to exact minor units (see `docs/fraud.md`).
    ///
    /// ```
    /// use palisade_fraud::RuleSet;
    /// let rules = RuleSet::parse(
    ///     "# Radar-like rules\n\
    ///      big_foreign: block if card_country != ip_country and amount > 500 USD\n\
    ///      review if risk_score > 65\n\
    ///      shadow challenge if attempts_per_card_1h > 3\n",
    /// ).unwrap();
    /// assert_eq!(rules.names(), ["big_foreign", "line_3", "line_4"]);
    ///
    /// let err = RuleSet::parse("block if amount > 5 USD\nreview if cart_total > 3").unwrap_err();
    /// assert_eq!(err.line, 2);
    /// assert!(err.message.contains("unknown attribute `cart_total`"));
    /// ```
    ///
    /// # Errors
    /// The first [`RuleFileError`], with its line number.
    pub fn parse(text: &str) -> Result<Self, RuleFileError> {
        RuleSet::parse_after(text, &RuleSet::default())
    }

    /// [`RuleSet::parse`] for a file that runs after `builtins`: a rule named like one of them is refused too.
    pub(crate) fn parse_after(text: &str, builtins: &RuleSet) -> Result<Self, RuleFileError> {
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (i, raw) in lines(text).enumerate() {
            let line = i + 1;
            let err = |message: String| RuleFileError { line, message };
            let body = text::strip_comment(raw).map_err(err)?;
            let body = body.trim();
            if body.is_empty() {
                continue;
            }
            let parsed = text::parse_line(body).map_err(err)?;
            let name = parsed.name.map_or_else(|| format!("line_{line}"), str::to_owned);
            if RESERVED_NAMES.contains(&name.as_str()) {
                return Err(err(format!(
                    "`{name}` is reserved: the engine names its own decisions {}; give the rule another name",
                    RESERVED_NAMES.map(|n| format!("`{n}`")).join(", ")
                )));
            }
            if builtins.rules.iter().any(|r| *r.name == *name) {
                return Err(err(format!(
                    "a built-in rule is already named `{name}`; rule names must be unique: give this rule a name of \
                     its own (`<name>: ...`)"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(err(format!("a rule named `{name}` is already defined above; rule names must be unique")));
            }
            let program = Program::new(text::compile(parsed.expression).map_err(err)?);
            let condition = Condition::Expr(Arc::new(program));
            let rule = Rule::new(&name, parsed.action, condition, parsed.expression.to_owned()).shadow(parsed.shadow);
            rules.push(rule);
        }
        Ok(RuleSet::new(rules))
    }

    /// The rules' names, in order.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| &*r.name).collect()
    }
    /// The rules.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    /// Number of rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    /// True when there are no rules.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    /// This set followed by `other`.
    #[must_use]
    pub fn then(mut self, other: RuleSet) -> Self {
        self.rules.extend(other.rules);
        self.reads = self.reads.union(other.reads);
        self.enforced_reads = self.enforced_reads.union(other.enforced_reads);
        self.fields = self.fields.union(other.fields);
        #[cfg(feature = "metrics")]
        self.match_keys.clear();
        self
    }
    /// The velocity attributes its rules read: all the velocity store computes for a decision.
    #[must_use]
    pub fn velocity_reads(&self) -> VelocitySet {
        self.reads
    }
    /// The other attributes its rules read (with every velocity subject and the attempt id when they read
    /// velocity): what an extraction has to take from a request ([`Attributes::from_charge_reading`]).
    #[must_use]
    pub fn fields(&self) -> FieldSet {
        self.fields
    }
}

/// The names the engine gives its own decisions in `decided_by` (the store-down policy, the thresholds): no rule
/// may take one, or an assessment could not tell which decided.
pub(crate) const RESERVED_NAMES: [&str; 3] =
    [crate::engine::VELOCITY_STORE_RULE, crate::engine::REVIEW_THRESHOLD_RULE, crate::engine::BLOCK_THRESHOLD_RULE];

/// The lines of a rule file: ended by `\n`, `\r\n` or a bare `\r` (old Mac files; `str::lines` would leave the
/// whole file one line, every rule after the first `#` a comment). A final line end starts no line.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.find(['\r', '\n']) {
            Some(i) => {
                let end = if r[i..].starts_with("\r\n") { i + 2 } else { i + 1 };
                rest = Some(&r[end..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                (!r.is_empty()).then_some(r)
            }
        }
    })
}

/// Every variable of the rule language as `evalexpr` values: for the load-time check, and for the parts of a
/// rule `evalexpr` evaluates itself (built on first use in a decision, see [`Scope`]).
pub(crate) struct EvalContext {
    values: Vec<Value<DefaultNumericTypes>>,
}

impl EvalContext {
    pub(crate) fn new(attrs: &Attributes, counts: &VelocityCounts) -> Self {
        let s = |v: Option<&str>| Value::String(v.unwrap_or("").to_owned());
        let email = attrs.email.as_deref().map(|e| e.trim().to_lowercase());
        let domain = email.as_deref().and_then(|e| e.rsplit_once('@')).map(|(_, d)| d.to_owned());
        let up = |v: Option<&str>| Value::String(v.map(|c| c.trim().to_ascii_uppercase()).unwrap_or_default());
        let mut v = Vec::with_capacity(NAMES.len());
        v.push(Value::Int(attrs.amount_minor()));
        v.push(Value::String(attrs.currency().code().to_owned()));
        v.push(Value::String(email.clone().unwrap_or_default()));
        v.push(Value::String(domain.unwrap_or_default()));
        v.push(s(attrs.card_fingerprint.as_deref()));
        v.push(s(attrs.card_bin.as_deref()));
        v.push(up(attrs.card_country.as_deref()));
        v.push(up(attrs.billing_country.as_deref()));
        v.push(Value::String(attrs.ip.as_deref().map(ip_form).unwrap_or_default().into_owned()));
        v.push(up(attrs.ip_country.as_deref()));
        v.push(Value::String(attrs.avs_result.as_deref().unwrap_or("").trim().to_ascii_lowercase()));
        v.push(Value::String(attrs.cvv_result.as_deref().unwrap_or("").trim().to_ascii_lowercase()));
        v.push(s(attrs.customer_id.as_deref()));
        v.push(Value::Int(attrs.risk_score));
        debug_assert_eq!(v.len(), SCALAR_COUNT);
        // Velocity attributes in NAMES order: subject, measure, window — the layout of VelocityCounts.
        v.extend(counts.0.iter().map(|&c| Value::Int(c)));
        EvalContext { values: v }
    }

    /// Sets `risk_score` to the running score.
    pub(crate) fn set_risk_score(&mut self, score: i64) {
        if let Some(slot) = self.values.get_mut(RISK_SCORE_SLOT) {
            *slot = Value::Int(score);
        }
    }
}

impl Context for EvalContext {
    type NumericTypes = DefaultNumericTypes;
    fn get_value(&self, identifier: &str) -> Option<&Value<DefaultNumericTypes>> {
        INDEX.get(identifier).and_then(|&i| self.values.get(i))
    }
    fn call_function(
        &self,
        identifier: &str,
        _argument: &Value,
    ) -> evalexpr::EvalexprResult<Value<DefaultNumericTypes>, DefaultNumericTypes> {
        Err(EvalexprError::FunctionIdentifierNotFound(identifier.to_owned()))
    }
    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }
    fn set_builtin_functions_disabled(&mut self, _disabled: bool) -> evalexpr::EvalexprResult<(), DefaultNumericTypes> {
        Err(EvalexprError::ContextNotMutable)
    }
}

/// A context with sample values, to type-check an expression at load time.
pub(crate) fn sample_context() -> EvalContext {
    let attrs = Attributes::new(Money::from_minor(1, palisade_core::Currency::USD));
    EvalContext::new(&attrs, &VelocityCounts::default())
}
