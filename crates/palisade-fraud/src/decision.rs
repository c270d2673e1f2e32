//! What the engine decided, and why: the [`Decision`], the risk score, the rule that decided and every rule's
//! [`RuleVerdict`].

use std::fmt;
use std::sync::Arc;

use crate::rules::{Rule, RuleSet};

/// The engine's decision about a charge. Ordered by severity: `Approve < Review < Challenge < Block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// Let it through.
    Approve,
    /// Let it through, and have a person look at it (the verdict rides on the request and goes to an event).
    Review,
    /// Ask the customer to authenticate (3-D Secure / SCA) before charging.
    Challenge,
    /// Refuse it before any gateway call.
    Block,
}

impl Decision {
    /// Stable lowercase name, used in logs and metrics labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Review => "review",
            Decision::Challenge => "challenge",
            Decision::Block => "block",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Block the charge; later rules are not evaluated.
    Block,
    /// Send the charge to review.
    Review,
    /// Ask for customer authentication.
    Challenge,
    /// Add to the risk score (negative lowers it).
    Score(i64),
}

impl Action {
    /// Stable lowercase name (`block`, `review`, `challenge`, `score`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Review => "review",
            Action::Challenge => "challenge",
            Action::Score(_) => "score",
        }
    }
    /// The decision this action forces, if any.
    #[must_use]
    pub const fn decision(self) -> Option<Decision> {
        match self {
            Action::Block => Some(Decision::Block),
            Action::Review => Some(Decision::Review),
            Action::Challenge => Some(Decision::Challenge),
            Action::Score(_) => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Score(n) => write!(f, "score {n}"),
            a => f.write_str(a.as_str()),
        }
    }
}

/// How one rule turned out for one charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuleOutcome {
    /// The condition held and the action applied.
    Matched,
    /// A shadow rule's condition held: logged and counted, not enforced.
    ShadowMatched,
    /// The condition did not hold.
    NotMatched,
    /// Not evaluated: an earlier rule blocked.
    Skipped,
    /// The condition could not be evaluated (logged and counted; an enforced rule makes the decision at least
    /// `Review`), or a shadow rule reading velocity while the velocity store is down was not evaluated.
    Error,
}

impl RuleOutcome {
    /// Stable lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleOutcome::Matched => "matched",
            RuleOutcome::ShadowMatched => "shadow_matched",
            RuleOutcome::NotMatched => "not_matched",
            RuleOutcome::Skipped => "skipped",
            RuleOutcome::Error => "error",
        }
    }
    /// True for `Matched` and `ShadowMatched`.
    #[must_use]
    pub const fn is_match(self) -> bool {
        matches!(self, RuleOutcome::Matched | RuleOutcome::ShadowMatched)
    }
}

/// One rule's verdict on one charge: for audit and for tuning rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleVerdict {
    /// The rule's name.
    pub rule: Arc<str>,
    /// Its action.
    pub action: Action,
    /// Whether it is a shadow rule.
    pub shadow: bool,
    /// How it turned out.
    pub outcome: RuleOutcome,
    /// Why: the rule's condition (its source text for a rule file's rule), or for an error its kind
    /// (`evaluation error: division by zero`), never the values involved.
    pub reason: Arc<str>,
}

/// Rule outcomes kept inline up to this many rules (no allocation per decision); longer rule sets spill to the
/// heap.
const INLINE_OUTCOMES: usize = 32;

/// One outcome per rule: the first [`INLINE_OUTCOMES`] inline, the rest (long rule sets) on the heap.
#[derive(Clone)]
struct Outcomes {
    /// The number of rules (saturated: above [`INLINE_OUTCOMES`] only says the outcomes are in `spill`). 32 bits,
    /// so an assessment is 128 bytes and moves with a few vector stores, not a `memcpy` call.
    len: u32,
    inline: [RuleOutcome; INLINE_OUTCOMES],
    spill: Vec<RuleOutcome>,
}

impl Outcomes {
    fn as_slice(&self) -> &[RuleOutcome] {
        let len = self.len as usize;
        if len <= INLINE_OUTCOMES { &self.inline[..len] } else { &self.spill }
    }
}

