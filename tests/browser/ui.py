#!/usr/bin/env python3
"""Drives a real headless Chromium through the agent's web page (client/ui), for the integration tests.

Usage:
    python3 tests/browser/ui.py --url http://127.0.0.1:PORT/#token=HEX --recipient ADDR \\
        --refused-text TEXT --text TEXT --answer-text TEXT [--opener FILE] [--screenshots DIR] [--timeout SECS]

The flow (tests/browser/README.md has the details):
 1. opens URL (viewport 1280x900): #no-token and #agent-down must stay hidden;
 2. gathers accessibility basics: "unlabelled" controls, "lang", Tab order
    ("tab_reaches_send", "tab_order") and each Tab stop's focus indicator
    ("no_focus_indicator"), sideways scrolling at 360x740 ("narrow_overflow");
 3. submits "not an address": "bad_address_error", "bad_address_invalid";
 4. types --refused-text: "refused_verdict", "bytes_text"; DIR/compose.png; then
    presses Send anyway: "refused_send_error" (#compose-error), "refused_send_verdict"
    (#verdict, under the message), "refused_send_invalid" and "refused_send_described"
    (#message's aria-invalid and aria-describedby), "refused_send_focus" (the focused
    element), "refused_send_progress" (whether #progress shows), "refused_send_kept"
    (whether the text is still in #message);
 5. types --text, sends it, waits for the receipt: "queued_words", "receipt_words";
    DIR/receipt.png; prints {"phase": "delivered", ...} and waits for one line on stdin;
 6. waits for --answer-text under Conversations: "answer_seen", "thread_count"
    (DIR/thread.png); "sent_rows"; "anonymity_text", "cost_text"; then shows
    each view again for the WCAG 2.2 AA checks below ("contrast_failures",
    "small_targets");
 7. a page of another origin (a second port) tries the agent's API in the same
    browser: "other_origin", "other_origin_read_threads", then "sent_rows_after";
 7b. forgets the conversation (accepting the confirmation): "forgot_thread";
 8. collects everything below;
 8b. with --opener: prints {"phase": "open-file"}, waits for one line on stdin (the
    caller ran `leak ui`, which wrote FILE), opens FILE (file://) in a new tab as the
    browser `leak ui` starts would, waits for the page it forwards to and for the
    agent's state there ("opened_from_file": {"url", "state", "no_token"}), closes
    that tab and prints {"phase": "opened-from-file"};
 9. prints {"phase": "stop-agent"}, waits for one line on stdin (the caller
    stopped the agent), waits for #agent-down and records its text
    ("agent_down_text");
10. prints {"phase": "done", ...everything, "requests", "external", "blocked",
    "csp", "console_errors"} (the agent's tab only) and exits 0.

WCAG 2.2 AA checks, recorded, not asserted, in the light and the dark colour
scheme ("color_schemes": those Chrome could emulate, through the DevTools
protocol's Emulation.setEmulatedMedia), at 1280x900, back to light after each:
 - "contrast_failures" (1.4.3): text below 4.5:1 (3:1 when large: 24 px, or
   18.66 px bold) against its background, each view, and the compose view also
   with the bad-address error, the refusal and the acceptance, the status view
   also with #agent-down: [{"view", "scheme", "selector", "text", "ratio",
   "required"}]; "contrast_checked" counts the texts checked;
 - "small_targets" (2.5.8): targets under 24x24 CSS px without an exception,
   each view: [{"view", "selector", "w", "h"}]; "targets_checked";
 - "no_focus_indicator" (2.4.7): Tab stops of step 2 whose look does not
   change when focused: [{"scheme", "selector", "outline"}]; "focus_checked".

One JSON object per line on stdout, flushed. On failure: one line on stderr,
nothing more on stdout, exit 1 (2 for bad arguments).
"""

import argparse
import html
import json
import os
import pathlib
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
SCHEMES = ("light", "dark")  # prefers-color-scheme, emulated for the WCAG checks
FOCUS_OUTLINE_MIN = 2  # px
FOCUS_CONTRAST_MIN = 3  # the focus outline against what it is drawn on (1.4.11)
OTHER_ORIGIN_WAIT = 5  # seconds the other origin's page gets

# What the page leaves on the console when /api/send answers an error on
# purpose (steps 3 and 4): Chrome logs every 4xx/5xx answer, fetch() ones too.
EXPECTED_SEND_ERROR = re.compile(r"/api/send - Failed to load resource: the server responded with a status of 4\d\d")
EXPECTED_SEND_ERRORS = 2  # the bad address, the refused text

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

