#!/usr/bin/env bash
# Runs the packet-format benchmarks (protocol/benches/sphinx.rs) and the
# moderation policy's (protocol/benches/policy.rs), and prints each
# benchmark's median next to the project's targets:
#   hop processing (process_packet/*)    median <= 45 us
#   5-hop packet creation (build_packet/5_hops) median <= 300 us
#   policy check of 2,000 bytes, rules and model (check_text/2000_bytes) median < 300 us
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
#
# Then the relay benchmark (tests/examples/relay_bench.rs, release build):
# three leak-node processes A -> B -> C on loopback, mixing delay 0, load
# offered in steps. A second table shows the packets per second the middle
# node B sustains (target >= 5,000 pkt/s), the two-hop latency p50/p99, B's
# peak RSS and CPU per packet, and the crypto-only ceiling (1 / median of
# process_packet/relay_hop, per core). It takes about a minute; set
# BENCH_RELAY=0 to skip it. BENCH_STRICT=1 covers its target too.
#
# Then the end-to-end benchmark (tests/examples/e2e_bench.rs, release
# build): three relays and an exit (leak-node processes) on loopback, the
# exit delivering over SMTP to a tiny SMTP server in the benchmark, mixing
# delay 0, three hops. A third table: from sending a leak with the
# leak-client library to the SMTP server accepting it, p50/p99 over 100
# leaks (target p50 < 50 ms; stamp pre-solved, and with the stamp's own
# solving time added), where the time goes, and the whole `leak send`
# command (process start, directory fetch, stamp, send, until it exits with
# Delivered) over 30 runs. It takes about a minute; set BENCH_E2E=0 to skip
# it. BENCH_STRICT=1 covers its target too.
#
# Then the exit benchmark (tests/examples/exit_bench.rs, release build): an
# exit (a leak-node process) and two relays; 2,000 leaks queued durably at
# the exit, then the time the exit takes to drain its queue into Postfix's
# smtp-sink (counting only) over 8 SMTP connections, next to smtp-source's
# rate into the same sink (target: at least 0.8 of it). With two CPUs or
# more, the exit, the sink and smtp-source share CPU 0 and the relays and
# the sender run on CPU 1 (taskset). Needs Postfix's tools (scripts/test.sh
# installs them) and root (smtp-sink runs as nobody). About 20 seconds;
# set BENCH_EXIT=0 to skip it.
#
# Then, only with BENCH_SCALE=1 (it takes about 40 minutes), the scale
# benchmark (tests/examples/scale_bench.rs, release build): 18 relays and 2
# exits as leak-node processes, 300 always-on agents (the agent's own code,
# in one process) at the shipped defaults, leaks at 10 a minute for
# BENCH_SCALE_MINUTES (15) minutes. Its table: packets per CPU second and
# the always-on senders one core carries (target >= 10,000), node CPU and
# memory per sender, bytes per sender per day (target <= 60 MB), delivery
# latency p50/p99 (targets <= 5 and <= 20 minutes). BENCH_STRICT=1 covers
# its targets too.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
cargo bench -p leak-protocol --bench sphinx --bench policy -- "$@"

target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

relay_json=""
relay_failed=0
if [ "${BENCH_RELAY:-1}" != 0 ]; then
    relay_json="$target_dir/relay-bench/results.json"
    mkdir -p "$(dirname "$relay_json")"
    rm -f "$relay_json"
    # The relay benchmark runs the leak-node binary, which `cargo run` of
    # another package does not build.
    if ! { cargo build --release --locked -p leak-node --bins &&
        cargo run --release --locked -p leak-tests --example relay_bench -- --json "$relay_json"; }; then
        echo "the relay benchmark failed; its table is left out" >&2
        relay_failed=1
        relay_json=""
    fi
fi

e2e_json=""
e2e_table=""
e2e_failed=0
if [ "${BENCH_E2E:-1}" != 0 ]; then
    e2e_json="$target_dir/e2e-bench/results.json"
    e2e_table="$target_dir/e2e-bench/table.txt"
    mkdir -p "$(dirname "$e2e_json")"
    rm -f "$e2e_json" "$e2e_table"
    # It runs the leak-node and leak binaries.
    if ! { cargo build --release --locked -p leak-node -p leak-client --bins &&
        cargo run --release --locked -p leak-tests --example e2e_bench -- --json "$e2e_json" >"$e2e_table" &&
        # Again without the relays' batch gathering (the defaults' rows are
        # mostly that wait at a mixing delay of 0).
        { echo; echo "the same, every node with limits.batch_gather_ms = 0:";
            cargo run --release --locked -p leak-tests --example e2e_bench -- --batch-gather-ms 0; } >>"$e2e_table"; }; then
        echo "the end-to-end benchmark failed; its table is left out" >&2
        e2e_failed=1
        e2e_json=""
        e2e_table=""
    fi
fi

exit_json=""
exit_table=""
exit_failed=0
if [ "${BENCH_EXIT:-1}" != 0 ]; then
    exit_json="$target_dir/exit-bench/results.json"
    exit_table="$target_dir/exit-bench/table.txt"
    mkdir -p "$(dirname "$exit_json")"
    rm -f "$exit_json" "$exit_table"
    # It runs the leak-node binary.
    if ! { cargo build --release --locked -p leak-node --bins &&
        cargo run --release --locked -p leak-tests --example exit_bench -- --json "$exit_json" >"$exit_table"; }; then
        echo "the exit benchmark failed; its table is left out" >&2
        exit_failed=1
        exit_json=""
        exit_table=""
    fi
