#!/usr/bin/env bash
# Runs the packet-format benchmarks (protocol/benches/sphinx.rs) and prints
# each benchmark's median next to the project's targets:
#   hop processing (process_packet/*)    median <= 45 us
#   5-hop packet creation (build_packet/5_hops) median <= 300 us
#
# Usage: scripts/bench.sh [criterion args...]
#   Every argument goes to the benchmark binary (after `--`), e.g.
#   scripts/bench.sh process_packet          only benchmarks matching a filter
#   scripts/bench.sh --save-baseline main    keep this run as baseline "main"
#   scripts/bench.sh --baseline main         compare with baseline "main"
# Set BENCH_STRICT=1 to exit with status 1 when a target is missed (medians
# are noisy: on a busy or throttled machine a miss may not be real).
#
# Medians are read from criterion's target/criterion/<group>/<name>/new/estimates.json
# (median.point_estimate, in nanoseconds). Rows not measured by this run (a
# filter excluded them) are marked "stale".
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
cargo bench -p leak-protocol --bench sphinx -- "$@"

target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

python3 - "$target_dir/criterion" "$started" <<'EOF'
import json
import os
import sys

root, started = sys.argv[1], int(sys.argv[2])

# (benchmark id, target median in ns or None)
BENCHES = [
    ("x25519/diffie_hellman", None),
    ("process_packet/relay_hop", 45_000),
    ("process_packet/exit_hop", 45_000),
    ("build_packet/3_hops", None),
    ("build_packet/5_hops", 300_000),
    ("build_reply_block/3_hops", None),
]


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def load(bench):
    path = os.path.join(root, *bench.split("/"), "new", "estimates.json")
    try:
        with open(path) as f:
            return path, json.load(f)
    except FileNotFoundError:
        return path, None


# One X25519 exchange, to express every cost in scalar multiplications.
_, dh = load("x25519/diffie_hellman")
dh_ns = dh["median"]["point_estimate"] if dh else None

rows = []
missed = 0
for bench, target in BENCHES:
    path, est = load(bench)
    if est is None:
        continue
    median = est["median"]["point_estimate"]
    ratio = f"{median / dh_ns:.1f}" if dh_ns else "?"
    ci = est["median"]["confidence_interval"]
    spread = f"[{fmt(ci['lower_bound'])} – {fmt(ci['upper_bound'])}]"
    if target is None:
        goal, status = "–", ""
    else:
        goal = f"≤ {fmt(target)}"
        status = "ok" if median <= target else "MISSED"
    stale = os.path.getmtime(path) < started
    if stale:
        status = (status + " (stale)").strip()
    elif target is not None and median > target:
        missed += 1
    rows.append((bench, fmt(median), spread, ratio, goal, status))

if not rows:
    sys.exit(f"no criterion estimates under {root}")

header = ("benchmark", "median", "95% CI of median", "x X25519", "target", "status")
widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
print()
print(line(header))
print(line(tuple("-" * w for w in widths)))
for r in rows:
    print(line(r))

if missed:
    print(f"\n{missed} target(s) missed in this run.")
    if os.environ.get("BENCH_STRICT") == "1":
        sys.exit(1)
EOF
