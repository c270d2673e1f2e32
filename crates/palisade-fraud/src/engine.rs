//! The [`FraudEngine`]: rules in order, velocity from the store, thresholds, hot reload.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;

use crate::attributes::{Attributes, Subject, VelocityCounts, mask_email};
use crate::decision::{Action, Assessment, Decision, NOTABLE_SCAN, OutcomeSink, RuleOutcome};
use crate::defaults::{DEFAULT_BLOCK_THRESHOLD, DEFAULT_REVIEW_THRESHOLD};
use crate::error::RuleFileError;
use crate::expr::Scope;
use crate::rules::{Rule, RuleSet};
use crate::velocity::{Attempt, MemoryVelocityStore, VelocityStore};

/// What the engine decides when the velocity store cannot be reached.
///
/// The default is [`OnStoreDown::Review`]: fail closed without losing the sale. Velocity is what catches card
/// testing; with it blind, a charge should not go through unseen, but blocking every customer during a Redis
/// outage would be an outage of its own. The rules still run (velocity attributes read 0), and a rule that
/// blocks still blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnStoreDown {
    /// At least `Review` (decided by `velocity_store`).
    #[default]
    Review,
    /// `Block` (decided by `velocity_store`): the strictest choice, for merchants under attack.
    Block,
    /// Decide on the other rules alone, as if every velocity attribute were 0 (fail open; logged).
    Ignore,
}

/// The name `decided_by` carries when the review threshold decided.
pub const REVIEW_THRESHOLD_RULE: &str = "review_threshold";
/// The name `decided_by` carries when the block threshold decided.
pub const BLOCK_THRESHOLD_RULE: &str = "block_threshold";
/// The name `decided_by` carries when the velocity store was down and [`OnStoreDown`] decided.
pub const VELOCITY_STORE_RULE: &str = "velocity_store";

/// The names above as shared strings, made once (a decision clones an `Arc`, it does not allocate).
static REVIEW_THRESHOLD_NAME: LazyLock<Arc<str>> = LazyLock::new(|| REVIEW_THRESHOLD_RULE.into());
static BLOCK_THRESHOLD_NAME: LazyLock<Arc<str>> = LazyLock::new(|| BLOCK_THRESHOLD_RULE.into());
static VELOCITY_STORE_NAME: LazyLock<Arc<str>> = LazyLock::new(|| VELOCITY_STORE_RULE.into());
/// The reason of a shadow rule that reads velocity when the store is down (it is not evaluated).
const VELOCITY_UNAVAILABLE: &str = "not evaluated: the velocity store is unavailable";
/// Every velocity attribute at 0: what a rule set that reads none sees (and every rule when the store is down).
static NO_VELOCITY: VelocityCounts = VelocityCounts([0; crate::attributes::VELOCITY_ATTRIBUTES]);

pub(crate) struct EngineInner {
    rules: ArcSwap<RuleSet>,
    builtins: RuleSet,
    store: Arc<dyn VelocityStore>,
    review_threshold: i64,
    block_threshold: i64,
    on_store_down: OnStoreDown,
    name: Arc<str>,
    /// `palisade_fraud_decisions_total{engine, decision}` per decision, made once: counting a decision looks
    /// the counter up in whatever recorder is installed then, without building a key.
    #[cfg(feature = "metrics")]
    decision_keys: [metrics::Key; 4],
}

#[cfg(feature = "metrics")]
static METRICS_METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

#[cfg(feature = "metrics")]
fn decision_keys(engine: &Arc<str>) -> [metrics::Key; 4] {
    [Decision::Approve, Decision::Review, Decision::Challenge, Decision::Block].map(|d| {
        let labels =
            vec![metrics::Label::new("engine", engine.to_string()), metrics::Label::new("decision", d.as_str())];
        metrics::Key::from_parts("palisade_fraud_decisions_total", labels)
    })
}

