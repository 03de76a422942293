#!/usr/bin/env python3
"""Merges the harness's JSON lines of an interleaved run (`INTERLEAVE=1 benches/load/run.sh`).

    merge.py OUT.jsonl PART.jsonl...

Each part is one round of one cell (mode, concurrency) with one run per target. The rows of a
target and cell are joined into one row whose runs are every round's run, with the medians
recomputed as the harness computes them (`load.py`), so the shared `report.py` writes the
report. Then prints, for the report, each gateway's ratio to the first target (the floor,
nginx-proxy) per cell, round by round: the rounds are what was measured side by side.
"""
import json
import statistics
import sys


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def merged(rows):
    first = dict(rows[0])
    runs = [run for row in rows for run in row.get("runs") or []]
    first["runs"] = runs
    first["discarded_runs"] = [d for row in rows for d in row.get("discarded_runs") or []]
    first["problems"] = [p for row in rows for p in row.get("problems") or []]
    first["valid"] = all(row.get("valid") for row in rows)
    samples = [row.get("post_sample") or {} for row in rows]
    first["post_sample"] = {k: sum(s.get(k, 0) for s in samples) for k in ("n", "bad")}
    agg = {k: median([r.get(k) for r in runs])
           for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "ttfb_p50_ms", "gw_cpu_pct")}
    agg["other_cpu_pct_max"] = max((r.get("other_cpu_pct") or 0) for r in runs) if runs else None
    agg["errors"] = sum(r["errors"] for r in runs)
    agg["requests"] = sum(r["requests"] for r in runs)
    agg["peak_rss_mib"] = max((r.get("peak_rss_mib") or 0) for r in runs) or None
    first["median"] = agg
    return first


def main():
    out, parts = sys.argv[1], [p for p in sys.argv[2:] if p]
    groups = {}
    for part in parts:
        for line in open(part):
            if line.strip():
                row = json.loads(line)
                groups.setdefault((row["label"], row["stream"], row["concurrency"]), []).append(row)
    labels = list(dict.fromkeys(label for label, _, _ in groups))
    keys = sorted(groups, key=lambda k: (labels.index(k[0]), k[1], k[2]))
    with open(out, "w") as f:
        for key in keys:
            f.write(json.dumps(merged(groups[key])) + "\n")

    floor = labels[0]
    lines = [f"\n## Side by side with {floor}, round by round\n",
             f"Each round measured every target in one cell minutes apart (the order reversed every "
             f"other round). req/s as a share of {floor}'s in the same round; p50 as the "
             "difference.\n",
             "| target | mode | c | req/s share per round | median share | Δp50 µs per round | median Δp50 µs |",
             "|---|---|--:|---|--:|---|--:|"]
    for label in labels[1:]:
        for stream in (False, True):
            for c in sorted({k[2] for k in groups if k[0] == label and k[1] == stream}):
                ours, base = groups.get((label, stream, c)), groups.get((floor, stream, c))
                if not ours or not base:
                    continue
                pairs = [(o["runs"][0], b["runs"][0]) for o, b in zip(ours, base)
                         if o.get("runs") and b.get("runs")]
                shares = [100.0 * o["rps"] / b["rps"] for o, b in pairs if b["rps"]]
                deltas = [1000.0 * (o["p50_ms"] - b["p50_ms"]) for o, b in pairs]
                lines.append(
                    f"| {label} | {'stream' if stream else 'json'} | {c} | "
                    f"{' / '.join(f'{s:.0f} %' for s in shares)} | {median(shares) or 0:.0f} % | "
                    f"{' / '.join(f'{d:+.0f}' for d in deltas)} | {median(deltas) or 0:+.0f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
