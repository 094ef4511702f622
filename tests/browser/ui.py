#!/usr/bin/env python3
"""Drives a real headless Chromium through the agent's web page (client/ui), for the integration tests.

Usage:
    python3 tests/browser/ui.py --url http://127.0.0.1:PORT/#token=HEX --recipient ADDR \\
        --refused-text TEXT --text TEXT --answer-text TEXT [--screenshots DIR] [--timeout SECS]

The flow (tests/browser/README.md has the details):
 1. opens URL (viewport 1280x900): #no-token and #agent-down must stay hidden;
 2. gathers accessibility basics: "unlabelled" controls, "lang", Tab order
    ("tab_reaches_send", "tab_order"), sideways scrolling at 360x740 ("narrow_overflow");
 3. submits "not an address": "bad_address_error", "bad_address_invalid";
 4. types --refused-text: "refused_verdict", "bytes_text"; DIR/compose.png;
 5. types --text, sends it, waits for the receipt: "queued_words", "receipt_words";
    DIR/receipt.png; prints {"phase": "delivered", ...} and waits for one line on stdin;
 6. waits for --answer-text under Conversations: "answer_seen", "thread_count"
    (DIR/thread.png); "sent_rows"; "anonymity_text", "cost_text";
 7. a page of another origin (a second port) tries the agent's API in the same
    browser: "other_origin", "other_origin_read_threads", then "sent_rows_after";
 8. collects everything below;
 9. prints {"phase": "stop-agent"}, waits for one line on stdin (the caller
    stopped the agent), waits for #agent-down and records its text
    ("agent_down_text");
10. prints {"phase": "done", ...everything, "requests", "external", "blocked",
    "csp", "console_errors"} (the agent's tab only) and exits 0.

One JSON object per line on stdout, flushed. On failure: one line on stderr,
nothing more on stdout, exit 1 (2 for bad arguments).
"""

import argparse
import html
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urldefrag, urlsplit

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Before selenium: re-runs this script under /usr/bin/python3 if need be.
from browser_common import (  # noqa: E402
    FlowError,
    Logs,
    external,
    run_browser,
    save_screenshot,
    short,
)

from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT = 20  # seconds, for each page load and ordinary wait
CHECK_WAIT = 10  # seconds, for the policy's verdict
WIDE = (1280, 900)  # viewport
NARROW = (360, 740)
TAB_PRESSES = 40
OTHER_ORIGIN_WAIT = 5  # seconds the other origin's page gets

# What the page leaves on the console when /api/send answers an error on
# purpose (step 3): Chrome logs every 4xx/5xx answer, fetch() ones too.
EXPECTED_SEND_ERROR = re.compile(r"/api/send - Failed to load resource: the server responded with a status of 4\d\d")

# Accessible names, roughly as assistive technology computes them.
UNLABELLED_JS = """
const out = [];
for (const el of document.querySelectorAll("input, textarea, select, button")) {
  if (el.type === "hidden" || !el.getClientRects().length) continue;
  if (getComputedStyle(el).visibility === "hidden") continue;
  let name = "";
  for (const l of el.labels || []) name += l.textContent;
  name += el.getAttribute("aria-label") || "";
  for (const id of (el.getAttribute("aria-labelledby") || "").split(/\\s+/)) {
    const t = id && document.getElementById(id);
    if (t) name += t.textContent;
  }
  if (el.tagName === "BUTTON") name += el.textContent;
  if (el.tagName === "INPUT" && ["submit", "button", "reset"].includes(el.type)) name += el.value;
  if (!name.trim()) out.push(el.id || el.name || el.tagName.toLowerCase());
}
return out;
"""

DESCRIBE_ACTIVE_JS = """
const el = document.activeElement;
if (!el || el === document.body) return "body";
if (el.id) return el.id;
const cls = (el.getAttribute("class") || "").trim().split(/\\s+/)[0];
return el.tagName.toLowerCase() + (cls ? "." + cls : "");
"""

ANSWER_SEEN_JS = """
const want = arguments[0];
return [...document.querySelectorAll(".thread .answer")].some(
  (a) => a.textContent.replace(/\\r\\n?/g, "\\n").includes(want));
"""

SENT_ROWS_JS = """
const list = document.getElementById("sent-list");
return list ? list.querySelectorAll("li:not(.empty), tbody tr").length : -1;
"""


