"""What the real-browser scripts share (answer_form.py, ui.py): a headless
Chromium that never reaches past this machine, driven through Selenium, and
Chrome's logs (requests, blocked requests, response headers, console).

Import it before anything from selenium: when the python3 running the script
cannot see Debian's python3-selenium, importing this module runs the script
again under /usr/bin/python3.

The browser never reaches past this machine: every host name except the page's
own host and loopback resolves to nothing, and every non-loopback address goes
to a dead proxy on 127.0.0.1, so a request to another origin is still issued
(and listed) but fails at once. Needs Debian's chromium, chromium-driver and
python3-selenium (scripts/lib/install-deps.sh); see tests/browser/README.md.
"""

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from urllib.parse import urlsplit

SCRIPT = os.path.basename(sys.argv[0]) or "browser script"

# Debian's python3-selenium lives in /usr/lib/python3/dist-packages, which
# another python3 on PATH (pyenv, a venv without system packages) doesn't see:
# run the script again under the system's python3 then.
try:
    import selenium  # noqa: F401
except ImportError:
    SYSTEM_PYTHON = "/usr/bin/python3"
    if (
        os.environ.get("LEAK_BROWSER_REEXEC") != "1"
        and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON)
        and os.access(SYSTEM_PYTHON, os.X_OK)
    ):
        os.environ["LEAK_BROWSER_REEXEC"] = "1"
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(sys.argv[0])] + sys.argv[1:])
    sys.stderr.write(
        f"{SCRIPT}: the selenium module is missing: "
        "apt-get install python3-selenium chromium chromium-driver\n"
    )
    sys.exit(3)

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

TIMEOUT = 20  # seconds, default for each page load and each wait
WINDOW = (1000, 800)  # default window size
# A loopback port where nothing listens (discard): the proxy for every
# non-loopback request, so that such requests fail without leaving the machine.
DEAD_PROXY = "http://127.0.0.1:9"
# The browser's own pages (its start tab loads chrome://new-tab-page...): not
# requests a page made.
INTERNAL_SCHEMES = ("chrome:", "chrome-untrusted:", "chrome-extension:", "devtools:", "about:")


class FlowError(Exception):
    """The flow under test went wrong: one line for stderr."""


class Deadline(Exception):
    """The whole run took too long (SIGALRM), or it was told to stop (SIGTERM)."""


def on_alarm(signum, frame):
    raise Deadline()


def short(e):
    """A WebDriverException's message without chromedriver's "(Session info: ...)" lines."""
    return ((e.msg or str(e)).strip().splitlines() or [type(e).__name__])[0]


def first_existing(env, candidates):
    value = os.environ.get(env)
    if value:
        if not os.access(value, os.X_OK):
            raise FlowError(f"{env}={value} is not an executable")
        return value
    for path in candidates:
        if os.path.exists(path):
            return path
    raise FlowError(f"none of {', '.join(candidates)} exists (set {env}): apt-get install chromium chromium-driver")


def origin(url):
    """(scheme, host, port) of an http(s)/ws(s) URL; blob: URLs count as their inner URL's."""
    if url.startswith("blob:"):
        url = url[len("blob:"):]
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)
    return (scheme, (parts.hostname or "").lower(), port)


def make_driver(url, profile_dir, window=WINDOW, timeout=TIMEOUT):
    chromium = first_existing("CHROMIUM", ["/usr/lib/chromium/chromium", "/usr/bin/chromium"])
    chromedriver = first_existing("CHROMEDRIVER", ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])

    # Only the page's own host, localhost, 127.0.0.1 and [::1] are reached (a
    # second origin on this machine: "localhost:PORT" beside "127.0.0.1:PORT",
    # or another port). Any other name or address resolves to nothing, and goes
    # to a dead proxy.
    host = urlsplit(url).hostname or ""
    host = f"[{host}]" if ":" in host else host
    keep = ["localhost", "127.0.0.1", "[::1]"]
    if host and host not in keep:
        keep.append(host)
    bypass = ";".join(["<local>"] + keep)
    resolver_rules = "MAP * ~NOTFOUND, " + ", ".join(f"EXCLUDE {h}" for h in keep)

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in [
        "--headless=new",
        "--no-sandbox",  # as root, Chromium refuses to start with its sandbox
        "--disable-dev-shm-usage",  # a small /dev/shm (containers) crashes tabs
        "--disable-gpu",
        f"--window-size={window[0]},{window[1]}",
        f"--user-data-dir={profile_dir}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--metrics-recording-only",
        "--password-store=basic",
        "--use-mock-keychain",
        "--lang=en-US",
        f"--proxy-server={DEAD_PROXY}",
        f"--proxy-bypass-list={bypass}",
        f"--host-resolver-rules={resolver_rules}",
    ]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    options.page_load_strategy = "normal"

    # An explicit chromedriver: selenium then never runs selenium-manager (which
    # would try to download one).
    service = Service(executable_path=chromedriver, log_path=os.devnull)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(timeout)
    driver.set_script_timeout(timeout)
    driver.set_window_size(*window)
    return driver