/// The engine's rule-set slot, for [`arc_swap::Cache`].
#[derive(Clone)]
pub(crate) struct RulesOf(Arc<EngineInner>);

impl std::ops::Deref for RulesOf {
    type Target = ArcSwap<RuleSet>;
    fn deref(&self) -> &ArcSwap<RuleSet> {
        &self.0.rules
    }
}

/// The rules in force as one service last saw them (see [`FraudEngine::rules_cache`]).
#[derive(Clone)]
pub(crate) struct RulesCache(arc_swap::Cache<RulesOf, Arc<RuleSet>>);

impl RulesCache {
    /// The rules in force, for one decision (the layer extracts what they read, then decides with them).
    #[inline]
    pub(crate) fn load(&mut self) -> Arc<RuleSet> {
        self.0.load().clone()
    }
}

/// The future of [`FraudEngine::assess`]: the engine and the attributes until first polled, then (only when
/// the store must be awaited) the boxed wait.
enum Assess<'a> {
    Start(&'a FraudEngine, &'a Attributes),
    Waiting(Pin<Box<dyn Future<Output = Assessment> + Send + 'a>>),
    Done,
}

impl Future for Assess<'_> {
    type Output = Assessment;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Assessment> {
        let this = &mut *self;
        if let Assess::Start(engine, attrs) = *this {
            // Done before deciding, so the decision is returned where it is made (not moved through a copy).
            *this = Assess::Done;
            // The decision, when it needs no wait; otherwise the store must be awaited (nothing was recorded),
            // with the same rule set.
            match engine.try_assess_with(engine.inner.rules.load_full(), attrs) {
                Ok(a) => return Poll::Ready(a),
                Err(rules) => {
                    *this = Assess::Waiting(Box::pin(async move {
                        let attempt = Attempt::from_attributes(attrs);
                        engine.assess_attempt_with(rules, attrs, &attempt).await
                    }));
                }
            }
        }
        match this {
            Assess::Waiting(fut) => {
                let a = std::task::ready!(fut.as_mut().poll(cx));
                *this = Assess::Done;
                Poll::Ready(a)
            }
            #[allow(clippy::panic)]
            _ => panic!("FraudEngine::assess polled after completion"),
        }
    }
}

/// The fraud rule engine. Cheap to clone (one `Arc`); every clone shares the rules and the velocity store.
///
/// - Rules are evaluated in order; the first matching `block` ends the evaluation (later rules are `Skipped`).
/// - `score <n>` rules add to the risk score, which later rules read as `risk_score`.
/// - `review`/`challenge` rules raise the decision; the most severe wins (`Block > Challenge > Review`). A
///   `challenge` on a charge whose customer has authenticated ([`Attributes::authenticated`]) is met: it raises
///   nothing.
/// - After the rules, a score at or above the block threshold blocks, at or above the review threshold reviews.
/// - Shadow rules are evaluated, logged and counted, never enforced.
/// - An enforced rule that fails at run time (a division by zero) makes the decision at least `Review`. Its error
///   is reported by kind (`division by zero`), never with the values involved.
/// - When the velocity store is down, [`OnStoreDown`] applies if an enforced rule reads velocity; shadow rules
///   that read it are reported as errors and change nothing.
/// - [`FraudEngine::reload`] swaps the rule file atomically: a decision uses the old or the new rules whole,
///   never a mix, and none waits; an invalid file is refused and the old rules stay.
#[derive(Clone)]
pub struct FraudEngine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for FraudEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FraudEngine")
            .field("name", &self.inner.name)
            .field("rules", &self.inner.rules.load().names())
            .field("review_threshold", &self.inner.review_threshold)
            .field("block_threshold", &self.inner.block_threshold)
            .field("on_store_down", &self.inner.on_store_down)
            .finish_non_exhaustive()
    }
}

/// Builds a [`FraudEngine`]. See [`FraudEngine::builder`].
#[must_use]
pub struct FraudEngineBuilder {
    builtins: Vec<Rule>,
    file: RuleSet,
    store: Option<Arc<dyn VelocityStore>>,
    review_threshold: i64,
    block_threshold: i64,
    on_store_down: OnStoreDown,
    name: Arc<str>,
}

