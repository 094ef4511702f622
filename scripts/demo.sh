#!/usr/bin/env bash
# A whole Leak federation on this machine, and one leak sent through it.
#
# Builds leak-node and leak in release mode, creates a directory authority
# and signs a roster admitting five nodes, starts four relays and one exit
# as separate processes on 127.0.0.1 (the exit "delivers" into a directory of
# .eml files instead of a mail server), starts the sender's agent (`leak
# agent`, cover traffic every half second here), sends a leak with `leak send`, shows
# the email the recipient would get and the sender's receipt, the
# recipient's answer through the exit's form and the sender's inbox, the
# agent's web page (`leak ui`; KEEP=1 to open it in a browser), then stops
# every process it started.
#
# Usage: scripts/demo.sh
#   KEEP=1 scripts/demo.sh    keep the federation running until Ctrl-C, with
#                             a ready-to-use client config (printed)
set -euo pipefail
cd "$(dirname "$0")/.."

bold() { if [[ -t 1 ]]; then printf '\n\033[1m==> %s\033[0m\n' "$*"; else printf '\n==> %s\n' "$*"; fi; }

bold "Building leak-node and leak (release)"
cargo build --release --locked -p leak-node -p leak-client --bins
NODE="$PWD/target/release/leak-node"
LEAK="$PWD/target/release/leak"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/leak-demo.XXXXXX")"
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then
        printf '\n==> Stopping the federation\n'
        for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The client's files live in the demo directory too: nothing is written to
# your own ~/.config or ~/.local/state.
export LEAK_CONFIG="$WORK/client/config.toml"
export LEAK_STATE_DIR="$WORK/client/state"

# Waits for a line starting with $2 in file $1 and prints its rest.
wait_line() {
    local file=$1 prefix=$2 line
    for _ in $(seq 1 200); do
        line=$(grep -m1 "^$prefix" "$file" 2>/dev/null || true)
        if [[ -n "$line" ]]; then
            printf '%s\n' "${line#"$prefix"}"
            return 0
        fi
        sleep 0.05
    done
    echo "demo: no '$prefix' line in $file; the node said:" >&2
    cat "${file%.out}.err" >&2 || true
    return 1
}

# init NAME ROLES [leak-node init options...]: a node's data directory
# (listening on a free loopback port), trusting the federation's authority
# and its roster file; the authority admits the node with ROLES.
init() {
    local name=$1 roles=$2
    shift 2
    "$NODE" init --data-dir "$WORK/$name" --listen /ip4/127.0.0.1/tcp/0 --metrics "" \
        --family "$name" --authority "$AUTHORITY" --roster "$WORK/roster.signed" "$@" \
        >"$WORK/$name.init"
    local peer
    peer=$(wait_line "$WORK/$name.init" "peer id: ")
    "$NODE" authority admit --roster "$WORK/roster.toml" --node "$peer" \
        --roles "$roles" --family "$name" >/dev/null
}

# start NAME [leak-node run options...]: runs an initialised node.
start() {
    local name=$1
    shift
    "$NODE" run --config "$WORK/$name/leak-node.toml" "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
}

bold "The federation's directory authority: a key, then a roster that admits each node"
"$NODE" authority keygen --out "$WORK/authority.key" >"$WORK/authority.out"
AUTHORITY=$(wait_line "$WORK/authority.out" "public key: ")
echo "  authority key $AUTHORITY"
for name in relay-1 relay-2 relay-3 relay-4; do init "$name" relay; done
init exit relay,exit --exit-domain leak.test
"$NODE" authority sign --roster "$WORK/roster.toml" --key "$WORK/authority.key" \
    --out "$WORK/roster.signed" | head -n 3 | sed 's/^/  /'

bold "Starting four relays and one exit on 127.0.0.1"
start relay-1
BOOTSTRAP=$(wait_line "$WORK/relay-1.out" "listening: ")
for name in relay-2 relay-3 relay-4; do start "$name" --bootstrap "$BOOTSTRAP"; done
# The exit writes email into $WORK/outbox; its opt-out and report endpoint
# listens on a free port.
# Receipts and answers to fetches are held an extra 2 s on average here
# (60 s by default), so the demo does not wait minutes for them.
start exit --bootstrap "$BOOTSTRAP" \
    --set 'exit.http_listen="127.0.0.1:0"' --set "exit.file_dir=\"$WORK/outbox\"" \
    --set exit.receipt_delay_ms=2000
for name in relay-1 relay-2 relay-3 relay-4 exit; do
    printf '  %-8s %s\n' "$name" "$(wait_line "$WORK/$name.out" "peer id: ")"
done

bold "The sender sets up the client: leak init --bootstrap ... --authority ..."
"$LEAK" init --bootstrap "$BOOTSTRAP" --authority "$AUTHORITY" --mixing-delay-ms 100 --receipt-timeout-secs 10