class Logs:
    """Chrome's logs; each get_log() drains them, so they are gathered as we go.

    Performance entries are kept with the tab ("webview": its window handle)
    that logged them, so that requests() etc. can look at one tab only. The
    console log does not say which tab wrote an entry.
    """

    def __init__(self, driver):
        self.driver = driver
        self.performance = []  # (webview, DevTools message)
        self.console = []

    def collect(self):
        for entry in self.driver.get_log("performance"):
            try:
                record = json.loads(entry["message"])
                self.performance.append((record.get("webview"), record["message"]))
            except (KeyError, ValueError, TypeError):
                pass
        self.console.extend(self.driver.get_log("browser"))

    def messages(self, webview=None):
        return [m for w, m in self.performance if webview is None or w == webview]

    def requests(self, webview=None):
        seen, urls = set(), []
        for msg in self.messages(webview):
            if msg.get("method") == "Network.requestWillBeSent":
                url = msg.get("params", {}).get("request", {}).get("url")
                if url and not url.startswith(INTERNAL_SCHEMES) and url not in seen:
                    seen.add(url)
                    urls.append(url)
        return urls

    def blocked(self, webview=None):
        """Requests the browser itself stopped before the network (CSP, mixed content, ...)."""
        messages = self.messages(webview)
        urls = {}
        for msg in messages:
            if msg.get("method") == "Network.requestWillBeSent":
                params = msg.get("params", {})
                urls[params.get("requestId")] = params.get("request", {}).get("url")
        out = []
        for msg in messages:
            if msg.get("method") == "Network.loadingFailed":
                params = msg.get("params", {})
                url = urls.get(params.get("requestId"))
                if params.get("blockedReason") and url and not url.startswith(INTERNAL_SCHEMES) and url not in out:
                    out.append(url)
        return out

    def header(self, document_url, name, webview=None):
        """A response header of the document at document_url (the last response for it)."""
        value = None
        for msg in self.messages(webview):
            if msg.get("method") != "Network.responseReceived":
                continue
            params = msg.get("params", {})
            response = params.get("response", {})
            if response.get("url") != document_url or params.get("type") not in (None, "Document"):
                continue
            for key, val in (response.get("headers") or {}).items():
                if key.lower() == name.lower():
                    value = val
        return value

    def console_errors(self):
        return [e.get("message", "") for e in self.console if e.get("level") == "SEVERE"]


def external(requests, url):
    """The requests whose origin differs from url's (data: URLs left out)."""
    base = origin(url)
    return [u for u in requests if not u.startswith("data:") and origin(u) != base]


def text_of(driver, selector):
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else None


def save_screenshot(driver, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if not driver.save_screenshot(path):
        raise FlowError(f"could not save a screenshot to {path}")


def run_browser(url, deadline, flow, window=WINDOW, timeout=TIMEOUT, profile_prefix="leak-chromium-"):
    """Starts the browser, runs flow(driver) and quits the browser, all within
    `deadline` seconds. Returns (0, what flow returned), or (1, None) after
    one line on stderr when the flow failed or took too long."""
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_alarm)
    signal.alarm(deadline)
    started = time.monotonic()
    profile_dir = tempfile.mkdtemp(prefix=profile_prefix)
    driver = None
    try:
        driver = make_driver(url, profile_dir, window=window, timeout=timeout)
        return 0, flow(driver)
    except FlowError as e:
        sys.stderr.write(f"{SCRIPT}: {e}\n")
        return 1, None
    except Deadline:
        sys.stderr.write(f"{SCRIPT}: gave up after {time.monotonic() - started:.0f} s\n")
        return 1, None
    except WebDriverException as e:
        sys.stderr.write(f"{SCRIPT}: webdriver: {short(e)}\n")
        return 1, None
    finally:
        if driver is not None:
            signal.alarm(30)  # quitting must not hang either
            try:
                driver.quit()
            except (Exception, Deadline) as e:  # noqa: BLE001 - the result is known already
                sys.stderr.write(f"{SCRIPT}: quitting the browser: {e!r}\n")
        signal.alarm(0)
        shutil.rmtree(profile_dir, ignore_errors=True)
