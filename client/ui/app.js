// Leak agent page: talks with the local agent's JSON API (client/src/agent/ui).
// Plain ES2020, no dependencies. Every string from the agent goes into the page
// through textContent, never as HTML. Nothing is stored except the session key.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const TOKEN_KEY = "leak-token";
  const STATE_EVERY_MS = 5000;
  const SENT_EVERY_MS = 5000;
  const THREADS_EVERY_MS = 3000;
  const LEAK_EVERY_MS = 2000;
  const CHECK_DELAY_MS = 300;
  const VIEWS = ["compose", "sent", "threads", "status"];
  // What the progress of a leak says when the agent answers "unknown".
  const UNKNOWN_LEAK =
    "Your agent no longer knows this leak: it was restarted, or it forgot the leak some time after it ended. The Sent view shows what became of it.";

  let token = null;
  let locked = false;            // no key, or a wrong one: nothing works
  let maxBytes = 2500;
  let relationLabels = {};       // "friend" -> "a friend"
  let policyVersion = null;
  let rulesVersion = null;       // policy version of the rules shown
  let view = "compose";
  let viewTimer = null;
  let viewGen = 0;               // a view's refresh loop stops when this moves on
  let stateTimer = null;
  let sending = false;
  let checkTimer = null;
  let checkSeq = 0;
  let progressTimer = null;
  let progressId = null;

  // ---- The session key -----------------------------------------------------

  function readToken() {
    const hash = location.hash.replace(/^#/, "");
    const fromHash = hash ? new URLSearchParams(hash).get("token") : null;
    if (fromHash) {
      try { sessionStorage.setItem(TOKEN_KEY, fromHash); } catch (_) { /* kept in memory only */ }
      history.replaceState(null, "", "/");
      return fromHash;
    }
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  // No key, or the agent does not know it (it restarted): say how to get one.
  function lock() {
    locked = true;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing to remove */ }
    for (const t of [viewTimer, stateTimer, progressTimer, checkTimer]) clearTimeout(t);
    reveal($("no-token"), true);
    $("agent-down").hidden = true;
    $("nav").hidden = true;
    $("views").hidden = true;
    $("anonymity-short").hidden = true;
  }

  // ---- Talking with the agent ----------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || `The agent answered with an error (HTTP ${status}).`);
      this.status = status;
      this.kind = (body && body.kind) || "internal";
      this.field = (body && body.field) || null;
    }
  }

  // Shows an alert; re-inserting its content makes screen readers announce it.
  function reveal(node, shown) {
    if (node.hidden === !shown) return;
    node.hidden = !shown;
    if (shown) node.replaceChildren(...node.childNodes);
  }

  function showDown(down) {
    if (!locked) reveal($("agent-down"), down);
  }

  async function api(method, path, body) {
    if (locked) throw new ApiError(401, { kind: "token", error: "This page has no key to the agent." });
    const init = {
      method,
      headers: { "X-Leak-Token": token },
      cache: "no-store",
      credentials: "same-origin",
      redirect: "error",
      referrerPolicy: "no-referrer",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (_) {
      showDown(true);
      throw new ApiError(0, { kind: "down", error: "The Leak agent is not running: nothing was sent." });
    }
    showDown(false);
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (response.status === 401) {
      lock();
      throw new ApiError(401, data);
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data || {};
  }

  // Runs fn() now and then every `ms` while `alive()` says so; errors are shown
  // elsewhere (agent-down, no-token), so a poll only tries again.
  function every(ms, fn, alive, setTimer) {
    const tick = async () => {
      if (locked || !alive()) return;
      try { await fn(); } catch (_) { /* shown by api() */ }
      if (!locked && alive()) setTimer(setTimeout(tick, ms));
    };
    tick();
  }

  // ---- Small helpers --------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function bytesOf(text) {
    return new TextEncoder().encode(text).length;
  }

  // A release time in the browser's local time: "15:40", or "Tuesday 15:40"
  // when it is not today.
  function localTime(ms) {
    const at = new Date(ms);
    const time = at.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
    if (at.toDateString() === new Date().toDateString()) return time;
    return `${at.toLocaleDateString([], { weekday: "long" })} ${time}`;
  }

  // "2026-12-06 14:02 UTC" (how the agent writes times) in local time.
  function localStamp(text) {
    const m = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d) UTC$/.exec(text || "");
    if (!m) return text || "";
    const at = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]));
    return `${at.toLocaleDateString([], { day: "numeric", month: "long", year: "numeric" })}, ${localTime(at.getTime())}`;
  }

  // "2026-12-06" (a day, as the agent writes it) in words: "December 6, 2026".
  function localDay(text) {
    const m = /^(\d{4})-(\d\d)-(\d\d)$/.exec(text || "");
    if (!m) return text || "";
    return new Date(+m[1], +m[2] - 1, +m[3]).toLocaleDateString([], { day: "numeric", month: "long", year: "numeric" });
  }

  function releaseWords(ms) {
    if (!ms || ms - Date.now() < 90 * 1000) return "It leaves with the next packet, in a moment.";
    return `It leaves at a random moment before ${localTime(ms)}.`;
  }

  function relationLabel(value) {
    return relationLabels[value] || value || "";
  }

  function setClass(node, classes, on) {
    node.classList.remove(...classes);
    if (on) node.classList.add(on);
  }

  // ---- Navigation ------------------------------------------------------------

  function show(name, focus) {
    view = name;
    for (const v of VIEWS) {
      $(v).hidden = v !== name;
      const button = $(`nav-${v}`);
      if (v === name) button.setAttribute("aria-current", "page");
      else button.removeAttribute("aria-current");
    }
    if (focus) $(name).querySelector("h2").focus();
    clearTimeout(viewTimer);
    const gen = ++viewGen;
    const mine = () => view === name && viewGen === gen;
    const keep = (t) => { viewTimer = t; };
    if (name === "sent") every(SENT_EVERY_MS, loadSent, mine, keep);
    if (name === "threads") every(THREADS_EVERY_MS, loadThreads, mine, keep);
    if (name === "status") loadState().catch(() => {});
  }

  // ---- State (every 5 s) -----------------------------------------------------

  async function loadState() {
    renderState(await api("GET", "/api/state"));
  }

  function renderState(s) {
    if (s.max_text_bytes) maxBytes = s.max_text_bytes;
    updateBytes();
    if (Array.isArray(s.relationships)) renderRelationships(s.relationships);
    const network = s.network || {};
    $("network").textContent = network.words || "";
    setClass($("network"), ["ok", "bad"], network.ok === false ? "bad" : null);
    $("anonymity").textContent = (s.anonymity && s.anonymity.words) || "";
    $("cost").textContent = (s.cost && s.cost.words) || "";
    const waiting = s.waiting || 0;
    $("waiting").textContent = waiting === 0 ? "Nothing is waiting to leave."
      : waiting === 1 ? "1 leak is waiting in the agent to leave."
      : `${waiting} leaks are waiting in the agent to leave.`;

    // One line on every view.
    const set = s.anonymity ? s.anonymity.set : null;
    const parts = [];
    if (network.ok === false) parts.push("Not connected to the network yet.");
    parts.push(typeof set === "number"
      ? `Anonymity: your leaks hide among about ${Math.round(set)} senders.`
      : "Anonymity: not measured yet.");
    if (waiting > 0) parts.push(`${waiting} waiting to leave.`);
    $("anonymity-short").textContent = parts.join(" ");

    if (s.policy_version !== undefined && s.policy_version !== policyVersion) {
      const changed = policyVersion !== null;
      policyVersion = s.policy_version;
      if (changed) {
        rulesVersion = null;
        if ($("rules").open) loadRules().catch(() => {});
        scheduleCheck(0);
      }
    }
  }

  // The radios: label texts from the agent; rebuilt only if the values change.
  function renderRelationships(list) {
    relationLabels = {};
    for (const r of list) relationLabels[r.value] = r.label;
    const box = $("rel-choices");
    const current = [...box.querySelectorAll("input")].map((i) => i.value);
    const wanted = list.map((r) => r.value);
    if (current.join("\n") !== wanted.join("\n")) {
      const checked = (box.querySelector("input:checked") || {}).value || "friend";
      box.replaceChildren();
      for (const r of list) {
        const choice = el("div", "choice");
        const input = el("input");
        input.type = "radio";
        input.name = "relationship";
        input.id = `rel-${r.value}`;
        input.value = r.value;
        input.checked = r.value === checked;
        const label = el("label", null, r.label);
        label.htmlFor = input.id;
        choice.append(input, label);
        box.append(choice);
      }
      if (!box.querySelector("input:checked") && box.querySelector("input")) {
        box.querySelector("input").checked = true;
      }
    } else {
      for (const r of list) {
        const label = box.querySelector(`label[for="rel-${CSS.escape(r.value)}"]`);
        if (label && label.textContent !== r.label) label.textContent = r.label;
      }
    }
    updateRelationHint();
  }

  function updateRelationHint() {
    const checked = $("rel-choices").querySelector("input:checked");
    const label = checked && document.querySelector(`label[for="${CSS.escape(checked.id)}"]`);
    $("rel-said").textContent = label ? label.textContent : "";
  }

  // ---- The message: byte count, policy check, rules ---------------------------

  function updateBytes() {
    const n = bytesOf($("message").value);
    $("bytes").textContent = `${n} of ${maxBytes} bytes`;
    $("bytes").classList.toggle("over", n > maxBytes);
  }

  function showVerdict(text, cls) {
    const v = $("verdict");
    v.textContent = text;
    setClass(v, ["ok", "refused", "too-long"], cls);
  }

  function scheduleCheck(delay) {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(check, delay);
  }

  async function check() {
    const text = $("message").value;
    const seq = ++checkSeq;
    if (!text.trim()) {
      showVerdict("", null);
      return;
    }
    let r;
    try {
      r = await api("POST", "/api/check", { text });
    } catch (_) {
      return;
    }
    if (seq !== checkSeq) return; // a newer check is on its way
    if (r.max_bytes) maxBytes = r.max_bytes;
    updateBytes();
    switch (r.verdict) {
      case "accepted":
        showVerdict("The policy accepts this text.", "ok");
        break;
      case "refused":
        showVerdict(`Refused: ${r.reason || "the policy does not accept this text."}${r.rule ? ` (rule ${r.rule})` : ""}`, "refused");
        break;
      case "too_long":
        showVerdict(`Too long: ${r.bytes} bytes, at most ${r.max_bytes}.`, "too-long");
        break;
      default:
        showVerdict("", null);
    }
  }

  async function loadRules() {
    const r = await api("GET", "/api/rules");
    const body = $("rules-body");
    body.replaceChildren();
    const list = (title, items) => {
      if (!items || !items.length) return;
      body.append(el("h3", null, title));
      const ul = el("ul");
      for (const item of items) ul.append(el("li", null, item));
      body.append(ul);
    };
    list("Do", r.dos);
    list("Don't", (r.donts || []).map((d) => d.words));
    list("Limits", r.limits);
    rulesVersion = r.policy_version;
  }

  // ---- Sending ------------------------------------------------------------------

  // Ties an error message to the field it is about.
  function markInvalid(node, errorId) {
    if (!node.dataset.describedby) node.dataset.describedby = node.getAttribute("aria-describedby") || "";
    node.setAttribute("aria-invalid", "true");
    node.setAttribute("aria-describedby", `${node.dataset.describedby} ${errorId}`.trim());
  }

  function clearInvalid(node) {
    if (node.getAttribute("aria-invalid") !== "true") return false;
    node.removeAttribute("aria-invalid");
    if (node.dataset.describedby) node.setAttribute("aria-describedby", node.dataset.describedby);
    else node.removeAttribute("aria-describedby");
    return true;
  }

  function composeFields() {
    return [$("recipient"), $("message"), $("when"), ...$("rel-choices").querySelectorAll("input")];
  }

  function clearComposeError() {
    $("compose-error").textContent = "";
    for (const f of composeFields()) clearInvalid(f);
  }

  function showComposeError(e) {
    $("compose-error").textContent = e.kind === "token"
      ? "Not sent: this page no longer has the key to your agent. Open it again with the command leak ui."
      : e.message;
    let targets = [];
    if (e.field === "recipient") targets = [$("recipient")];
    else if (e.field === "text") targets = [$("message")];
    else if (e.field === "when") targets = [$("when")];
    else if (e.field === "relationship") targets = [...$("rel-choices").querySelectorAll("input")];
    for (const t of targets) markInvalid(t, "compose-error");
    if (targets.length) {
      const focus = targets.find((t) => t.checked) || targets[0];
      focus.focus();
    }
  }

  async function send() {
    if (sending || locked) return;
    clearComposeError();
    const rel = $("rel-choices").querySelector("input:checked");
    const when = $("when").value;
    const body = {
      recipient: $("recipient").value.trim(),
      relationship: rel ? rel.value : "",
      text: $("message").value,
      within_secs: when ? Number(when) : null,
      thread: null,
      answers: $("answers").checked,
    };
    sending = true;
    $("send").setAttribute("aria-busy", "true");
    // The agent computes the leak's stamp before it answers: a few seconds.
    const slow = setTimeout(() => {
      $("send-wait").textContent = "Handing it to your agent… this can take a few seconds.";
    }, 400);
    try {
      const r = await api("POST", "/api/send", body);
      clearTimeout(checkTimer);
      checkSeq++; // a check still on its way is about the old text
      $("message").value = "";
      updateBytes();
      showVerdict("", null);
      followLeak(r);
    } catch (e) {
      showComposeError(e);
    } finally {
      clearTimeout(slow);
      $("send-wait").textContent = "";
      sending = false;
      $("send").removeAttribute("aria-busy");
    }
  }

  // Whether a leak's progress will change no more: it is finished
  // (delivered, refused, bounced, ...), or the agent does not know it.
  function settled(leak) {
    return leak.state === "finished" || leak.state === "unknown";
  }

  // Shows a settled leak's progress in `node`.
  function showSettled(node, leak) {
    if (leak.state === "unknown") {
      node.textContent = UNKNOWN_LEAK;
      setClass(node, ["ok", "bad"], null);
      return;
    }
    if (leak.words) node.textContent = leak.words;
    setClass(node, ["ok", "bad"], leak.good === true ? "ok" : leak.good === false ? "bad" : null);
  }

  // The progress panel: the queued leak, then its state every 2 s until it
  // is settled (finished, or unknown to the agent).
  function followLeak(r) {
    clearTimeout(progressTimer);
    progressId = r.message_id;
    const state = $("progress-state");
    state.textContent = `Handed to your agent. ${releaseWords(r.release_at_ms)}`;
    setClass(state, ["ok", "bad"], null);
    $("progress").hidden = false;
    $("progress-title").focus();
    const id = progressId;
    const poll = async () => {
      if (locked || id !== progressId) return;
      let leak = null;
      try {
        leak = await api("GET", `/api/leaks/${encodeURIComponent(id)}`);
      } catch (_) { /* shown by api(); try again */ }
      if (id !== progressId) return;
      if (leak) {
        if (settled(leak)) {
          showSettled(state, leak);
          return;
        }
        if (leak.words) state.textContent = leak.words;
      }
      if (!locked) progressTimer = setTimeout(poll, LEAK_EVERY_MS);
    };
    progressTimer = setTimeout(poll, 500);
  }

  // ---- Sent list ----------------------------------------------------------------

  // Each (re)render bumps data-updated, so a test can wait for fresh content.
  function bump(node) {
    node.dataset.updated = String(Number(node.dataset.updated || 0) + 1);
  }

  async function loadSent() {
    const r = await api("GET", "/api/leaks");
    const list = $("sent-list");
    const leaks = r.leaks || [];
    list.replaceChildren();
    for (const leak of leaks) {
      const li = el("li", "leak");
      const head = el("p", "leak-head", `To ${leak.recipient || "(address forgotten)"}`);
      const meta = [];
      if (leak.relationship) meta.push(`as ${relationLabel(leak.relationship)}`);
      if (leak.when) meta.push(localDay(leak.when));
      const words = el("p", "leak-words", leak.words || "");
      if (leak.good === true) words.classList.add("ok");
      if (leak.good === false) words.classList.add("bad");
      li.append(head);
      if (meta.length) li.append(el("p", "leak-meta", meta.join(", ")));
      li.append(words);
      list.append(li);
    }
    list.hidden = leaks.length === 0;
    $("sent-empty").hidden = leaks.length !== 0;
    bump(list);
  }

  // ---- Conversations ------------------------------------------------------------
  // Refreshed every 3 s while shown: each thread's article is updated in place
  // so that a follow-up being typed is never lost.

  const threadViews = new Map(); // label -> { article, display, reply, signature }
  let replyCount = 0;

  async function loadThreads() {
    const r = await api("GET", "/api/threads");
    const box = $("thread-list");
    const threads = r.threads || [];
    const seen = new Set();
    threads.forEach((t, i) => {
      seen.add(t.label);
      let tv = threadViews.get(t.label);
      if (!tv) {
        tv = makeThread(t.label);
        threadViews.set(t.label, tv);
      }
      const signature = JSON.stringify([t.recipient, t.relationship, t.exit, t.state, t.state_words, t.sent, t.answers]);
      if (signature !== tv.signature) {
        tv.signature = signature;
        fillThread(tv, t);
      }
      if (box.children[i] !== tv.article) box.insertBefore(tv.article, box.children[i] || null);
    });
    for (const [label, tv] of threadViews) {
      if (!seen.has(label)) {
        tv.article.remove();
        threadViews.delete(label);
      }
    }
    box.hidden = threads.length === 0;
    $("threads-empty").hidden = threads.length !== 0;
    bump(box);
  }

  function makeThread(label) {
    const article = el("article", "thread");
    article.dataset.label = label;
    const display = el("div", "thread-display");
    const n = ++replyCount;
    const form = el("form", "reply");
    form.noValidate = true;
    const textId = `reply-text-${n}`;
    const statusId = `reply-status-${n}`;
    const labelNode = el("label", null, "Your follow-up");
    labelNode.htmlFor = textId;
    const text = el("textarea", "reply-text");
    text.id = textId;
    text.rows = 4;
    text.setAttribute("autocomplete", "off");
    const actions = el("div", "actions");
    const button = el("button", "reply-send", "Send follow-up");
    button.type = "submit";
    const status = el("p", "reply-status");
    status.id = statusId;
    status.setAttribute("aria-live", "polite");
    actions.append(button, status);
    form.append(labelNode, text, actions);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      sendReply(label, text, status).catch(() => {});
    });
    text.addEventListener("input", () => clearInvalid(text));
    // Forgetting deletes the conversation from this computer (its address
    // and answers); the exit keeps nothing it could give back.
    const forget = el("button", "thread-forget", "Forget this conversation");
    forget.type = "button";
    forget.addEventListener("click", () => {
      forgetThread(label, forget).catch(() => {});
    });
    article.append(display, form, forget);
    return { article, display, reply: form, signature: null };
  }

  async function forgetThread(label, button) {
    if (locked || button.dataset.busy) return;
    const sure = window.confirm(
      "Forget this conversation? Its address and answers are deleted from this computer, and answers that come later are lost.",
    );
    if (!sure) return;
    button.dataset.busy = "1";
    try {
      await api("POST", `/api/threads/${encodeURIComponent(label)}/forget`, {});
      await loadThreads();
    } catch (e) {
      button.textContent = `Forget this conversation (${e.message})`;
    } finally {
      delete button.dataset.busy;
    }
  }

  function fillThread(tv, t) {
    const d = tv.display;
    d.replaceChildren();
    d.append(el("h3", null, `With ${t.recipient || "(address forgotten)"}`));
    const meta = [];
    if (t.relationship) meta.push(`You wrote as ${relationLabel(t.relationship)}`);
    const sent = Array.isArray(t.sent) ? t.sent : [];
    const days = [...new Set(sent)].map(localDay).join(", ");
    if (sent.length === 1) meta.push(`sent ${days}`);
    else if (sent.length > 1) meta.push(`${sent.length} messages sent (${days})`);
    if (t.state_words) meta.push(`conversation ${t.state_words}`);
    d.append(el("p", "thread-meta", meta.length ? `${meta.join("; ")}.` : ""));
    const answers = t.answers || [];
    if (!answers.length) d.append(el("p", "empty", "No answer yet."));
    answers.forEach((a, i) => {
      const how = a.via === "web" || a.via === "form" ? "through the answer page" : a.via === "email" ? "by email" : "";
      // `seq` is the exit's sequence number (it starts from a minute count):
      // people count from one.
      d.append(el("p", "answer-meta", `Answer ${i + 1}, ${localStamp(a.received)}${how ? `, ${how}` : ""}:`));
      d.append(el("blockquote", "answer", a.text || ""));
      if (a.dropped_attachments > 0) {
        const n = a.dropped_attachments;
        d.append(el("p", "hint", `${n} attachment${n === 1 ? " was" : "s were"} left out.`));
      }
    });
    tv.reply.hidden = t.state !== "open";
  }

  async function sendReply(label, text, status) {
    if (locked || status.dataset.busy) return;
    clearInvalid(text);
    status.textContent = "";
    setClass(status, ["ok", "bad", "refused"], null);
    status.dataset.busy = "1";
    status.textContent = "Handing it to your agent… this can take a few seconds.";
    try {
      const r = await api("POST", `/api/threads/${encodeURIComponent(label)}/reply`, { text: text.value, within_secs: null });
      text.value = "";
      status.textContent = `Your follow-up is handed to your agent. ${releaseWords(r.release_at_ms)}`;
      followReply(r.message_id, status);
    } catch (e) {
      status.textContent = e.message;
      status.classList.add("refused");
      if (e.field === "text") {
        markInvalid(text, status.id);
        text.focus();
      }
    } finally {
      delete status.dataset.busy;
    }
  }

  // A follow-up's progress, in its status line, until it is settled.
  function followReply(id, status) {
    const poll = async () => {
      if (locked || !status.isConnected) return;
      try {
        const leak = await api("GET", `/api/leaks/${encodeURIComponent(id)}`);
        if (settled(leak)) {
          showSettled(status, leak);
          return;
        }
        if (leak.words) status.textContent = leak.words;
      } catch (_) { /* shown by api(); try again */ }
      setTimeout(poll, LEAK_EVERY_MS);
    };
    setTimeout(poll, LEAK_EVERY_MS);
  }

  // ---- Start --------------------------------------------------------------------

  // `leak ui` again while this tab shows the page only changes the fragment,
  // which does not reload the page: take the new key and start afresh.
  function onHashChange() {
    const hash = location.hash.replace(/^#/, "");
    if (!hash || !new URLSearchParams(hash).get("token")) return;
    try {
      sessionStorage.setItem(TOKEN_KEY, new URLSearchParams(hash).get("token"));
      history.replaceState(null, "", "/");
    } catch (_) { /* the key stays in the fragment for the reload */ }
    location.reload();
  }

  function start() {
    window.addEventListener("hashchange", onHashChange);
    token = readToken();
    if (!token) {
      lock();
      return;
    }
    for (const v of VIEWS) $(`nav-${v}`).addEventListener("click", () => show(v, true));

    $("compose-form").addEventListener("submit", (ev) => {
      ev.preventDefault(); // form-action 'none': the page sends, not the form
      send();
    });
    const message = $("message");
    const onText = () => {
      updateBytes();
      scheduleCheck(CHECK_DELAY_MS);
    };
    message.addEventListener("input", onText);
    message.addEventListener("change", onText);
    // Editing a field the agent complained about clears the complaint.
    for (const f of composeFields()) {
      f.addEventListener("input", () => {
        if (clearInvalid(f)) $("compose-error").textContent = "";
      });
    }
    $("rel-choices").addEventListener("change", (ev) => {
      for (const r of $("rel-choices").querySelectorAll("input")) {
        if (clearInvalid(r)) $("compose-error").textContent = "";
      }
      if (ev.target.name === "relationship") updateRelationHint();
    });
    $("rules").addEventListener("toggle", () => {
      if ($("rules").open && (rulesVersion === null || rulesVersion !== policyVersion)) {
        loadRules().catch(() => {
          $("rules-body").replaceChildren(el("p", null, "The rules could not be loaded. Close and open this again to retry."));
        });
      }
    });

    updateBytes();
    updateRelationHint();
    every(STATE_EVERY_MS, loadState, () => true, (t) => { stateTimer = t; });
    show("compose", false);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
