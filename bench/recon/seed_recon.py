"""The seed's `payments.reconciliation.Reconciler` (prod_py_utils 1.0.0) on the same files: read both CSVs with
the csv module into TransactionRecords (Decimal amounts, epoch-second times), reconcile, write the
discrepancies to a CSV.

Usage: /tmp/palisade-seed/bin/python seed_recon.py INTERNAL GATEWAY OUT
Prints one JSON object: counts per type and the seconds spent (in all, reading the files, and in
`Reconciler.reconcile` alone on the in-memory records, which is what ../shared/seed-bench measures). The seed has no duplicate, currency-mismatch or
pending kinds (a later duplicate silently replaces the first; a currency mismatch is an amount_mismatch).
"""
import csv
import json
import logging
import sys
import time
from datetime import datetime
from decimal import Decimal

from payments import reconciliation

t0 = time.perf_counter()
logging.disable(logging.CRITICAL)
R = reconciliation.TransactionRecord


def records(path):
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            ts = datetime.fromisoformat(row["created_at"].replace("Z", "+00:00")).timestamp()
            yield R(row["id"], Decimal(row["amount"]), row["currency"], row["status"], ts)


internal, gateway, out = sys.argv[1:4]
internal_records, gateway_records = list(records(internal)), list(records(gateway))
t1 = time.perf_counter()
report = reconciliation.Reconciler().reconcile(internal_records, gateway_records)
t2 = time.perf_counter()
counts = {}
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["type", "id", "detail"])
    for d in report.discrepancies:
        w.writerow([d.type.value, d.transaction_id, d.detail])
        counts[d.type.value] = counts.get(d.type.value, 0) + 1
print(json.dumps({"tool": "seed", "seconds": round(time.perf_counter() - t0, 3), "load_seconds": round(t1 - t0, 3),
                  "reconcile_seconds": round(t2 - t1, 3), **dict(sorted(counts.items()))}))
