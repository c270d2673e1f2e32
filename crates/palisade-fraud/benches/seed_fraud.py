"""The seed's fraud bench (seed_bench.py `bench_fraud`, whose file does not parse: its docstring is never closed),
run alone: /tmp/palisade-seed/bin/python crates/palisade-fraud/benches/seed_fraud.py [runs]"""
import json, sys, time, logging

from payments import fraud


def bench_fraud(n=50_000):
    logging.disable(logging.CRITICAL)
    tracker = fraud.VelocityTracker()
    engine = fraud.FraudEngine(rules=[
        fraud.blocklist_rule(blocked_emails={f"bad{i}@example.com" for i in range(1000)},
                             blocked_ips={f"10.9.{i}.1" for i in range(100)}, blocked_cards={f"tok_bad{i}" for i in range(100)}),
        fraud.avs_cvv_rule(),
        fraud.velocity_rule(tracker, key_fn=lambda c: c.user_id, max_count=5, window_seconds=3600, rule_name="user_hourly"),
        fraud.velocity_rule(tracker, key_fn=lambda c: c.card_token, max_count=3, window_seconds=600, rule_name="card_10m"),
        fraud.velocity_rule(tracker, key_fn=lambda c: c.ip_address, max_count=20, window_seconds=3600, rule_name="ip_hourly"),
        fraud.country_mismatch_rule(),
        fraud.high_amount_rule(threshold=2000.0),
        fraud.high_amount_rule(threshold=5000.0, currency="EUR"),
        fraud.blocklist_rule(blocked_emails={"fraud@example.com"}),
        fraud.country_mismatch_rule(challenge_only=False),
    ], review_threshold=50)
    ctxs = [fraud.FraudContext(user_id=f"u{i % 5000}", email=f"c{i}@example.com", ip_address=f"10.0.{i % 250}.{i % 200}",
                               amount=float(10 + i % 3000), currency="USD", card_token=f"tok_{i % 20000}",
                               card_country="US", billing_country="US" if i % 10 else "GB", avs_result="Y", cvv_result="M")
            for i in range(n)]
    t = time.perf_counter()
    for c in ctxs:
        engine.evaluate(c)
    dt = time.perf_counter() - t
    return int(n / dt)


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(json.dumps({"fraud_10_rules_per_s": [bench_fraud() for _ in range(runs)]}))