bold "Waiting for the directory to list all five nodes"
for _ in $(seq 1 100); do
    count=$("$LEAK" nodes --json 2>/dev/null | grep -o '"peer_id"' | wc -l || true)
    [[ "$count" -ge 5 ]] && break
    sleep 0.2
done
"$LEAK" nodes

bold "The sender starts the agent: leak agent (a packet every half second here; every 9 s by default)"
# (One sender alone: no minimum anonymity set, or the agent would lengthen
# its hops to ten minutes once the nodes publish their traffic.)
sed -i 's/^send_interval_ms = 9000$/send_interval_ms = 500/; s/^poll_interval_ms = 20000$/poll_interval_ms = 500/; s/^min_anonymity_set = 20$/min_anonymity_set = 0/; s/^fetch_every_secs = 1800$/fetch_every_secs = 1/; s/^listen = "127.0.0.1:7390"$/listen = "127.0.0.1:0"/' "$LEAK_CONFIG"
"$LEAK" agent 2>"$WORK/agent.err" &
PIDS+=($!)
for _ in $(seq 1 100); do
    "$LEAK" status 2>/dev/null | grep -q "guard 12D3" && break
    sleep 0.2
done

bold "leak check: what the federation's moderation policy says, before sending"
"$LEAK" check "I always admired how calmly you handle the Monday meetings." || true
"$LEAK" check "I know where you live and I will hurt you." || true

bold "leak send: a text the policy refuses is stopped on the sender's machine"
status=0
"$LEAK" send --to alice@example.com --as coworker "I know where you live and I will hurt you." || status=$?
echo "(exit status $status: refused, nothing left this machine)"

bold "leak send --wait: the agent sends the leak in place of a loop, through four hops (guard, two mix relays, exit), and the receipt comes back"
"$LEAK" send --wait --to alice@example.com --as coworker \
    "I always admired how calmly you handle the Monday meetings. Thank you."

bold "The email the recipient got (the exit's outbox)"
for _ in $(seq 1 50); do
    compgen -G "$WORK/outbox/*.eml" >/dev/null && break
    sleep 0.1
done
cat "$WORK"/outbox/*.eml

bold "leak status: the agent and the sender's own record (no text, a redacted address)"
"$LEAK" status

bold "The recipient answers through the email's answer link (the exit's form, posted here from Python)"
answer_url=$(python3 - "$(ls "$WORK"/outbox/*.eml | head -n 1)" <<'PY'
import email, sys
body = email.message_from_file(open(sys.argv[1])).get_payload(decode=True).decode()
lines = body.splitlines()
print(next(lines[i + 1].strip() for i, l in enumerate(lines) if "use this page:" in l))
PY
)
echo "POST $answer_url"
python3 - "$answer_url" <<'PY'
import sys, urllib.parse, urllib.request
data = urllib.parse.urlencode({"text": "Thank you. That means a lot to me."}).encode()
with urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=data)) as r:
    print("HTTP", r.status)
PY

bold "leak inbox: the agent fetched the answer through the mix (in place of a loop; about every second here, less often while nothing comes; every 30 min by default)"
answered=0
for _ in $(seq 1 600); do
    if "$LEAK" inbox --json 2>/dev/null | grep -q '"via":"web"'; then answered=1; break; fi
    sleep 0.2
done
"$LEAK" inbox "$("$LEAK" inbox --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["label"])')"
if [[ "$answered" != 1 ]]; then
    echo "the answer did not reach the sender within two minutes" >&2
    exit 1
fi

bold "leak ui: the same in a web page the agent serves on this machine only (compose, receipts, conversations)"
ui_url=$("$LEAK" ui --print)
echo "${ui_url%%#*}#token=…  (the key in the fragment: only a tab opened with it may use the page)"
python3 - "$ui_url" <<'PY'
import json, sys, urllib.request
url = sys.argv[1]
origin, token = url.split("/#token=")
request = urllib.request.Request(origin + "/api/state", headers={"X-Leak-Token": token})
state = json.load(urllib.request.urlopen(request))
for key in ("network", "anonymity", "cost"):
    print(f"  {key}: {state[key]['words']}")
try:
    urllib.request.urlopen(origin + "/api/state")
except urllib.error.HTTPError as e:
    print(f"  without the key: HTTP {e.code}, {json.load(e)['error']}")
PY

if [[ "${KEEP:-}" == 1 ]]; then
    bold "The federation keeps running (Ctrl-C stops it). Open the page: $ui_url"
    bold "In another shell:"
    echo "  export LEAK_CONFIG=$LEAK_CONFIG LEAK_STATE_DIR=$LEAK_STATE_DIR"
    echo "  $LEAK send --to someone@example.org --as friend 'Your message'"
    echo "  ls $WORK/outbox"
    wait
fi