impl FraudEngineBuilder {
    /// Adds a built-in rule (a Rust value). Built-in rules run first, in the order added, and survive reloads.
    ///
    /// # Panics
    /// When the rule's name is taken — by a built-in rule added before, by a rule of the rule file given before,
    /// or by the engine itself (`velocity_store`, `review_threshold`, `block_threshold`, its own `decided_by`):
    /// an assessment names the rule that decided, so two rules of one name could not be told apart. Built-in
    /// rules are code, so this is a bug to fix where the engine is built (as a router refuses two handlers for
    /// one route); a rule file's clash is a [`RuleFileError`] instead.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.check_builtin_name(rule.name());
        self.builtins.push(rule);
        self
    }
    /// Adds built-in rules.
    ///
    /// # Panics
    /// As [`FraudEngineBuilder::rule`], when a rule's name is taken.
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        for rule in rules {
            self = self.rule(rule);
        }
        self
    }

    #[allow(clippy::panic)] // documented on `rule`: a name clash among rules written in code is a bug of that code
    fn check_builtin_name(&self, name: &str) {
        if crate::rules::RESERVED_NAMES.contains(&name) {
            panic!("fraud rule name `{name}` is reserved: the engine names its own decisions `{name}`");
        }
        if self.builtins.iter().any(|r| r.name() == name) {
            panic!("two built-in fraud rules are named `{name}`: rule names must be unique");
        }
        if self.file.rules().iter().any(|r| r.name() == name) {
            panic!(
                "the built-in fraud rule `{name}` has the name of a rule of the rule file: rule names must be unique"
            );
        }
    }

    /// The rule file's rules (after the built-ins; replaced by [`FraudEngine::reload`]).
    ///
    /// # Errors
    /// The file's first [`RuleFileError`], which is also a rule named like a built-in rule added before.
    pub fn rule_file(mut self, text: &str) -> Result<Self, RuleFileError> {
        self.file = RuleSet::parse_after(text, &RuleSet::new(self.builtins.iter().cloned()))?;
        Ok(self)
    }
    /// The velocity store (default: a [`MemoryVelocityStore`] of this engine's own).
    pub fn velocity_store(mut self, store: impl VelocityStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }
    /// A shared velocity store.
    pub fn shared_velocity_store(mut self, store: Arc<dyn VelocityStore>) -> Self {
        self.store = Some(store);
        self
    }
    /// Score at or above which a charge is reviewed ([`DEFAULT_REVIEW_THRESHOLD`]).
    pub fn review_threshold(mut self, t: i64) -> Self {
        self.review_threshold = t;
        self
    }
    /// Score at or above which a charge is blocked ([`DEFAULT_BLOCK_THRESHOLD`]).
    pub fn block_threshold(mut self, t: i64) -> Self {
        self.block_threshold = t;
        self
    }
    /// What to decide when the velocity store is down ([`OnStoreDown::Review`]).
    pub fn on_store_down(mut self, p: OnStoreDown) -> Self {
        self.on_store_down = p;
        self
    }
    /// The engine's name in logs and metrics (default `fraud`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }
    /// The engine.
    #[must_use]
    pub fn build(self) -> FraudEngine {
        let builtins = RuleSet::new(self.builtins);
        let all = builtins.clone().then(self.file).for_engine(&self.name);
        FraudEngine {
            inner: Arc::new(EngineInner {
                rules: ArcSwap::from_pointee(all),
                builtins,
                store: self.store.unwrap_or_else(|| Arc::new(MemoryVelocityStore::new())),
                review_threshold: self.review_threshold,
                block_threshold: self.block_threshold,
                on_store_down: self.on_store_down,
                #[cfg(feature = "metrics")]
                decision_keys: decision_keys(&self.name),
                name: self.name,
            }),
        }
    }
}

