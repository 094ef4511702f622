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
import sys
from urllib.parse import urlsplit

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
    text_of,
)

from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TIMEOUT = 20  # seconds, for each page load and each wait
DEADLINE = 120  # seconds, for the whole run: then it gives up (and still quits the browser)
WINDOW = (1000, 800)


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
            f"({type(e).__name__}: {str(e).strip()[:300]}; "
            f"console: {logs.console_errors() + [m.get('message', '') for m in driver.get_log('browser')]})"
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

    requests = logs.requests()
    return {
        "form_title": form_title,
        "label": label,
        "title": title,
        "result": result,
        "requests": requests,
        "external": external(requests, args.url),
        "blocked": logs.blocked(),
        "csp": logs.header(form_url, "Content-Security-Policy"),
        "console_errors": logs.console_errors(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("text")
    parser.add_argument("--screenshot", metavar="PATH", help="PNG of the form page, TEXT typed, before submitting")
    parser.add_argument("--result-screenshot", metavar="PATH", help="PNG of the result page")
    args = parser.parse_args()
    if urlsplit(args.url).scheme not in ("http", "https"):
        parser.error(f"URL must be http(s): {args.url}")

    status, out = run_browser(
        args.url,
        DEADLINE,
        lambda driver: run(args, driver),
        window=WINDOW,
        timeout=TIMEOUT,
        profile_prefix="answer-form-chromium-",
    )
    if status == 0:
        print(json.dumps(out, ensure_ascii=False))
    return status


if __name__ == "__main__":
    sys.exit(main())
