"""DuckDB peer of `palisade recon`: read_csv_auto both files, full outer join on id, the same comparisons
(currency, amount, status, one side only → missing or pending within the lag, duplicate ids per side), every
difference written out to a CSV file.

Usage: python duckdb_recon.py INTERNAL GATEWAY OUT --as-of 2024-05-31T00:00:00Z [--lag-hours 24] [--threads N]
Prints one JSON object: counts per type and the seconds spent.
"""
import argparse
import json
import time

import duckdb

p = argparse.ArgumentParser()
p.add_argument("internal")
p.add_argument("gateway")
p.add_argument("out")
p.add_argument("--as-of", required=True)
p.add_argument("--lag-hours", type=float, default=24)
p.add_argument("--threads", type=int, default=0, help="0: DuckDB's default (all cores)")
a = p.parse_args()

t0 = time.perf_counter()
con = duckdb.connect()
if a.threads:
    con.execute(f"SET threads TO {a.threads}")
con.execute("SET preserve_insertion_order = false")
cutoff = f"(TIMESTAMPTZ '{a.as_of}' - INTERVAL {int(a.lag_hours * 3600)} SECOND)"
side = """SELECT id, first(amount) AS amount, first(currency) AS currency, first(status) AS status,
                 first(created_at) AS created_at, count(*) AS n
          FROM read_csv_auto('{path}') GROUP BY id"""
con.execute(f"""
COPY (
  WITH i AS ({side.format(path=a.internal)}),
       g AS ({side.format(path=a.gateway)}),
       j AS (SELECT coalesce(i.id, g.id) AS id,
                    i.amount AS i_amount, i.currency AS i_currency, i.status AS i_status, i.created_at AS i_created, i.n AS i_n,
                    g.amount AS g_amount, g.currency AS g_currency, g.status AS g_status, g.created_at AS g_created, g.n AS g_n
             FROM i FULL OUTER JOIN g ON i.id = g.id),
       t AS (SELECT *, unnest(list_filter([
               CASE WHEN i_n IS NULL THEN CASE WHEN g_created > {cutoff} THEN 'pending' ELSE 'missing_internal' END END,
               CASE WHEN g_n IS NULL THEN CASE WHEN i_created > {cutoff} THEN 'pending' ELSE 'missing_gateway' END END,
               CASE WHEN i_currency <> g_currency THEN 'currency_mismatch' END,
               CASE WHEN i_currency = g_currency AND i_amount <> g_amount THEN 'amount_mismatch' END,
               CASE WHEN i_status <> g_status THEN 'status_mismatch' END,
               CASE WHEN i_n > 1 THEN 'duplicate_internal' END,
               CASE WHEN g_n > 1 THEN 'duplicate_gateway' END], lambda x: x IS NOT NULL)) AS type
             FROM j
             WHERE i_n IS NULL OR g_n IS NULL OR i_currency <> g_currency OR i_amount <> g_amount
                OR i_status <> g_status OR i_n > 1 OR g_n > 1)
  SELECT type, id, i_amount, i_currency, i_status, i_created, g_amount, g_currency, g_status, g_created FROM t
) TO '{a.out}' (HEADER, DELIMITER ',')
""")
counts = dict(con.execute(f"SELECT type, count(*) FROM read_csv_auto('{a.out}') GROUP BY type ORDER BY type").fetchall())
print(json.dumps({"tool": "duckdb", "version": duckdb.__version__, "seconds": round(time.perf_counter() - t0, 3), **counts}))
