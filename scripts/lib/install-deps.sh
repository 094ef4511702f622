#!/usr/bin/env bash
# Installs the system packages the tests use, once, on a fresh machine.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

# Debian packages the tests need, as "command:package" pairs.
needed=()
for pair in "$@"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || needed+=("$pkg")
done

if [ ${#needed[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages ${needed[*]}: run as root (or install them) first" >&2
        exit 1
    fi
    echo "==> apt-get install ${needed[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${needed[@]}"
fi