# ---- WCAG 2.2 AA checks (recorded, not asserted here) -------------------------

# What the three checks share, put before each of them: colours, contrast,
# backgrounds, visibility, and a selector to report an element by.
WCAG_COMMON_JS = """
// A computed colour as [r, g, b, alpha]: Chrome gives rgb()/rgba(); any other
// form (color(), oklch(), ...) is painted on a 1x1 canvas and read back.
const parseColour = (c) => {
  const m = /^rgba?\\(\\s*([\\d.]+)[,\\s]+([\\d.]+)[,\\s]+([\\d.]+)(?:\\s*[,/]\\s*([\\d.]+)(%?))?\\s*\\)$/.exec(c);
  if (m) {
    const a = m[4] === undefined ? 1 : m[5] ? m[4] / 100 : +m[4];
    return [+m[1], +m[2], +m[3], a];
  }
  const ctx = Object.assign(document.createElement("canvas"), {width: 1, height: 1})
    .getContext("2d", {willReadFrequently: true});
  ctx.clearRect(0, 0, 1, 1);
  ctx.fillStyle = c;
  ctx.fillRect(0, 0, 1, 1);
  const d = ctx.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2], d[3] / 255];
};
// `top` painted over the opaque colour `under`.
const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3])).concat(1);
// WCAG 2.2 relative luminance and contrast ratio.
const luminance = (c) => {
  const [r, g, b] = c.slice(0, 3).map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const contrast = (x, y) => {
  const [a, b] = [luminance(x), luminance(y)];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
};
// What the page is painted on when nothing above it is opaque: Chrome's canvas.
const CANVAS = {light: [255, 255, 255, 1], dark: [18, 18, 18, 1]};
// The opaque colour behind el's content: its own and its ancestors' background
// colours, from the first opaque one (or the canvas) up. null when one of them
// has a background image: its colours are unknown here (the page uses none).
const backgroundOf = (el, scheme) => {
  const layers = [];
  for (let n = el; n; n = n.parentElement) {
    const s = getComputedStyle(n);
    if (s.backgroundImage !== "none") return null;
    const c = parseColour(s.backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] >= 1) break;
  }
  return layers.reduceRight((under, c) => over(c, under), CANVAS[scheme] || CANVAS.light);
};
// Rendered, and neither visibility:hidden, opacity:0 nor in a closed <details>.
const isVisible = (el) => el.getClientRects().length > 0
  && el.checkVisibility({opacityProperty: true, visibilityProperty: true});
// "#id", or "tag.class" steps up to the nearest ancestor with an id: "#sent-list > li.leak > p.leak-head".
const selectorOf = (el) => {
  const steps = [];
  for (let n = el; n && n !== document.body; n = n.parentElement) {
    if (n.id) {
      steps.unshift("#" + n.id);
      break;
    }
    steps.unshift(n.tagName.toLowerCase() + [...n.classList].map((c) => "." + c).join(""));
  }
  return steps.join(" > ") || "body";
};
"""

# 1.4.3 Contrast (Minimum), for the view shown: every visible element with
# text of its own (its own non-blank text nodes), and every text field (the
# text typed in it, its placeholder while empty). Disabled controls, their
# labels and what a disabled fieldset holds are exempt (inactive UI).
# Returns [how many were checked, the failures].
CONTRAST_JS = WCAG_COMMON_JS + """
const [view, scheme] = arguments;
const TEXT_INPUTS = new Set(["text", "email", "search", "url", "tel", "password", "number"]);
const inactive = (el) => el.matches(":disabled")
  || el.closest("fieldset:disabled, [aria-disabled='true']") !== null
  || (el.tagName === "LABEL" && el.control !== null && el.control.disabled);
let checked = 0;
const failures = [];
const check = (el, style, text) => {
  const bg = backgroundOf(el, scheme);
  if (!bg) return;
  const fg = over(parseColour(style.color), bg);
  const size = parseFloat(style.fontSize);
  const large = size >= 24 || (size >= 18.66 && parseInt(style.fontWeight, 10) >= 700);
  const required = large ? 3 : 4.5;
  const ratio = contrast(fg, bg);
  checked++;
  if (ratio < required) {
    failures.push({view, scheme, selector: selectorOf(el), text: text.replace(/\\s+/g, " ").trim().slice(0, 40),
                   ratio: Math.floor(ratio * 100) / 100, required});
  }
};
for (const el of document.body.querySelectorAll("*")) {
  const field = el.matches("textarea, select") || (el.tagName === "INPUT" && TEXT_INPUTS.has(el.type));
  let text;
  if (field) text = el.tagName === "SELECT" ? (el.selectedOptions[0] || {text: ""}).text : el.value;
  else text = [...el.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.data).join("");
  if ((!field && !text.trim()) || !isVisible(el) || inactive(el)) continue;
  check(el, getComputedStyle(el), text);
  if (field && !el.value && el.placeholder && el.placeholder.trim()) {
    check(el, getComputedStyle(el, "::placeholder"), el.placeholder);
  }
}
return [checked, failures];
"""

