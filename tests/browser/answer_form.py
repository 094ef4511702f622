#!/usr/bin/env python3
"""Drives a real headless Chromium through an answer form, for the integration tests.

Usage:
    python3 tests/browser/answer_form.py URL TEXT [--screenshot PATH] [--result-screenshot PATH]

Opens URL, a page with a form:
    <label for="answer">...</label>
    <textarea id="answer" name="text"></textarea>
    <button id="send" type="submit">...</button>
checks that the textarea has a label, types TEXT into it with keyboard input
(send_keys), submits by clicking #send, waits for the next page, and prints one
line of JSON to stdout:

    {"form_title": h1 of the form page, "label": label text,
     "title": h1 of the result page, "result": text of #result or null,
     "requests": every URL the browser requested (first-seen order, no duplicates),
     "external": those whose origin differs from URL's (data: URLs left out),
     "blocked": requested URLs the browser stopped itself before the network
                (CSP, mixed content: Network.loadingFailed with a blockedReason),
     "csp": the form page's Content-Security-Policy response header or null,
     "console_errors": the browser console's SEVERE entries}

Exit status 0 when the flow completed; otherwise non-zero with a message on
stderr (and nothing on stdout).

The browser never reaches past this machine: every host name except the page's
own host and loopback resolves to nothing, and every non-loopback address goes
to a dead proxy on 127.0.0.1, so a request to another origin is still issued
(and listed) but fails at once. Needs Debian's chromium, chromium-driver and
python3-selenium (scripts/lib/install-deps.sh); see tests/browser/README.md.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from urllib.parse import urlsplit

# Debian's python3-selenium lives in /usr/lib/python3/dist-packages, which
# another python3 on PATH (pyenv, a venv without system packages) doesn't see:
# run again under the system's python3 then.
try:
    import selenium  # noqa: F401
except ImportError:
    SYSTEM_PYTHON = "/usr/bin/python3"
    if (
        os.environ.get("ANSWER_FORM_REEXEC") != "1"
        and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON)
        and os.access(SYSTEM_PYTHON, os.X_OK)
    ):
        os.environ["ANSWER_FORM_REEXEC"] = "1"
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
    sys.stderr.write(
        "answer_form.py: the selenium module is missing: "
        "apt-get install python3-selenium chromium chromium-driver\n"
    )
    sys.exit(3)

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

TIMEOUT = 20  # seconds, for each page load and each wait
DEADLINE = 120  # seconds, for the whole run: then it gives up (and still quits the browser)
WINDOW = (1000, 800)
# A loopback port where nothing listens (discard): the proxy for every
# non-loopback request, so that such requests fail without leaving the machine.
DEAD_PROXY = "http://127.0.0.1:9"
# The browser's own pages (its start tab loads chrome://new-tab-page...): not
# requests a page made.
INTERNAL_SCHEMES = ("chrome:", "chrome-untrusted:", "chrome-extension:", "devtools:", "about:")


class FlowError(Exception):
    pass


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


def make_driver(url, profile_dir):
    chromium = first_existing("CHROMIUM", ["/usr/lib/chromium/chromium", "/usr/bin/chromium"])
    chromedriver = first_existing("CHROMEDRIVER", ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])

    # Only the page's own host, localhost, 127.0.0.1 and [::1] are reached (a
    # second origin on this machine: "localhost:PORT" beside "127.0.0.1:PORT").
    # Any other name or address resolves to nothing, and goes to a dead proxy.
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
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
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
    driver.set_page_load_timeout(TIMEOUT)
    driver.set_script_timeout(TIMEOUT)
    driver.set_window_size(*WINDOW)
    return driver


class Logs:
    """Chrome's logs; each get_log() drains them, so they are gathered as we go."""

    def __init__(self, driver):
        self.driver = driver
        self.performance = []
        self.console = []

    def collect(self):
        for entry in self.driver.get_log("performance"):
            try:
                self.performance.append(json.loads(entry["message"])["message"])
            except (KeyError, ValueError, TypeError):
                pass
        self.console.extend(self.driver.get_log("browser"))

    def requests(self):
        seen, urls = set(), []
        for msg in self.performance:
            if msg.get("method") == "Network.requestWillBeSent":
                url = msg.get("params", {}).get("request", {}).get("url")
                if url and not url.startswith(INTERNAL_SCHEMES) and url not in seen:
                    seen.add(url)
                    urls.append(url)
        return urls

    def blocked(self):
        """Requests the browser itself stopped before the network (CSP, mixed content, ...)."""
        urls = {}
        for msg in self.performance:
            if msg.get("method") == "Network.requestWillBeSent":
                params = msg.get("params", {})
                urls[params.get("requestId")] = params.get("request", {}).get("url")
        out = []
        for msg in self.performance:
            if msg.get("method") == "Network.loadingFailed":
                params = msg.get("params", {})
                url = urls.get(params.get("requestId"))
                if params.get("blockedReason") and url and not url.startswith(INTERNAL_SCHEMES) and url not in out:
                    out.append(url)
        return out

    def header(self, document_url, name):
        """A response header of the document at document_url (the last response for it)."""
        value = None
        for msg in self.performance:
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


