"""pandas peer of `palisade recon`: read_csv both files, outer merge on id, compare currency, amount and status;
one side only → missing or pending within the lag; duplicate ids per side; the differences written to a CSV.

Usage: python pandas_recon.py INTERNAL GATEWAY OUT --as-of 2024-05-31T00:00:00Z [--lag-hours 24]
Prints one JSON object: counts per type and the seconds spent. Amounts are read as float64 (what read_csv does).
"""
import argparse
import json
import time

import pandas as pd

p = argparse.ArgumentParser()
p.add_argument("internal")
p.add_argument("gateway")
p.add_argument("out")
p.add_argument("--as-of", required=True)
p.add_argument("--lag-hours", type=float, default=24)
a = p.parse_args()

t0 = time.perf_counter()
cols = ["id", "amount", "currency", "status", "created_at"]
i = pd.read_csv(a.internal, usecols=cols)
g = pd.read_csv(a.gateway, usecols=cols)
cutoff = pd.Timestamp(a.as_of) - pd.Timedelta(hours=a.lag_hours)

out = []
for side, df in (("internal", i), ("gateway", g)):
    dup = df[df.duplicated("id")]
    out.append(pd.DataFrame({"type": f"duplicate_{side}", "id": dup["id"]}))
m = i.drop_duplicates("id").merge(g.drop_duplicates("id"), on="id", how="outer", suffixes=("_i", "_g"), indicator=True)
left, right, both = m["_merge"] == "left_only", m["_merge"] == "right_only", m["_merge"] == "both"
i_created = pd.to_datetime(m["created_at_i"], utc=True)
g_created = pd.to_datetime(m["created_at_g"], utc=True)
out.append(pd.DataFrame({"type": "missing_gateway", "id": m.loc[left & (i_created <= cutoff), "id"]}))
out.append(pd.DataFrame({"type": "missing_internal", "id": m.loc[right & (g_created <= cutoff), "id"]}))
out.append(pd.DataFrame({"type": "pending", "id": m.loc[(left & (i_created > cutoff)) | (right & (g_created > cutoff)), "id"]}))
cur = both & (m["currency_i"] != m["currency_g"])
out.append(pd.DataFrame({"type": "currency_mismatch", "id": m.loc[cur, "id"]}))
out.append(pd.DataFrame({"type": "amount_mismatch", "id": m.loc[both & ~cur & (m["amount_i"] != m["amount_g"]), "id"]}))
out.append(pd.DataFrame({"type": "status_mismatch", "id": m.loc[both & (m["status_i"] != m["status_g"]), "id"]}))
res = pd.concat(out, ignore_index=True).merge(m.drop(columns="_merge"), on="id", how="left")
res.to_csv(a.out, index=False)
counts = res["type"].value_counts().sort_index().to_dict()
print(json.dumps({"tool": "pandas", "version": pd.__version__, "seconds": round(time.perf_counter() - t0, 3), **counts}))
