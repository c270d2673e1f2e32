//! What the engine decided, and why: the [`Decision`], the risk score, the rule that decided and every rule's
//! [`RuleVerdict`].

use std::fmt;
use std::sync::Arc;

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
    /// The condition could not be evaluated (treated as not matched; logged and counted).
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
    /// Why: the rule's condition (its source text for a rule file's rule), or the evaluation error.
    pub reason: Arc<str>,
}

/// The engine's full answer for one charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The decision.
    pub decision: Decision,
    /// The risk score after every `score` rule that matched (and the starting score).
    pub score: i64,
    /// The rule that decided (`review_threshold` / `block_threshold` when the score decided, `velocity_store`
    /// when the store was down); `None` for an approval nobody objected to.
    pub decided_by: Option<Arc<str>>,
    /// Every rule's verdict, in rule order.
    pub verdicts: Vec<RuleVerdict>,
    /// False when the velocity store could not be reached and velocity attributes were 0.
    pub velocity_available: bool,
}

impl Assessment {
    /// The verdicts of the shadow rules that matched (what they would have done).
    pub fn shadow_matches(&self) -> impl Iterator<Item = &RuleVerdict> {
        self.verdicts.iter().filter(|v| v.outcome == RuleOutcome::ShadowMatched)
    }
    /// The verdicts of the rules that matched and applied.
    pub fn matches(&self) -> impl Iterator<Item = &RuleVerdict> {
        self.verdicts.iter().filter(|v| v.outcome == RuleOutcome::Matched)
    }
    /// The verdict of the rule named `name`.
    #[must_use]
    pub fn verdict(&self, name: &str) -> Option<&RuleVerdict> {
        self.verdicts.iter().find(|v| &*v.rule == name)
    }
}