def text_of(driver, selector):
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else None


def save_screenshot(driver, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if not driver.save_screenshot(path):
        raise FlowError(f"could not save a screenshot to {path}")


def run(args, driver):
    logs = Logs(driver)
    wait = WebDriverWait(driver, TIMEOUT)

    # Drop what the start tab logged: the run starts with the form page.
    logs.collect()
    logs.performance.clear()
    logs.console.clear()
    try:
        driver.get(args.url)
    except WebDriverException as e:
        raise FlowError(f"could not load {args.url}: {short(e)}") from e
    try:
        textarea = wait.until(EC.presence_of_element_located((By.ID, "answer")))
    except WebDriverException as e:
        raise FlowError(f"no #answer on {driver.current_url} (title {driver.title!r})") from e
    if textarea.tag_name.lower() != "textarea":
        raise FlowError(f"#answer is a <{textarea.tag_name}>, not a <textarea>")
    form_url = driver.current_url
    form_title = text_of(driver, "h1")

    # The label the browser itself associates with the textarea (for= or wrapping).
    label = driver.execute_script(
        "const l = arguments[0].labels;"
        "return l && l.length ? l[0].innerText : null;",
        textarea,
    )
    if label is None or not label.strip():
        raise FlowError("the textarea #answer has no label")
    label = label.strip()

    send = driver.find_elements(By.ID, "send")
    if not send:
        raise FlowError("no #send button on the form page")
    send = send[0]

    wait.until(EC.element_to_be_clickable((By.ID, "answer")))
    textarea.click()
    textarea.send_keys(args.text)
    typed = textarea.get_property("value")
    expected = args.text.replace("\r\n", "\n").replace("\r", "\n")
    if typed != expected:
        raise FlowError(f"the textarea holds {typed!r} after typing {expected!r}")

    if args.screenshot:
        save_screenshot(driver, args.screenshot)
    logs.collect()

    send.click()
    try:
        wait.until(EC.staleness_of(textarea))
    except WebDriverException as e:
        raise FlowError(
            f"clicking #send left the form page {driver.current_url} in place "
            f"(console: {logs.console_errors() + [m.get('message', '') for m in driver.get_log('browser')]})"
        ) from e
    try:
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        title = wait.until(EC.presence_of_element_located((By.TAG_NAME, "h1"))).text
    except WebDriverException as e:
        raise FlowError(f"the result page {driver.current_url} has no <h1> (title {driver.title!r})") from e
    result = text_of(driver, "#result")

    if args.result_screenshot:
        save_screenshot(driver, args.result_screenshot)
    logs.collect()

    base = origin(args.url)
    requests = logs.requests()
    external = [u for u in requests if not u.startswith("data:") and origin(u) != base]
    return {
        "form_title": form_title,
        "label": label,
        "title": title,
        "result": result,
        "requests": requests,
        "external": external,
        "blocked": logs.blocked(),
        "csp": logs.header(form_url, "Content-Security-Policy"),
        "console_errors": logs.console_errors(),
    }


class Deadline(Exception):
    pass


def on_alarm(signum, frame):
    raise Deadline()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("text")
    parser.add_argument("--screenshot", metavar="PATH", help="PNG of the form page, TEXT typed, before submitting")
    parser.add_argument("--result-screenshot", metavar="PATH", help="PNG of the result page")
    args = parser.parse_args()
    if urlsplit(args.url).scheme not in ("http", "https"):
        parser.error(f"URL must be http(s): {args.url}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_alarm)
    signal.alarm(DEADLINE)
    started = time.monotonic()
    profile_dir = tempfile.mkdtemp(prefix="answer-form-chromium-")
    driver = None
    try:
        driver = make_driver(args.url, profile_dir)
        out = run(args, driver)
    except FlowError as e:
        sys.stderr.write(f"answer_form.py: {e}\n")
        return 1
    except Deadline:
        sys.stderr.write(f"answer_form.py: gave up after {time.monotonic() - started:.0f} s\n")
        return 1
    except WebDriverException as e:
        sys.stderr.write(f"answer_form.py: webdriver: {short(e)}\n")
        return 1
    finally:
        if driver is not None:
            signal.alarm(30)  # quitting must not hang either
            try:
                driver.quit()
            except (Exception, Deadline) as e:  # noqa: BLE001 - the result is known already
                sys.stderr.write(f"answer_form.py: quitting the browser: {e!r}\n")
        signal.alarm(0)
        shutil.rmtree(profile_dir, ignore_errors=True)
    print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