def emit(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def normalised(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ---- The other origin --------------------------------------------------------


def other_origin_page(agent, recipient):
    """evil.html: tries the agent's API from another origin (no CSP on it)."""
    leak = {
        "recipient": recipient,
        "relationship": "friend",
        "text": "Sent by another website.",
        "within_secs": None,
        "thread": None,
        "answers": True,
    }
    # enctype=text/plain sends "NAME=VALUE\r\n": a JSON body with the "=" in the text.
    form_name = json.dumps({k: v for k, v in leak.items() if k != "text"})[:-1] + ',"text":"Sent by another website'
    form_value = ' (form)."}'
    script = """
const agent = %(agent)s;
const body = %(body)s;
const out = {a: "pending", b: "pending", c: "pending", d: {}};
const show = () => { document.getElementById("result").textContent = JSON.stringify(out); };
const what = async (r) => r.type === "opaque" ? "opaque" : `read ${r.status}: ${(await r.text()).slice(0, 300)}`;
async function run() {
  try {
    out.a = await what(await fetch(agent + "/api/send", {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body}));
  } catch (e) { out.a = "error: " + e; }
  show();
  try { out.b = await what(await fetch(agent + "/api/threads", {mode: "cors"})); }
  catch (e) { out.b = "error: " + e; }
  show();
  try {
    out.c = await what(await fetch(agent + "/api/send", {method: "POST", mode: "cors",
      headers: {"Content-Type": "application/json", "X-Leak-Token": "guess"}, body}));
  } catch (e) { out.c = "error: " + e; }
  show();
  const img = document.createElement("img");
  img.alt = "";
  img.onload = () => { out.d.img = `loaded ${img.naturalWidth}x${img.naturalHeight}`; show(); };
  img.onerror = () => { out.d.img = "error"; show(); };
  img.src = agent + "/api/threads";
  document.body.append(img);
  document.getElementById("f").submit();
  out.d.form = "submitted";
  show();
  setTimeout(() => {
    try { out.d.frame = "read: " + frames.sink.document.body.textContent.slice(0, 300); }
    catch (e) { out.d.frame = "error: " + e.name; }
    show();
  }, 2000);
}
run();
""" % {"agent": json.dumps(agent), "body": json.dumps(json.dumps(leak))}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Another website</title><link rel="icon" href="data:,"></head>
<body>
<h1>Another website</h1>
<pre id="result"></pre>
<iframe name="sink" title="sink"></iframe>
<form id="f" method="post" action="{html.escape(agent)}/api/send" enctype="text/plain" target="sink">
<input type="hidden" name="{html.escape(form_name)}" value="{html.escape(form_value)}">
</form>
<script>{script}</script>
</body></html>
""".encode()


def serve_other_origin(page):
    """A server on 127.0.0.1, another port: the other origin. Returns (server, url)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if urlsplit(self.path).path != "/evil.html":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/evil.html"


# ---- The flow -----------------------------------------------------------------


class Flow:
    def __init__(self, args, driver):
        self.args = args
        self.driver = driver
        self.logs = Logs(driver)
        self.rec = {}
        self.expected_console = []
        self.other_console = []

    # -- helpers

    def find(self, element_id):
        found = self.driver.find_elements(By.ID, element_id)
        if not found:
            raise FlowError(f"no #{element_id} on the page")
        return found[0]

    def text(self, element_id):
        return self.find(element_id).text

    def until(self, what, condition, timeout=WAIT):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(lambda d: condition())
        except TimeoutException as e:
            raise FlowError(f"waited {timeout} s for {what}") from e

    def shot(self, name):
        if self.args.screenshots:
            save_screenshot(self.driver, os.path.join(self.args.screenshots, name))

    def set_viewport(self, width, height):
        """Sizes the window so that the page's viewport is width x height."""
        self.driver.set_window_size(width, height)
        for _ in range(2):
            inner = self.driver.execute_script("return [innerWidth, innerHeight]")
            if inner == [width, height]:
                break
            size = self.driver.get_window_size()
            self.driver.set_window_size(size["width"] + width - inner[0], size["height"] + height - inner[1])
        return self.driver.execute_script("return [innerWidth, innerHeight]")

    def overflows(self):
        """Whether the page scrolls sideways: wider than its viewport (scrollbar left out)."""
        return self.driver.execute_script(
            "const d = document.documentElement;"
            "return d.scrollWidth > Math.min(innerWidth, d.clientWidth);"
        )

    def updated(self, element_id):
        return self.driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.dataset.updated || '0' : null;",
            element_id,
        )

    def show_view(self, name, list_id=None):
        """Clicks a nav button; with list_id, waits until that list is rendered afresh."""
        before = self.updated(list_id) if list_id else None
        self.find(f"nav-{name}").click()
        self.until(f"#{name} to show", lambda: self.find(name).is_displayed())
        if list_id:
            self.until(f"#{list_id} to be refreshed", lambda: self.updated(list_id) != before)

    def collect_console_into(self, bucket, keep=None):
        """Moves the console entries logged since the last collect() into bucket (those keep() accepts)."""
        start = len(self.logs.console)
        self.logs.collect()
        fresh = self.logs.console[start:]
        moved = [e for e in fresh if keep is None or keep(e)]
        bucket.extend(e.get("message", "") for e in moved if e.get("level") == "SEVERE")
        self.logs.console[start:] = [e for e in fresh if e not in moved]

    # -- the steps

    def run(self):
        args, d, rec = self.args, self.driver, self.rec

        # 1. Open the page.
        self.set_viewport(*WIDE)
        self.logs.collect()  # drop what the start tab logged
        self.logs.performance.clear()
        self.logs.console.clear()
        try:
            d.get(args.url)
        except WebDriverException as e:
            raise FlowError(f"could not load {args.url}: {short(e)}") from e
        self.agent_tab = d.current_window_handle
        self.find("compose-form")
        self.until(
            "the agent's state (#anonymity-short), #no-token or #agent-down",
            lambda: self.text("anonymity-short").strip()
            or self.find("no-token").is_displayed()
            or self.find("agent-down").is_displayed(),
        )
        if self.find("no-token").is_displayed():
            raise FlowError(f"#no-token is shown: {self.text('no-token')}")
        if self.find("agent-down").is_displayed():
            raise FlowError(f"#agent-down is shown: {self.text('agent-down')}")

        # 2. Accessibility basics.
        rec["unlabelled"] = d.execute_script(UNLABELLED_JS)
        rec["lang"] = d.execute_script("return document.documentElement.lang")
        d.execute_script("if (document.activeElement) document.activeElement.blur(); window.scrollTo(0, 0);")
        order, reached = [], False
        for _ in range(TAB_PRESSES):
            ActionChains(d).send_keys(Keys.TAB).perform()
            focused = d.execute_script(DESCRIBE_ACTIVE_JS)
            order.append(focused)
            if focused == "send":
                reached = True
                break
        rec["tab_reaches_send"] = reached
        rec["tab_order"] = order
        d.execute_script("if (document.activeElement) document.activeElement.blur(); window.scrollTo(0, 0);")
        rec["narrow_viewport"] = self.set_viewport(*NARROW)
        rec["narrow_overflow"] = self.overflows()
        self.shot("narrow.png")
        self.set_viewport(*WIDE)

        # 3. A bad address, submitted with Enter.
        recipient, message = self.find("recipient"), self.find("message")
        self.logs.collect()  # what came before is the page's own
        recipient.clear()
        recipient.send_keys("not an address")
        message.clear()
        message.send_keys(args.text)
        recipient.send_keys(Keys.ENTER)
        self.until("#compose-error after a bad address", lambda: self.text("compose-error").strip() != "")
        rec["bad_address_error"] = self.text("compose-error")
        rec["bad_address_invalid"] = recipient.get_attribute("aria-invalid")
        time.sleep(0.3)  # lets the console entry of the 4xx answer arrive
        self.collect_console_into(
            self.expected_console, lambda e: EXPECTED_SEND_ERROR.search(e.get("message", "")) is not None
        )

        # 4. A text the policy refuses.
        recipient.clear()
        recipient.send_keys(args.recipient)
        message.clear()
        message.send_keys(args.refused_text)
        self.until(
            '#verdict to start with "Refused"', lambda: self.text("verdict").startswith("Refused"), CHECK_WAIT
        )
        rec["refused_verdict"] = self.text("verdict")
        rec["bytes_text"] = self.text("bytes")
        self.shot("compose.png")

        # 5. Send, and wait for the receipt.
        message.clear()
        message.send_keys(args.text)
        self.until(
            "#verdict to accept the text",
            lambda: "ok" in (self.find("verdict").get_attribute("class") or "").split(),
            CHECK_WAIT,
        )
        self.find("rel-friend").click()
        Select(self.find("when")).select_by_value("")
        self.find("send").click()
        self.until("#progress to show", lambda: self.find("progress").is_displayed())
        rec["queued_words"] = self.until("#progress-state", lambda: self.text("progress-state").strip() or None)
        self.until(
            '#progress-state to start with "Delivered"',
            lambda: self.text("progress-state").startswith("Delivered"),
            args.timeout,
        )
        rec["receipt_words"] = self.text("progress-state")
        self.shot("receipt.png")
        emit({"phase": "delivered", **rec})

        # 6. The answer (the caller writes "answered" once it is on its way).
        sys.stdin.readline()
        self.show_view("threads")
        answer = normalised(args.answer_text)
        self.until(
            "the answer under Conversations",
            lambda: d.execute_script(ANSWER_SEEN_JS, answer),
            args.timeout,
        )
        rec["answer_seen"] = True
        rec["thread_count"] = len(d.find_elements(By.CSS_SELECTOR, "#thread-list .thread"))
        rec["unlabelled_threads"] = d.execute_script(UNLABELLED_JS)
        d.execute_script("window.scrollTo(0, 0);")
        self.shot("thread.png")
        self.set_viewport(*NARROW)
        rec["narrow_overflow_threads"] = self.overflows()
        self.shot("thread-narrow.png")
        self.set_viewport(*WIDE)
        self.show_view("sent", "sent-list")
        rec["sent_rows"] = d.execute_script(SENT_ROWS_JS)
        self.show_view("status")
        self.until("#anonymity and #cost", lambda: self.text("anonymity").strip() and self.text("cost").strip())
        rec["anonymity_text"] = self.text("anonymity")
        rec["cost_text"] = self.text("cost")
        self.shot("status.png")

        # 7. Another origin, in another tab of the same browser.
        agent_origin = "{0}://{1}".format(*urlsplit(args.url)[:2])
        server, other_url = serve_other_origin(other_origin_page(agent_origin, args.recipient))
        try:
            self.logs.collect()  # the agent's tab's entries so far
            d.switch_to.new_window("tab")
            d.get(other_url)
            time.sleep(OTHER_ORIGIN_WAIT)
            raw = d.execute_script("const r = document.getElementById('result'); return r ? r.textContent : null;")
            try:
                rec["other_origin"] = json.loads(raw)
            except (TypeError, ValueError):
                rec["other_origin"] = raw
            lines = [answer] + [line for line in answer.split("\n") if len(line.strip()) >= 8]
            rec["other_origin_read_threads"] = d.execute_script(
                "const page = document.documentElement.outerHTML + document.documentElement.textContent;"
                "return arguments[0].some((t) => page.includes(t));",
                lines,
            )
            self.collect_console_into(self.other_console)
            d.close()
            d.switch_to.window(self.agent_tab)
            time.sleep(0.5)  # entries the closed tab logged last
            # What was logged while the other page was open is the other page's.
            self.collect_console_into(self.other_console)
        finally:
            server.shutdown()
            server.server_close()
        self.show_view("sent", "sent-list")
        rec["sent_rows_after"] = d.execute_script(SENT_ROWS_JS)

        # 8. Everything.
        self.logs.collect()
        if not self.expected_console:
            # The 4xx entry of step 3 came late: it is still the only one expected.
            for entry in self.logs.console:
                if entry.get("level") == "SEVERE" and EXPECTED_SEND_ERROR.search(entry.get("message", "")):
                    self.expected_console.append(entry.get("message", ""))
                    self.logs.console.remove(entry)
                    break
        requests = self.logs.requests(self.agent_tab)
        result = {
            "phase": "done",
            **rec,
            "requests": requests,
            "external": external(requests, args.url),
            "blocked": self.logs.blocked(self.agent_tab),
            "csp": self.logs.header(urldefrag(args.url).url, "Content-Security-Policy", self.agent_tab),
            "console_errors": self.logs.console_errors(),
            "expected_console_errors": self.expected_console,
            "other_origin_console": self.other_console,
        }

        # 9. The agent stops (the caller stops it once told): the page says so.
        emit({"phase": "stop-agent"})
        sys.stdin.readline()
        self.show_view("status")
        result["agent_down_text"] = self.until(
            "#agent-down to show",
            lambda: self.find("agent-down").is_displayed() and self.text("agent-down").strip(),
            30,
        )
        self.shot("agent-down.png")
        return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the page's address, with #token=")
    parser.add_argument("--recipient", required=True)
    parser.add_argument("--refused-text", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--answer-text", required=True)
    parser.add_argument("--screenshots", metavar="DIR", help="compose.png, receipt.png, thread.png, ... here")
    parser.add_argument("--timeout", type=int, default=180, metavar="SECS", help="for the receipt, and for the answer")
    args = parser.parse_args()
    if urlsplit(args.url).scheme not in ("http", "https"):
        parser.error(f"--url must be http(s): {args.url}")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")

    deadline = 2 * args.timeout + 240  # the two long waits, the rest, and the caller's answer
    status, out = run_browser(
        args.url,
        deadline,
        lambda driver: Flow(args, driver).run(),
        window=WIDE,
        timeout=WAIT,
        profile_prefix="leak-ui-chromium-",
    )
    if status == 0:
        emit(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
