#!/usr/bin/env bash
# The anonymity measurement (issue 12): always-on agents on the virtual
# federation (tests/src/harness: the node's relay core, key ring, store and
# held queue; the client's cover schedule; real drops, loops and leaks),
# 16 relays + 4 exits, 10 leaks a minute in total. For N = 50, 200 and 1,000
# senders and each setting it prints one table row: the effective anonymity
# set 2^H (median and 10th percentile over leaks) against A1 (edge +
# recipient), A2 (global passive), A3 (global + the target's guard and the
# exit) and A4 (guard + recipient), two epsilons against A2, delivery
# latency p50/p99 (hand-off to email) and one sender's bytes per day.
# eps A2 (Loopix): Loopix's epsilon as the paper defines it (Piotrowska et
# al. 2017, section 4.3, equation 3): the leak's packet and, for 16
# challenger senders, each one's leak-shaped packet emitted nearest in time
# carry labels (the adversary is told which messages are payload); the
# labels propagate through the relays' pools and epsilon = |ln(p0/p1)| at
# the exit when the email leaves, mean over challengers and leaks.
# eps A2 (sender): sender-level, stricter than the paper's game: A2's
# posterior over all senders (cover included, not told which packets are
# payload), mean |ln(p0/p1)| against every other sender, mean over leaks.
# The adversaries' models: tests/src/anonymity/mod.rs.
#
# Usage: scripts/anonymity.sh [options]   (release build, then the run)
#   --senders 50,200,1000        the N to run
#   --settings default,before,mu20,mu120,send6,send24,noloops,hops3,send12,loop0.2
#                                (noloops: relays send no loops; hops3: a
#                                forward path of 3 hops, the default before
#                                echo loops; send12: a packet every 12 s, as before)
#   --big-settings default,before   settings run at the largest N (the
#                                slowest runs; default here: these two)
#   --warmup-min 20 --measure-min 40 --seed 1
#   --jobs 2                     runs at a time (threads)
# Takes about 20-30 minutes on two cores at the defaults; N=1000 is the bulk.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p leak-tests --bin anonymity
args=("$@")
if [[ " ${args[*]-} " != *" --big-settings "* ]]; then
  args+=(--big-settings default,before)
fi
exec target/release/anonymity "${args[@]}"