/// The engine's full answer for one charge.
///
/// Every rule's verdict is kept ([`Assessment::verdicts`]): the decision holds the rule set it was made with and
/// one outcome per rule, and builds each [`RuleVerdict`] when asked, so deciding allocates nothing for them.
#[derive(Clone)]
pub struct Assessment {
    /// The decision.
    pub decision: Decision,
    /// The risk score after every `score` rule that matched (and the starting score).
    pub score: i64,
    /// The rule that decided (`review_threshold` / `block_threshold` when the score decided, `velocity_store`
    /// when the store was down); `None` for an approval nobody objected to.
    pub decided_by: Option<Arc<str>>,
    /// False when the velocity store could not be reached and velocity attributes were 0.
    pub velocity_available: bool,
    rules: Arc<RuleSet>,
    outcomes: Outcomes,
    /// The reasons of the rules whose outcome is `Error`, by rule index: the kind of error, never a value.
    errors: Vec<(usize, &'static str)>,
    /// The rules that matched (enforced or in shadow) or failed, what is logged and counted per rule: bit `i` for
    /// rule `i` below [`NOTABLE_SCAN`], bit [`NOTABLE_SCAN`] for any rule from there on.
    notable: u32,
}

/// The bit of [`Assessment`]'s notable rules that stands for every rule from this index on (scanned).
pub(crate) const NOTABLE_SCAN: usize = 31;

/// The notable bit of rule `i`.
#[inline]
fn notable_bit(i: usize) -> u32 {
    1 << i.min(NOTABLE_SCAN)
}

/// Collects one outcome per rule of a rule set, in order (the rules not reached stay `Skipped`).
pub(crate) struct OutcomeSink {
    outcomes: Outcomes,
    errors: Vec<(usize, &'static str)>,
    notable: u32,
}

impl OutcomeSink {
    /// Every rule `NotMatched` until told otherwise (most rules of most decisions do not match, and then need no
    /// write); [`OutcomeSink::skip_after`] marks the rules a block left unevaluated.
    pub(crate) fn new(rules: usize) -> Self {
        // A long rule set keeps all its outcomes on the heap (the inline ones are then unused).
        let spill = if rules > INLINE_OUTCOMES { vec![RuleOutcome::NotMatched; rules] } else { Vec::new() };
        OutcomeSink {
            outcomes: Outcomes {
                len: u32::try_from(rules).unwrap_or(u32::MAX),
                inline: [RuleOutcome::NotMatched; INLINE_OUTCOMES],
                spill,
            },
            errors: Vec::new(),
            notable: 0,
        }
    }
    #[inline]
    fn slice_mut(&mut self) -> &mut [RuleOutcome] {
        let len = self.outcomes.len as usize;
        if len <= INLINE_OUTCOMES { &mut self.outcomes.inline[..len] } else { &mut self.outcomes.spill }
    }
    /// Rule `i` matched (`Matched` or `ShadowMatched`).
    #[inline]
    pub(crate) fn matched(&mut self, i: usize, outcome: RuleOutcome) {
        if let Some(o) = self.slice_mut().get_mut(i) {
            *o = outcome;
        }
        self.notable |= notable_bit(i);
    }
    /// The rules after `i` were not evaluated (rule `i` blocked).
    pub(crate) fn skip_after(&mut self, i: usize) {
        if let Some(rest) = self.slice_mut().get_mut(i + 1..) {
            rest.fill(RuleOutcome::Skipped);
        }
    }
    /// Rule `i` could not be evaluated, for `reason` (the kind of error: it holds no value of the charge).
    pub(crate) fn error(&mut self, i: usize, reason: &'static str) {
        if let Some(o) = self.slice_mut().get_mut(i) {
            *o = RuleOutcome::Error;
        }
        self.notable |= notable_bit(i);
        self.errors.push((i, reason));
    }
    pub(crate) fn finish(
        self,
        rules: Arc<RuleSet>,
        decision: Decision,
        score: i64,
        decided_by: Option<Arc<str>>,
    ) -> Assessment {
        Assessment {
            decision,
            score,
            decided_by,
            velocity_available: true,
            rules,
            notable: self.notable,
            outcomes: self.outcomes,
            errors: self.errors,
        }
    }
}

impl Assessment {
    /// Each rule's outcome, in rule order (what [`Assessment::verdicts`] is made of, without building them).
    #[must_use]
    pub fn outcomes(&self) -> &[RuleOutcome] {
        self.outcomes.as_slice()
    }
    /// The rules the decision was made with, in order (the same order as [`Assessment::outcomes`]).
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        self.rules.rules()
    }
    pub(crate) fn rule_set(&self) -> &RuleSet {
        &self.rules
    }
    /// The rules that matched (enforced or in shadow) or failed: bit `i` for rule `i` below [`NOTABLE_SCAN`], bit
    /// [`NOTABLE_SCAN`] for any from there on.
    pub(crate) fn notable_rules(&self) -> u32 {
        self.notable
    }
    /// The reason of rule `i`'s `Error` outcome.
    pub(crate) fn error_reason(&self, i: usize) -> Option<&str> {
        self.errors.iter().find(|(e, _)| *e == i).map(|(_, r)| *r)
    }
    /// Every rule's verdict, in rule order.
    pub fn verdicts(&self) -> impl ExactSizeIterator<Item = RuleVerdict> + '_ {
        self.rules.rules().iter().zip(self.outcomes()).enumerate().map(|(i, (rule, &outcome))| {
            let reason = match outcome {
                RuleOutcome::Error => self.errors.iter().find(|(e, _)| *e == i).map(|(_, r)| Arc::from(*r)),
                _ => None,
            };

            RuleVerdict {
                rule: rule.name.clone(),
                action: rule.action,
                shadow: rule.shadow,
                outcome,
                reason: reason.unwrap_or_else(|| rule.reason.clone()),
            }
        })
    }
    /// The verdicts of the shadow rules that matched (what they would have done).
    pub fn shadow_matches(&self) -> impl Iterator<Item = RuleVerdict> + '_ {
        self.verdicts().filter(|v| v.outcome == RuleOutcome::ShadowMatched)
    }
    /// The verdicts of the rules that matched and applied.
    pub fn matches(&self) -> impl Iterator<Item = RuleVerdict> + '_ {
        self.verdicts().filter(|v| v.outcome == RuleOutcome::Matched)
    }
    /// The verdict of the rule named `name`.
    #[must_use]
    pub fn verdict(&self, name: &str) -> Option<RuleVerdict> {
        self.verdicts().find(|v| &*v.rule == name)
    }
}

impl PartialEq for Assessment {
    fn eq(&self, other: &Self) -> bool {
        self.decision == other.decision
            && self.score == other.score
            && self.decided_by == other.decided_by
            && self.velocity_available == other.velocity_available
            && self.verdicts().eq(other.verdicts())
    }
}

impl Eq for Assessment {}

impl fmt::Debug for Assessment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assessment")
            .field("decision", &self.decision)
            .field("score", &self.score)
            .field("decided_by", &self.decided_by)
            .field("verdicts", &self.verdicts().collect::<Vec<_>>())
            .field("velocity_available", &self.velocity_available)
            .finish()
    }
}

// An assessment moves by value from the decision to its caller: at 128 bytes it is copied inline.
const _: () = assert!(std::mem::size_of::<Assessment>() <= 128);
