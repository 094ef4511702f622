#!/usr/bin/env bash
# Installs the system packages the tests use, once, on a fresh machine.
# Idempotent and quick: does nothing (no apt-get at all) when everything is
# already there. Never asks anything (CI=true, no terminal, no stdin).
#
#   postfix       a private Postfix per test (tests/src/mail/postfix.rs) and its
#                 smtp-sink / smtp-source tools (in /usr/sbin)
#   python3-dkim  dkimpy's `dkimverify`, to verify DKIM signatures in tests
#   sasl2-bin, libsasl2-modules
#                 Cyrus SASL's `saslpasswd2` and its PLAIN/LOGIN and sasldb
#                 plugins: the test Postfix that requires AUTH (tests/src/mail/postfix.rs)
#   dnsmasq-base  a private DNS server answering MX queries (tests/src/mail/dns.rs)
#   chromium, chromium-driver, python3-selenium
#                 a real headless browser driven through Selenium (with the
#                 system's /usr/bin/python3) by tests/browser/ui.py (the
#                 agent's page) and tests/browser/answer_form.py (the exit's form)
#   tcpdump, iproute2 (ss)
#                 (named by scripts/test.sh) capture what an agent emits on
#                 loopback (tests/src/capture.rs)
#
# Extra Debian packages may be named as arguments ("package" or
# "command:package": installed when the command is missing).
set -euo pipefail

# Packages in the "install ok installed" state count as present.
installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

needed=()
for pkg in postfix python3-dkim sasl2-bin libsasl2-modules dnsmasq-base \
    chromium chromium-driver python3-selenium; do
    installed "$pkg" || needed+=("$pkg")
done
for pair in "$@"; do
    if [ "$pair" != "${pair#*:}" ]; then
        cmd=${pair%%:*}
        pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || needed+=("$pkg")
    else
        installed "$pair" || needed+=("$pair")
    fi
done

if [ ${#needed[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages ${needed[*]}: run as root (or install them) first" >&2
    exit 1
fi

echo "==> apt-get install ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix's package asks what kind of mail server this is: none. With "No
# configuration" it writes no /etc/postfix/main.cf and starts no server; the
# tests run private instances with their own config directories.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${needed[@]}" </dev/null

# Leave no system Postfix running (on port 25) if the package started one,
# and keep it from starting at boot.
if [ -f /etc/postfix/main.cf ] && /usr/sbin/postfix status >/dev/null 2>&1; then
    echo "==> stopping the system Postfix"
    /usr/sbin/postfix stop || true
fi
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable postfix >/dev/null 2>&1 || true # works without a running systemd
    if [ -d /run/systemd/system ]; then
        systemctl stop postfix >/dev/null 2>&1 || true
    fi
fi
if command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/postfix ]; then
    update-rc.d postfix disable >/dev/null 2>&1 || true
fi

for tool in /usr/sbin/postfix /usr/sbin/smtp-sink /usr/sbin/smtp-source; do
    [ -x "$tool" ] || { echo "$tool missing after installing postfix" >&2; exit 1; }
done
command -v dkimverify >/dev/null 2>&1 || { echo "dkimverify missing after installing python3-dkim" >&2; exit 1; }
[ -x /usr/sbin/saslpasswd2 ] || { echo "/usr/sbin/saslpasswd2 missing after installing sasl2-bin" >&2; exit 1; }
[ -x /usr/bin/chromedriver ] || { echo "/usr/bin/chromedriver missing after installing chromium-driver" >&2; exit 1; }
[ -x /usr/lib/chromium/chromium ] || { echo "/usr/lib/chromium/chromium missing after installing chromium" >&2; exit 1; }
/usr/bin/python3 -c 'import selenium' 2>/dev/null || { echo "selenium not importable by /usr/bin/python3 after installing python3-selenium" >&2; exit 1; }