# 2.5.8 Target Size (Minimum), for the view shown: every visible button,
# link, field and summary at least 24x24 CSS px, or exempt: a link inline in
# a sentence (a <p> or <li>); a radio or checkbox whose box united with its
# labels' is 24x24 (clicking the label works too); or the spacing exception
# (a 24 px circle centred on it touches no other target, nor the circle of
# another undersized one). Returns [how many were checked, the failures].
TARGETS_JS = WCAG_COMMON_JS + """
const view = arguments[0];
const MIN = 24;
const targets = [...document.body.querySelectorAll(
  "button, a[href], input:not([type='hidden']), select, textarea, summary")].filter(isVisible);
const boxes = targets.map((t) => t.getBoundingClientRect());
const big = (r) => r.width >= MIN && r.height >= MIN;
const union = (rects) => {
  const left = Math.min(...rects.map((r) => r.left)), top = Math.min(...rects.map((r) => r.top));
  const right = Math.max(...rects.map((r) => r.right)), bottom = Math.max(...rects.map((r) => r.bottom));
  return {width: right - left, height: bottom - top};
};
const exempt = (t, r) => {
  if (t.tagName === "A" && getComputedStyle(t).display === "inline" && t.closest("p, li")) return true;
  if (t.matches("input[type='radio'], input[type='checkbox']") && t.labels && t.labels.length) {
    const rects = [r, ...[...t.labels].filter(isVisible).map((l) => l.getBoundingClientRect())];
    if (big(union(rects))) return true;
  }
  return false;
};
const centre = (r) => [r.left + r.width / 2, r.top + r.height / 2];
const spaced = (i) => {
  const [x, y] = centre(boxes[i]);
  return boxes.every((r, j) => {
    if (j === i) return true;
    if (!big(r)) {
      const [u, v] = centre(r);
      return Math.hypot(x - u, y - v) >= MIN;
    }
    const dx = Math.max(r.left - x, 0, x - r.right), dy = Math.max(r.top - y, 0, y - r.bottom);
    return Math.hypot(dx, dy) >= MIN / 2;
  });
};
const failures = [];
targets.forEach((t, i) => {
  const r = boxes[i];
  if (big(r) || exempt(t, r) || spaced(i)) return;
  failures.push({view, selector: selectorOf(t), w: Math.round(r.width * 10) / 10, h: Math.round(r.height * 10) / 10});
});
return [targets.length, failures];
"""

# How an element (arguments[0]) shows focus, as computed now: its outline
# (with the outline colour's contrast against what it is drawn on: the
# parent's background, or its own for an outline drawn inside), box-shadow
# and border colours. Read while it has the focus, then again without.
FOCUS_STYLE_JS = WCAG_COMMON_JS + """
const [el, scheme] = arguments;
const s = getComputedStyle(el);
const inside = parseFloat(s.outlineOffset) < 0 || !el.parentElement;
const bg = backgroundOf(inside ? el : el.parentElement, scheme);
const colour = parseColour(s.outlineColor);
return {
  selector: selectorOf(el),
  outline: [s.outlineStyle, s.outlineWidth, s.outlineColor, s.outlineOffset].join(" "),
  outline_style: s.outlineStyle,
  outline_width: parseFloat(s.outlineWidth) || 0,
  outline_contrast: bg ? Math.floor(contrast(over(colour, bg), bg) * 100) / 100 : null,
  box_shadow: s.boxShadow,
  border_colours: [s.borderTopColor, s.borderRightColor, s.borderBottomColor, s.borderLeftColor].join(" "),
};
"""


