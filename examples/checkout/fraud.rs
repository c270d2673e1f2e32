//! Scenario: fraud block — a blocklisted email is refused before any gateway call, and the checkout saga gives
//! the stock back. The saga reserves stock, then authorizes through `palisade::fraud::FraudLayer` (rules from a
//! rule file) in front of the simulated gateway, then captures and ships.

use palisade::core::*;
use palisade::fraud::FraudEngine;
use palisade::saga::{Event, MemoryLog, Orchestrator, SagaRecord, SagaState};

use crate::Env;
use crate::report::Report;
use crate::saga::{Shop, checkout_by, checkout_saga};

/// The rules, as an operator would keep them in a file (reloadable with `FraudEngine::reload`).
const RULES: &str = "block if email == \"fraud@example.com\"  # the blocklist: chargebacks from this address\n";

fn count(record: Option<&SagaRecord>, pick: impl Fn(&Event) -> bool) -> usize {
    record.map_or(0, |rec| rec.events.iter().filter(|e| pick(e)).count())
}

pub async fn fraud_block(r: &mut Report, _env: &Env) {
    r.scenario(
        "fraud block: a blocklisted email is rejected before any gateway call; the stock reservation is released",
        "The checkout saga reserves stock, then authorizes the card through the FraudLayer, which screens every\n\
         charge and authorization against the operator's rule file before the gateway sees it. A customer on\n\
         the blocklist checks out a mug: stock is reserved, the screen refuses the authorization (402\n\
         fraud_blocked, a Terminal error, never retried), the gateway is never called, and the saga undoes\n\
         what it did: the reservation is released. A customer not on the list goes through the same screen.",
    );
    let engine = match FraudEngine::builder().rule_file(RULES) {
        Ok(b) => b.build(),
        Err(e) => {
            r.check(&format!("the rule file parses ({e})"), false);
            return;
        }
    };
    r.step(format!("rule file: {}", RULES.trim()));
    let shop = Shop::screened(engine);
    let orchestrator = Orchestrator::builder(MemoryLog::new()).owner("checkout-example").build();
    let saga = orchestrator.register(checkout_saga(&shop));

    // A legitimate customer first: the screen lets the authorization through.
    let good = "order-1020";
    let report = orchestrator.start(&saga, good, checkout_by(good, "25.00", "alice@example.com")).await;
    r.step(format!("{good} (alice@example.com): saga ended {:?}", report.as_ref().map(|rep| rep.state).ok()));
    r.check(
        "a customer not on the blocklist is screened, authorized and captured: the saga completes",
        matches!(&report, Ok(rep) if rep.state == SagaState::Completed)
            && shop.ledger_ops(good) == [Operation::Authorize, Operation::Capture],
    );

    // The blocklisted customer.
    let order = "order-1021";
    let calls_before = shop.sim.calls();
    let holds_before = shop.held();
    let report = orchestrator.start(&saga, order, checkout_by(order, "89.00", "fraud@example.com")).await;
    let record = orchestrator.get(order).await.ok().flatten();
    for e in record.iter().flat_map(|rec| &rec.events) {
        match e {
            Event::StepDone { step, output } => r.step(format!("{step}: done → {output}")),
            Event::StepFailed { step, error, outcome, .. } => r.step(format!("{step}: failed ({outcome:?}): {error}")),
            Event::CompensationDone { step } => r.step(format!("{step}: compensated")),
            Event::Finished { state } => r.step(format!("saga finished: {state}")),
            _ => {}
        }
    }
    r.step(format!("warehouse: {}", shop.warehouse().join(", ")));

    r.check(
        "the saga ends Compensated, with fraud_blocked (a Terminal error) as its error",
        matches!(&report, Ok(rep) if rep.state == SagaState::Compensated
            && rep.error.as_ref().is_some_and(|e| e.kind() == ErrorKind::FraudBlocked && e.outcome() == Outcome::Terminal)),
    );
    let attempts = count(record.as_ref(), |e| matches!(e, Event::StepStarted { step, .. } if step == "authorize"));
    r.check("the blocked authorization was attempted once, not retried", attempts == 1);
    r.check(
        "no gateway call was made: the simulator saw no request, and its ledger has no entry for order-1021",
        shop.sim.calls() == calls_before && shop.sim.entries_for(order).is_empty(),
    );
    let undone = record.as_ref().map_or_else(Vec::new, |rec| {
        rec.events
            .iter()
            .filter_map(|e| match e {
                Event::CompensationDone { step } => Some(step.as_str()),
                _ => None,
            })
            .collect()
    });
    r.check("only the reservation needed undoing, and it was compensated", undone == ["reserve"]);
    r.check(
        "the stock reserved for order-1021 was released: the warehouse holds no more than before",
        shop.held() == holds_before
            && shop.warehouse().ends_with(&["reserve mug".to_owned(), "release mug".to_owned()]),
    );
}