impl FraudEngine {
    /// A builder: no rules, the default thresholds, a memory velocity store, review when the store is down.
    ///
    /// ```
    /// use palisade_core::{Currency, Money};
    /// use palisade_fraud::{Attributes, Decision, Field, FraudEngine, Rule};
    ///
    /// let engine = FraudEngine::builder()
    ///     .rule(Rule::blocklist("bad_email", Field::Email, ["fraud@example.com"]))
    ///     .rule_file("review if amount > 500 USD").unwrap()
    ///     .build();
    /// let a = Attributes::new(Money::from_minor(60_000, Currency::USD)).email("FRAUD@example.com");
    /// let verdict = engine.evaluate(&a, &Default::default());
    /// assert_eq!(verdict.decision, Decision::Block);
    /// assert_eq!(verdict.decided_by.as_deref(), Some("bad_email"));
    /// ```
    pub fn builder() -> FraudEngineBuilder {
        FraudEngineBuilder {
            builtins: Vec::new(),
            file: RuleSet::default(),
            store: None,
            review_threshold: DEFAULT_REVIEW_THRESHOLD,
            block_threshold: DEFAULT_BLOCK_THRESHOLD,
            on_store_down: OnStoreDown::default(),
            name: "fraud".into(),
        }
    }

    /// Replaces the rule file's rules with `text` (built-in rules stay first). On error nothing changes: the
    /// engine keeps the rules it had, and the error says which line is wrong (a rule named like a built-in rule is
    /// an error too). In-flight decisions finish with the rules they started with.
    ///
    /// # Errors
    /// The new file's first [`RuleFileError`].
    pub fn reload(&self, text: &str) -> Result<(), RuleFileError> {
        match RuleSet::parse_after(text, &self.inner.builtins) {
            Ok(file) => {
                let n = file.len();
                let all = self.inner.builtins.clone().then(file).for_engine(&self.inner.name);
                self.inner.rules.store(Arc::new(all));
                tracing::info!(target: "palisade_fraud", engine = &*self.inner.name, rules = n, "fraud rules reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(target: "palisade_fraud", engine = &*self.inner.name, line = e.line, error = %e.message, "fraud rule reload refused; old rules kept");
                Err(e)
            }
        }
    }

    /// A cache of the rules in force, for one service: [`RulesCache::load`] checks that the rules it holds are
    /// still those in force (one atomic load) and takes the new ones when a reload replaced them.
    pub(crate) fn rules_cache(&self) -> RulesCache {
        RulesCache(arc_swap::Cache::new(RulesOf(self.inner.clone())))
    }

    /// The rules in force (built-ins, then the rule file's).
    #[must_use]
    pub fn rules(&self) -> Arc<RuleSet> {
        self.inner.rules.load_full()
    }

    /// The engine's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Records the attempt in the velocity store (one atomic step for all its counters), evaluates the rules,
    /// logs the verdict and counts it in metrics. A rule set that reads no velocity attribute needs no record:
    /// the store is then not asked (and [`OnStoreDown`] never applies).
    ///
    /// Nothing happens until the future is first polled. The future is small (it is moved by whoever awaits
    /// it): a decision that needs no wait (a rule set that reads no velocity, or the memory store) is made in
    /// that first poll; only one that waits on the store (Redis) puts the wait in a box.
    pub fn assess<'a>(&'a self, attrs: &'a Attributes) -> impl Future<Output = Assessment> + Send + 'a {
        Assess::Start(self, attrs)
    }

    /// One rule set for the whole decision (the attributes extracted for it, the velocity it reads, then its
    /// evaluation).
    pub(crate) async fn assess_attempt_with(
        &self,
        rules: Arc<RuleSet>,
        attrs: &Attributes,
        attempt: &Attempt<'_>,
    ) -> Assessment {
        if rules.reads.is_empty() {
            return self.conclude(attrs, None, rules, &NO_VELOCITY, true);
        }
        let result = match self.inner.store.try_record_attempt(attempt, rules.reads) {
            Some(r) => r,
            None => self.inner.store.record_attempt_reading(attempt, rules.reads).await,
        };
        self.conclude_with(attrs, attempt, rules, result)
    }

    /// [`FraudEngine::try_assess`] with the rule set loaded by the caller, handed back when the store must be
    /// awaited.
    pub(crate) fn try_assess_with(&self, rules: Arc<RuleSet>, attrs: &Attributes) -> Result<Assessment, Arc<RuleSet>> {
        // A rule set that reads no velocity attribute needs no record: the store is not asked.
        if rules.reads.is_empty() {
            return Ok(self.conclude(attrs, None, rules, &NO_VELOCITY, true));
        }
        let attempt = Attempt::from_attributes(attrs);
        let mut counts = VelocityCounts::default();
        Ok(match self.inner.store.try_record_attempt_into(&attempt, rules.reads, &mut counts) {
            None => return Err(rules),
            Some(Ok(())) => self.conclude(attrs, Some(&attempt), rules, &counts, true),
            Some(Err(e)) => self.conclude_with(attrs, &attempt, rules, Err(e)),
        })
    }

    fn conclude_with<'a>(
        &self,
        attrs: &'a Attributes,
        attempt: &Attempt<'a>,
        rules: Arc<RuleSet>,
        result: Result<VelocityCounts, crate::VelocityError>,
    ) -> Assessment {
        match result {
            Ok(counts) => self.conclude(attrs, Some(attempt), rules, &counts, true),
            Err(e) => {
                tracing::warn!(target: "palisade_fraud", engine = &*self.inner.name, error = %e, policy = ?self.inner.on_store_down, "velocity store unavailable");
                self.conclude(attrs, Some(attempt), rules, &NO_VELOCITY, false)
            }
        }
    }