fi

python3 - "$target_dir/criterion" "$started" "$relay_json" "$e2e_json" "$e2e_table" "$exit_json" "$exit_table" <<'EOF'
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
    ("check_text/2000_bytes", 300_000),
    ("check_text/short", None),
    ("model/2000_bytes", None),
    ("normalize/2000_bytes", None),
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

# --- The relay benchmark (tests/examples/relay_bench.rs) -----------------------
relay_path = sys.argv[3] if len(sys.argv) > 3 else ""
if relay_path:
    with open(relay_path) as f:
        relay = json.load(f)
    cores = relay["cores"]
    target = relay["target_pps"]

    def pps(x):
        return "–" if x is None else f"{x:,.0f} pkt/s"

    def pair(a, b, scale=1.0):
        if a is None or b is None:
            return "–"
        return f"{a * scale:.1f} ms / {b * scale:.1f} ms"

    sustained = relay["sustained_pps"]
    status = "ok" if sustained >= target else "MISSED"
    if sustained < target:
        missed += 1
    at = relay["load_offered_pps"]
    cpu = relay["b_cpu_us_per_packet"]
    hop_path, hop = load("process_packet/relay_hop")
    if hop is not None:
        hop_ns = hop["median"]["point_estimate"]
        ceiling = (
            f"{1e9 / hop_ns:,.0f} pkt/s per core (1 / {fmt(hop_ns)}), "
            f"x{cores} cores = {cores * 1e9 / hop_ns:,.0f} pkt/s"
        )
        if os.path.getmtime(hop_path) < started:
            ceiling += " (stale)"
    else:
        ceiling = "– (no process_packet/relay_hop estimate)"
    if relay["saturation_pps"] is None:
        highest = "not reached"
    else:
        highest = (
            f"{pps(relay['saturation_pps'])} forwarded "
            f"of {pps(relay['saturation_offered_pps'])} offered"
        )
    relay_rows = [
        ("packets/s through B, sustained (>= 99% carried)", pps(sustained),
         f"≥ {pps(target)}", status),
        ("packets/s through B, first step not sustained", highest, "–", ""),
        (f"latency p50 / p99, 2 hops end to end, at {pps(at)}",
         pair(relay["load_p50_ms"], relay["load_p99_ms"]), "–", ""),
        ("latency p50 / p99 per hop (half of 2 hops)",
         pair(relay["load_p50_ms"], relay["load_p99_ms"], 0.5), "–", ""),
        ("latency p50 / p99, 2 hops end to end, idle",
         pair(relay["idle_p50_ms"], relay["idle_p99_ms"]), "–", ""),
        ("B peak RSS (VmHWM)", f"{relay['b_peak_rss_mib']:.1f} MiB", "–", ""),
        ("B CPU per forwarded packet (user + system)",
         "–" if cpu is None else f"{cpu:.0f} µs (≈ {1e6 / cpu:,.0f} pkt/s per core)", "–", ""),
        ("crypto-only ceiling", ceiling, "–", ""),
    ]
    relay_header = (f"relay A -> B -> C ({cores} cores shared)", "measured", "target", "status")
    widths = [max(len(r[i]) for r in relay_rows + [relay_header]) for i in range(len(relay_header))]
    print()
    print(line(relay_header))
    print(line(tuple("-" * w for w in widths)))
    for r in relay_rows:
        print(line(r))
    if not relay.get("stopped_cleanly", True):
        print("\na node did not stop cleanly on SIGTERM during the relay benchmark")
        missed += 1

# --- The end-to-end benchmark (tests/examples/e2e_bench.rs) -------------------
e2e_path = sys.argv[4] if len(sys.argv) > 4 else ""
if e2e_path:
    with open(e2e_path) as f:
        e2e = json.load(f)
    with open(sys.argv[5]) as f:
        print()
        print(f.read().rstrip())
    p50 = e2e["library_accepted"]["p50_ms"]
    if p50 is None or p50 >= e2e["target_p50_ms"]:
        missed += 1
    if not e2e.get("stopped_cleanly", True):
        print("\na node did not stop cleanly on SIGTERM during the end-to-end benchmark")
        missed += 1

# --- The exit benchmark (tests/examples/exit_bench.rs) -------------------------
exit_path = sys.argv[6] if len(sys.argv) > 6 else ""
if exit_path:
    with open(exit_path) as f:
        exit_result = json.load(f)
    with open(sys.argv[7]) as f:
        print()
        print(f.read().rstrip())
    if exit_result["ratio"] < 0.8:
        missed += 1

if missed:
    print(f"\n{missed} target(s) missed in this run.")
    if os.environ.get("BENCH_STRICT") == "1":
        sys.exit(1)
EOF
if [ "$relay_failed" != 0 ] || [ "$e2e_failed" != 0 ] || [ "$exit_failed" != 0 ]; then
    exit 1
fi

# --- The scale benchmark (tests/examples/scale_bench.rs), opt-in -------------
if [ "${BENCH_SCALE:-0}" = 1 ]; then
    scale_table=$(mktemp)
    cargo build --release --locked -p leak-node --bins
    cargo run --release --locked -p leak-tests --example scale_bench -- \
        --minutes "${BENCH_SCALE_MINUTES:-15}" | tee "$scale_table"
    if [ "${BENCH_STRICT:-0}" = 1 ] && grep -q '| NO |' "$scale_table"; then
        echo "the scale benchmark missed a target"
        exit 1
    fi
fi