def emit(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def normalised(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


def shows_focus(focused, unfocused):
    """Whether the focused style differs visibly from the unfocused one: an
    outline at least 2 px wide, of at least 3:1 against what it is drawn on,
    that was not there already; a box-shadow of its own; or other border colours."""
    outline = (
        focused["outline_style"] != "none"
        and focused["outline_width"] >= FOCUS_OUTLINE_MIN
        and (focused["outline_contrast"] or 0) >= FOCUS_CONTRAST_MIN
        and focused["outline"] != unfocused["outline"]
    )
    shadow = focused["box_shadow"] != "none" and focused["box_shadow"] != unfocused["box_shadow"]
    border = focused["border_colours"] != unfocused["border_colours"]
    return outline or shadow or border


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
        self.schemes = ["light"]  # those of SCHEMES Chrome could emulate (step 1)
        self.wcag = {
            "contrast_failures": [],
            "contrast_checked": 0,
            "small_targets": [],
            "targets_checked": 0,
            "no_focus_indicator": [],
            "focus_checked": 0,
        }

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

    # -- WCAG 2.2 AA checks

    def set_scheme(self, scheme):
        """Emulates prefers-color-scheme (DevTools protocol): whether the page now sees it."""
        try:
            self.driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
            )
        except WebDriverException:
            return False
        return self.driver.execute_script(
            "return matchMedia(`(prefers-color-scheme: ${arguments[0]})`).matches", scheme
        )

    def check_contrast(self, view):
        """Text contrast of what is shown now, in each colour scheme; back to light after."""
        for scheme in self.schemes:
            self.set_scheme(scheme)
            checked, failures = self.driver.execute_script(CONTRAST_JS, view, scheme)
            self.wcag["contrast_checked"] += checked
            # The compose view is checked in several states: each failure once.
            found = self.wcag["contrast_failures"]
            found.extend(f for f in failures if f not in found)
        self.set_scheme("light")

    def check_view(self, view, list_id=None):
        """Shows a view, then checks its text contrast and target sizes (sizes do not depend on the scheme)."""
        self.show_view(view, list_id)
        self.driver.execute_script("window.scrollTo(0, 0);")
        self.check_contrast(view)
        checked, failures = self.driver.execute_script(TARGETS_JS, view)
        self.wcag["targets_checked"] += checked
        self.wcag["small_targets"].extend(failures)

    def focus_styles(self, element):
        """How element shows focus now, in each colour scheme; back to light after."""
        styles = {}
        for scheme in self.schemes:
            self.set_scheme(scheme)
            styles[scheme] = self.driver.execute_script(FOCUS_STYLE_JS, element, scheme)
        self.set_scheme("light")
        return styles

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
        # The WCAG checks run in each colour scheme Chrome can emulate, then back to light.
        self.schemes = [scheme for scheme in SCHEMES if self.set_scheme(scheme)] or ["light"]
        self.set_scheme("light")

        # 2. Accessibility basics.
        rec["unlabelled"] = d.execute_script(UNLABELLED_JS)
        rec["lang"] = d.execute_script("return document.documentElement.lang")
        d.execute_script("if (document.activeElement) document.activeElement.blur(); window.scrollTo(0, 0);")
        order, reached, seen = [], False, []
        for _ in range(TAB_PRESSES):
            ActionChains(d).send_keys(Keys.TAB).perform()
            focused = d.execute_script(DESCRIBE_ACTIVE_JS)
            order.append(focused)
            if focused != "body":
                # Its focus indicator (WCAG 2.4.7), compared below with its look unfocused.
                element = d.switch_to.active_element
                seen.append((element, self.focus_styles(element)))
            if focused == "send":
                reached = True
                break
        rec["tab_reaches_send"] = reached
        rec["tab_order"] = order
        d.execute_script("if (document.activeElement) document.activeElement.blur(); window.scrollTo(0, 0);")
        for element, focused_styles in seen:
            unfocused_styles = self.focus_styles(element)
            for scheme in self.schemes:
                focused, unfocused = focused_styles[scheme], unfocused_styles[scheme]
                self.wcag["focus_checked"] += 1
                if not shows_focus(focused, unfocused):
                    self.wcag["no_focus_indicator"].append(
                        {"scheme": scheme, "selector": focused["selector"], "outline": focused["outline"]}
                    )
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
        self.check_contrast("compose")  # the error, and the field marked invalid
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
        self.check_contrast("compose")  # the refusal
        self.shot("compose.png")
        # Send pressed anyway: the agent refuses it, with the reason, tied to the
        # message field, and queues nothing (tests/tests/ui.rs counts the queued leaks).
        self.logs.collect()
        self.find("send").click()
        self.until(
            "#compose-error after sending the refused text",
            lambda: "refuse" in self.text("compose-error").lower(),
        )
        rec["refused_send_error"] = self.text("compose-error")
        rec["refused_send_verdict"] = self.text("verdict")
        rec["refused_send_invalid"] = message.get_attribute("aria-invalid")
        rec["refused_send_described"] = message.get_attribute("aria-describedby")
        rec["refused_send_focus"] = d.execute_script(DESCRIBE_ACTIVE_JS)
        rec["refused_send_progress"] = self.find("progress").is_displayed()
        rec["refused_send_kept"] = message.get_attribute("value") == args.refused_text
        self.check_contrast("compose")  # the refusal, under Send
        time.sleep(0.3)  # lets the console entry of the 422 answer arrive
        self.collect_console_into(
            self.expected_console, lambda e: EXPECTED_SEND_ERROR.search(e.get("message", "")) is not None
        )

        # 5. Send, and wait for the receipt.
        message.clear()
        message.send_keys(args.text)
        self.until(
            "#verdict to accept the text",
            lambda: "ok" in (self.find("verdict").get_attribute("class") or "").split(),
            CHECK_WAIT,
        )
        self.check_contrast("compose")  # the acceptance
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
        # Each view, filled, at the wide viewport: contrast in both schemes, target sizes.
        # The last one is Your anonymity again, as before.
        self.check_view("compose")
        self.check_view("sent", "sent-list")
        self.check_view("threads", "thread-list")
        self.check_view("status")

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

        # 7b. Forgetting the conversation (its confirmation dialog accepted).
        self.show_view("threads", "thread-list")
        d.find_element(By.CSS_SELECTOR, ".thread .thread-forget").click()
        WebDriverWait(d, WAIT).until(lambda drv: drv.switch_to.alert).accept()
        rec["forgot_thread"] = bool(
            self.until("#threads-empty to show", lambda: self.find("threads-empty").is_displayed())
        )

        # 8. Everything.
        self.logs.collect()
        # A 4xx entry of steps 3 and 4 that came late: still one of those expected.
        for entry in list(self.logs.console):
            if len(self.expected_console) >= EXPECTED_SEND_ERRORS:
                break
            if entry.get("level") == "SEVERE" and EXPECTED_SEND_ERROR.search(entry.get("message", "")):
                self.expected_console.append(entry.get("message", ""))
                self.logs.console.remove(entry)
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

        # 8b. `leak ui`'s forwarding file, opened as the browser `leak ui` starts
        # would open it: it forwards to the page, whose first call with the key
        # removes the file (the caller checks).
        if args.opener:
            emit({"phase": "open-file"})
            sys.stdin.readline()
            d.switch_to.new_window("tab")
            try:
                d.get(pathlib.Path(args.opener).resolve().as_uri())
            except WebDriverException as e:
                raise FlowError(f"could not open {args.opener}: {short(e)}") from e
            self.until("the forwarding file to open the page", lambda: d.current_url.startswith(agent_origin + "/"))
            self.find("compose-form")
            self.until(
                "the agent's state in the page opened from the file",
                lambda: self.text("anonymity-short").strip() or self.find("no-token").is_displayed(),
            )
            result["opened_from_file"] = {
                "url": d.current_url,
                "state": bool(self.text("anonymity-short").strip()),
                "no_token": self.find("no-token").is_displayed(),
            }
            d.close()
            d.switch_to.window(self.agent_tab)
            emit({"phase": "opened-from-file"})

        # 9. The agent stops (the caller stops it once told): the page says so.
        emit({"phase": "stop-agent"})
        sys.stdin.readline()
        self.show_view("status")
        result["agent_down_text"] = self.until(
            "#agent-down to show",
            lambda: self.find("agent-down").is_displayed() and self.text("agent-down").strip(),
            30,
        )
        self.check_contrast("status")  # the #agent-down alert
        self.shot("agent-down.png")
        result.update(self.wcag, color_schemes=self.schemes)
        return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the page's address, with #token=")
    parser.add_argument("--recipient", required=True)
    parser.add_argument("--refused-text", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--answer-text", required=True)
    parser.add_argument("--opener", metavar="FILE", help="`leak ui`'s forwarding file, opened at step 8b")
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