    /// Evaluates, applies the store-down policy, logs and counts. `attempt`, when one was made, gives the amount
    /// in minor units (the rules then do not compute it again), and the email when velocity's form of it is the
    /// rules' (nothing was folded away or lower-cased).
    fn conclude<'a>(
        &self,
        attrs: &'a Attributes,
        attempt: Option<&Attempt<'a>>,
        rules: Arc<RuleSet>,
        counts: &VelocityCounts,
        available: bool,
    ) -> Assessment {
        let mut scope = Scope::new(attrs, counts);
        scope.velocity_down = !available;
        if let Some(attempt) = attempt {
            // Velocity folds a `+tag` away (`attributes::email_velocity_form`), the rules see the address: its
            // borrowed form is the rules' own, an owned one may not be.
            if let Some(email @ Cow::Borrowed(_)) = &attempt.subjects[Subject::Email.index()] {
                scope.set_email(email.clone());
            }
            scope.set_amount_minor(attempt.amount_minor);
        }
        // Only a rule that is enforced can make the store's outage matter: shadow rules reading velocity are
        // reported as errors (not run on made-up zeros) and change nothing.
        let enforced_velocity = !rules.enforced_reads.is_empty();
        let mut a = self.evaluate_with(rules, &mut scope);
        if !available {
            a.velocity_available = false;
        }
        if !available && enforced_velocity {
            let floor = match self.inner.on_store_down {
                OnStoreDown::Review => Some(Decision::Review),
                OnStoreDown::Block => Some(Decision::Block),
                OnStoreDown::Ignore => None,
            };
            if let Some(floor) = floor.filter(|f| *f > a.decision) {
                a.decision = floor;
                a.decided_by = Some(VELOCITY_STORE_NAME.clone());
            }
        }
        self.record(attrs, &a);
        a
    }

    /// True when the rules in force read a velocity attribute: only then are attempts and declines recorded.
    pub(crate) fn reads_velocity(&self) -> bool {
        !self.inner.rules.load().reads.is_empty()
    }

    /// Records a decline (the gateway declined the charge) for the attempt's subjects, so `declines_per_*`
    /// and the card-testing rule see it. The layer calls this itself. Nothing is recorded while the rules in
    /// force read no velocity attribute.
    ///
    /// # Errors
    /// [`VelocityError`](crate::VelocityError) when the store is down (the decline is then not counted).
    pub async fn record_decline(&self, attrs: &Attributes) -> Result<(), crate::VelocityError> {
        if !self.reads_velocity() {
            return Ok(());
        }
        self.inner.store.record_decline(&Attempt::from_attributes(attrs)).await
    }

    pub(crate) async fn record_decline_attempt(&self, attempt: &Attempt<'_>) {
        if !self.reads_velocity() {
            return;
        }
        if let Err(e) = self.inner.store.record_decline(attempt).await {
            tracing::warn!(target: "palisade_fraud", engine = &*self.inner.name, error = %e, "decline not recorded: velocity store unavailable");
        }
    }

    /// Evaluates the rules on `attrs` and given velocity counts, without touching the store (no logging, no
    /// metrics; rule counters do count).
    #[must_use]
    pub fn evaluate(&self, attrs: &Attributes, counts: &VelocityCounts) -> Assessment {
        self.evaluate_with(self.inner.rules.load_full(), &mut Scope::new(attrs, counts))
    }

    fn evaluate_with(&self, rules: Arc<RuleSet>, scope: &mut Scope<'_>) -> Assessment {
        let mut decision = Decision::Approve;
        let mut decided_by: Option<&Arc<str>> = None;
        let mut sink = OutcomeSink::new(rules.rules.len());
        for (i, rule) in rules.rules.iter().enumerate() {
            // A shadow rule whose velocity the store could not give is not run on zeros: it is reported as an
            // error, and (a shadow rule) changes nothing.
            if scope.velocity_down && rule.shadow && rule.uses_velocity() {
                rule.stats.errors.fetch_add(1, Ordering::Relaxed);
                sink.error(i, VELOCITY_UNAVAILABLE);
                continue;
            }
            match rule.matches(scope) {
                Ok(false) => {}
                Ok(true) if rule.shadow => {
                    rule.stats.shadow_matched.fetch_add(1, Ordering::Relaxed);
                    sink.matched(i, RuleOutcome::ShadowMatched);
                }
                Ok(true) => {
                    rule.stats.matched.fetch_add(1, Ordering::Relaxed);
                    sink.matched(i, RuleOutcome::Matched);
                    match rule.action {
                        Action::Score(n) => scope.score = scope.score.saturating_add(n),
                        // The first enforced block ends the evaluation: the rules after it stay `Skipped`.
                        Action::Block => {
                            if decision < Decision::Block {
                                decision = Decision::Block;
                                decided_by = Some(&rule.name);
                            }
                            sink.skip_after(i);
                            break;
                        }
                        // A challenge the customer has met (3-D Secure done) stays a matched verdict and does not
                        // stop the charge: challenging again would ask for what was given, for ever.
                        Action::Challenge if scope.attrs.authenticated => {}
                        action => {
                            if let Some(d) = action.decision().filter(|d| *d > decision) {
                                decision = d;
                                decided_by = Some(&rule.name);
                            }
                        }
                    }
                }
                Err(e) => {
                    rule.stats.errors.fetch_add(1, Ordering::Relaxed);
                    sink.error(i, e);
                    // An enforced rule the engine could not evaluate: a person looks. Never a block, so a rule
                    // that breaks at run time cannot stop every customer, nor wave a charge through unseen.
                    if !rule.shadow && decision < Decision::Review {
                        decision = Decision::Review;
                        decided_by = Some(&rule.name);
                    }
                }
            }
        }
        let score = scope.score;
        let mut decided_by = decided_by.cloned();
        if decision < Decision::Block && score >= self.inner.block_threshold {
            decision = Decision::Block;
            decided_by = Some(BLOCK_THRESHOLD_NAME.clone());
        } else if decision < Decision::Review && score >= self.inner.review_threshold {
            decision = Decision::Review;
            decided_by = Some(REVIEW_THRESHOLD_NAME.clone());
        }
        sink.finish(rules, decision, score, decided_by)
    }

    /// Logs the verdict (no PAN, email masked, card fingerprint never) and counts it.
    fn record(&self, attrs: &Attributes, a: &Assessment) {
        let engine = &*self.inner.name;
        let level = if a.decision == Decision::Approve { tracing::Level::DEBUG } else { tracing::Level::INFO };
        // Masking allocates: only when someone listens.
        let listening = if level == tracing::Level::DEBUG {
            tracing::enabled!(target: "palisade_fraud", tracing::Level::DEBUG)
        } else {
            tracing::enabled!(target: "palisade_fraud", tracing::Level::INFO)
        };
        if listening {
            let email = attrs.email.as_deref().map(mask_email);
            let decided_by = a.decided_by.as_deref().unwrap_or("");
            match a.decision {
                Decision::Approve => {
                    tracing::debug!(target: "palisade_fraud", engine, decision = a.decision.as_str(), score = a.score, email = email.as_deref(), "fraud screening")
                }
                _ => {
                    tracing::info!(target: "palisade_fraud", engine, decision = a.decision.as_str(), score = a.score, decided_by, email = email.as_deref(), velocity = a.velocity_available, "fraud screening")
                }
            }
        }
        // Only rules that matched or failed are logged and counted: build their verdicts, not the others'.
        #[cfg(feature = "metrics")]
        {
            let key = &self.inner.decision_keys[a.decision as usize];
            metrics::with_recorder(|r| r.register_counter(key, &METRICS_METADATA)).increment(1);
        }
        // Only the rules that matched or failed are logged and counted; no verdict is built for them.
        let set = a.rule_set();
        let outcomes = a.outcomes();
        // The rules that matched or failed, by index: those below 31 one bit each, the rest scanned.
        let mut bits = a.notable_rules();
        while bits != 0 {
            let first = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let end = if first == NOTABLE_SCAN { outcomes.len() } else { first + 1 };
            for i in first..end {
                let (Some(rule), Some(&outcome)) = (set.rules.get(i), outcomes.get(i)) else { continue };
                self.record_rule(a, i, rule, outcome);
            }
        }
    }

    /// Logs and counts the outcome of rule `i` of `a`'s rule set (nothing for `NotMatched` and `Skipped`).
    fn record_rule(&self, a: &Assessment, i: usize, rule: &Rule, outcome: RuleOutcome) {
        let engine = &*self.inner.name;
        #[cfg(feature = "metrics")]
        let notable = |o: &RuleOutcome| o.is_match() || *o == RuleOutcome::Error;
        #[cfg(feature = "metrics")]
        let set = a.rule_set();
        match outcome {
            RuleOutcome::ShadowMatched => {
                tracing::info!(target: "palisade_fraud", engine, rule = &*rule.name, action = %rule.action, "shadow rule matched (not enforced)");
            }
            RuleOutcome::Error => {
                let error = a.error_reason(i).unwrap_or("");
                tracing::warn!(target: "palisade_fraud", engine, rule = &*rule.name, error, "fraud rule failed to evaluate");
            }
            _ => {}
        }
        #[cfg(feature = "metrics")]
        if notable(&outcome) {
            let slot = match outcome {
                RuleOutcome::Matched => 0,
                RuleOutcome::ShadowMatched => 1,
                _ => 2,
            };
            match set.match_keys.get(i) {
                Some(keys) => {
                    metrics::with_recorder(|r| r.register_counter(&keys[slot], &METRICS_METADATA)).increment(1);
                }
                None => metrics::counter!(
                    "palisade_fraud_rule_matches_total",
                    "engine" => self.inner.name.clone(),
                    "rule" => rule.name.to_string(),
                    "outcome" => outcome.as_str()
                )
                .increment(1),
            }
        }
    }
}
