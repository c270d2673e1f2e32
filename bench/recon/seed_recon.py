"""The seed's `payments.reconciliation.Reconciler` (prod_py_utils 1.0.0) on the same files: read both CSVs with
the csv module into TransactionRecords (Decimal amounts, epoch-second times), reconcile, write the
discrepancies to a CSV.

Usage: /tmp/palisade-seed/bin/python seed_recon.py INTERNAL GATEWAY OUT
Prints one JSON object: counts per type and the seconds spent. The seed has no duplicate, currency-mismatch or
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
report = reconciliation.Reconciler().reconcile(records(internal), records(gateway))
counts = {}
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["type", "id", "detail"])
    for d in report.discrepancies:
        w.writerow([d.type.value, d.transaction_id, d.detail])
        counts[d.type.value] = counts.get(d.type.value, 0) + 1
print(json.dumps({"tool": "seed", "seconds": round(time.perf_counter() - t0, 3), **dict(sorted(counts.items()))}))
