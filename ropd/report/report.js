// ropd inspect: the group list, its filters and paging, and one group's detail.
// Every piece of model text is inserted with textContent (or a text node), never parsed as HTML.
(function () {
  "use strict";
  var source = document.getElementById("ropd-groups");
  if (!source) { return; }
  var data = JSON.parse(source.textContent);
  var pageSize = parseInt(source.getAttribute("data-page-size"), 10) || 50;
  var rows = data.rows;
  var chunks = {};
  var waiting = {};
  var inline = document.getElementById("ropd-details");
  if (inline) { chunks[0] = JSON.parse(inline.textContent); }

  // Chunk files call this when they load (data/groups-NNNN.js).
  window.ropdReceive = function (number, records) {
    chunks[number] = records;
    (waiting[number] || []).forEach(function (done) { done(records); });
    delete waiting[number];
  };

  function withRecord(row, done) {
    var number = row.chunk;
    if (chunks[number]) { done(chunks[number][row.at]); return; }
    var first = !waiting[number];
    (waiting[number] = waiting[number] || []).push(function (records) { done(records[row.at]); });
    if (first) {
      var script = document.createElement("script");
      script.src = "data/groups-" + String(number).padStart(4, "0") + ".js";
      script.onerror = function () { showError("could not load " + script.src + " (is the data folder next to index.html?)"); };
      document.head.appendChild(script);
    }
  }

  // el("td", {class: "x"}, "text", child, ...): strings become text nodes.
  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "class") { node.className = attrs[name]; } else { node.setAttribute(name, attrs[name]); }
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) { continue; }
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) { return "–"; }
    return Number(value).toFixed(digits === undefined ? 3 : digits);
  }

  // --- state in the address: #step=2&q=text&disagree=1&failed=1&page=1&open=KEY ---------------------
  function readState() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    return {
      step: params.get("step") || "",
      q: params.get("q") || "",
      disagree: params.get("disagree") === "1",
      failed: params.get("failed") === "1",
      page: Math.max(1, parseInt(params.get("page"), 10) || 1),
      open: params.get("open") || ""
    };
  }

  function writeState(state) {
    var params = new URLSearchParams();
    if (state.step) { params.set("step", state.step); }
    if (state.q) { params.set("q", state.q); }
    if (state.disagree) { params.set("disagree", "1"); }
    if (state.failed) { params.set("failed", "1"); }
    if (state.page > 1) { params.set("page", String(state.page)); }
    if (state.open) { params.set("open", state.open); }
    var hash = params.toString();
    if (hash !== location.hash.replace(/^#/, "")) { location.hash = hash; } else { render(); }
  }

  function matches(row, state) {
    if (state.step && String(row.step) !== state.step) { return false; }
    if (state.disagree && !row.disagree) { return false; }
    if (state.failed && !row.failed) { return false; }
    if (state.q) {
      var needle = state.q.toLowerCase();
      if (row.pid.toLowerCase().indexOf(needle) < 0 && row.q.toLowerCase().indexOf(needle) < 0) { return false; }
    }
    return true;
  }

  // --- controls -----------------------------------------------------------------------------------
  var stepSelect = document.getElementById("f-step");
  data.steps.forEach(function (step) { stepSelect.appendChild(el("option", { value: String(step) }, "step " + step)); });
  var textInput = document.getElementById("f-text");
  var disagreeBox = document.getElementById("f-disagree");
  var failedBox = document.getElementById("f-failed");

  function fromControls(keepOpen) {
    var state = readState();
    state.step = stepSelect.value;
    state.q = textInput.value.trim();
    state.disagree = disagreeBox.checked;
    state.failed = failedBox.checked;
    state.page = 1;
    if (!keepOpen) { state.open = ""; }
    writeState(state);
  }
  stepSelect.addEventListener("change", function () { fromControls(false); });
  disagreeBox.addEventListener("change", function () { fromControls(false); });
  failedBox.addEventListener("change", function () { fromControls(false); });
  var typing = null;
  textInput.addEventListener("input", function () {
    clearTimeout(typing);
    typing = setTimeout(function () { fromControls(false); }, 250);
  });

  // --- the list -----------------------------------------------------------------------------------
  function flags(row) {
    var out = el("span", {});
    if (row.failed) { out.appendChild(el("span", { class: "flag failed", title: row.error }, "failed")); }
    else if (!row.spread) { out.appendChild(el("span", { class: "flag flat", title: "all rewards equal: no advantage" }, "no spread")); }
    if (row.disagree) { out.appendChild(el("span", { class: "flag disagree", title: "a wrong rollout scored at least as high as a right one" }, "disagrees")); }
    return out;
  }

  function render() {
    var state = readState();
    stepSelect.value = state.step;
    if (document.activeElement !== textInput) { textInput.value = state.q; }
    disagreeBox.checked = state.disagree;
    failedBox.checked = state.failed;
    var shown = rows.filter(function (row) { return matches(row, state); });
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    var page = Math.min(state.page, pages);
    document.getElementById("f-count").textContent = shown.length + " of " + rows.length + " groups";
    var body = document.getElementById("group-rows");
    body.textContent = "";
    shown.slice((page - 1) * pageSize, page * pageSize).forEach(function (row) {
      var reward = row.failed ? "no reward" : fmt(row.mean) + " [" + fmt(row.lo) + "–" + fmt(row.hi) + "]";
      var right = row.right === undefined ? "–" : row.right + "/" + row.n;
      var tr = el("tr", { "data-key": String(row.key), class: String(row.key) === state.open ? "selected" : "" },
        el("td", {}, String(row.step)), el("td", {}, el("code", {}, row.pid)), el("td", { class: "q" }, row.q),
        el("td", {}, String(row.n)), el("td", {}, reward), el("td", {}, right), el("td", {}, flags(row)));
      tr.addEventListener("click", function () {
        var next = readState();
        next.open = String(row.key) === next.open ? "" : String(row.key);
        writeState(next);
      });
      body.appendChild(tr);
    });
    renderPager(state, page, pages);
    renderDetail(state.open);
  }

  function renderPager(state, page, pages) {
    var pager = document.getElementById("pager");
    pager.textContent = "";
    if (pages <= 1) { return; }
    function go(target) {
      return function () { var next = readState(); next.page = target; writeState(next); };
    }
    var prev = el("button", { type: "button" }, "‹ previous");
    prev.disabled = page <= 1;
    prev.addEventListener("click", go(page - 1));
    var next = el("button", { type: "button" }, "next ›");
    next.disabled = page >= pages;
    next.addEventListener("click", go(page + 1));
    pager.appendChild(prev);
    pager.appendChild(el("span", { id: "page-label" }, " page " + page + " of " + pages + " "));
    pager.appendChild(next);
  }

  function showError(message) {
    var box = document.getElementById("group-detail");
    box.textContent = "";
    box.appendChild(el("p", { class: "error" }, message));
  }

  // --- one group ------------------------------------------------------------------------------------
  function renderDetail(key) {
    var box = document.getElementById("group-detail");
    box.textContent = "";
    if (!key) { return; }
    var row = rows[parseInt(key, 10)];
    if (!row) { return; }
    box.appendChild(el("p", { class: "hint" }, "loading…"));
    withRecord(row, function (record) {
      if (readState().open !== key) { return; }
      box.textContent = "";
      box.appendChild(detail(record));
    });
  }

  function textBlock(title, text, open) {
    var block = el("details", {}, el("summary", {}, title), el("pre", {}, text || ""));
    if (open) { block.open = true; }
    return block;
  }

  function detail(r) {
    var root = el("div", { class: "detail", id: "detail" });
    root.appendChild(el("h3", {}, "Step " + r.step + " · prompt ", el("code", {}, String(r.prompt_id))));
    if (r.error) { root.appendChild(el("p", { class: "error" }, "No reward for this group (" + (r.failed_phase || "failed") + "): " + r.error)); }
    root.appendChild(el("h4", {}, "Question"));
    root.appendChild(el("pre", { class: "question" }, r.question || ""));

    var teachers = r.teacher_answers || [];
    root.appendChild(el("h4", {}, "Teacher answers (" + teachers.length + ")"));
    teachers.forEach(function (text, i) {
      var label = "Teacher answer " + (i + 1);
      if (r.teacher_correct) { label += r.teacher_correct[i] ? " — right" : " — wrong"; }
      if (r.teacher_scores && r.teacher_scores.length === teachers.length) { label += " — rubric score " + fmt(r.teacher_scores[i]); }
      root.appendChild(textBlock(label, text, i === 0));
    });

    var criteria = r.rubric || [];
    root.appendChild(el("h4", {}, "Rubric (" + criteria.length + " criteria" + (r.rubric_reused ? ", reused from an earlier step" : "") + ")"));
    if (criteria.length) {
      var rubric = el("table", { class: "grid-table rubric" },
        el("thead", {}, el("tr", {}, el("th", {}, "id"), el("th", {}, "criterion"), el("th", {}, "points"), el("th", {}, "decided by"), el("th", {}, "target"))));
      var rb = el("tbody", {});
      criteria.forEach(function (c, j) {
        var by = (r.decided_by || [])[j] || (r.verdicts ? "judge" : "–");
        var dropped = (r.dropped_targets || {})[c.id];
        rb.appendChild(el("tr", {}, el("td", {}, el("code", {}, c.id)), el("td", {}, c.text), el("td", { class: "num" }, String(c.points)),
          el("td", {}, by === "judge" ? "judge" : by + " (code)"), el("td", {}, (c.target || "") + (dropped ? " (dropped: " + dropped + ")" : ""))));
      });
      rubric.appendChild(rb);
      root.appendChild(rubric);
      var facts = [];
      if (r.expected) { facts.push("evidence check: required result " + r.expected); }
      if (r.consensus) { facts.push("teacher consensus answer " + r.consensus); }
      if (facts.length) { root.appendChild(el("p", { class: "hint" }, facts.join(" · "))); }
    } else {
      root.appendChild(el("p", { class: "empty" }, "no rubric"));
    }

    var rollouts = r.rollouts || [];
    root.appendChild(el("h4", {}, "Verdicts (rollouts x criteria)"));
    var evidenceKeys = [];
    (r.evidence || []).forEach(function (e) { Object.keys(e || {}).forEach(function (k) { if (evidenceKeys.indexOf(k) < 0) { evidenceKeys.push(k); } }); });
    var head = el("tr", {}, el("th", {}, "rollout"), el("th", {}, "reward"), el("th", {}, "advantage"), el("th", {}, "right?"));
    criteria.forEach(function (c) { head.appendChild(el("th", { title: c.text }, c.id)); });
    evidenceKeys.forEach(function (k) { head.appendChild(el("th", {}, k)); });
    var matrix = el("table", { class: "grid-table matrix", id: "verdict-matrix" }, el("thead", {}, head));
    var mb = el("tbody", {});
    var rewards = r.rewards || [];
    var correct = r.correct;
    var rightRewards = correct ? rewards.filter(function (_, i) { return correct[i]; }) : [];
    var wrongRewards = correct ? rewards.filter(function (_, i) { return !correct[i]; }) : [];
    var minRight = Math.min.apply(null, rightRewards);
    var maxWrong = Math.max.apply(null, wrongRewards);
    rollouts.forEach(function (_, i) {
      var misranked = correct && rightRewards.length && wrongRewards.length &&
        ((!correct[i] && rewards[i] >= minRight) || (correct[i] && rewards[i] <= maxWrong));
      var tr = el("tr", { class: misranked ? "disagree" : "" }, el("td", {}, "#" + (i + 1)),
        el("td", { class: "num" }, rewards.length ? fmt(rewards[i]) : "–"),
        el("td", { class: "num" }, r.advantages ? fmt(r.advantages[i]) : "–"),
        el("td", { class: correct ? (correct[i] ? "right" : "wrong") : "" }, correct ? (correct[i] ? "right" : "wrong") : "–"));
      criteria.forEach(function (c, j) {
        var met = r.verdicts && r.verdicts[i] ? r.verdicts[i][j] : null;
        var judged = r.judge_verdicts && r.judge_verdicts[i] ? r.judge_verdicts[i][j] : undefined;
        var cls = met === null || met === undefined ? "" : (met ? "met" : "unmet");
        var title = c.id + ": " + (met ? "met" : "not met");
        if (judged !== undefined && met !== null && judged !== met) { cls += " overridden"; title += " (the judge said " + (judged ? "met" : "not met") + "; code decided)"; }
        tr.appendChild(el("td", { class: cls, title: title }, met === null || met === undefined ? "–" : (met ? "✓" : "✗")));
      });
      evidenceKeys.forEach(function (k) {
        var value = r.evidence && r.evidence[i] ? r.evidence[i][k] : undefined;
        tr.appendChild(el("td", { class: "evidence" }, value === undefined ? "" : (typeof value === "string" ? value : JSON.stringify(value))));
      });
      mb.appendChild(tr);
    });
    matrix.appendChild(mb);
    root.appendChild(matrix);
    root.appendChild(el("p", { class: "hint" }, "advantage = reward − group mean, before the trainer's scaling (0 for a group without spread). " +
      "Dashed cells: the code check overrode the judge. A purple edge marks a rollout whose reward disagrees with its correctness."));

    root.appendChild(el("h4", {}, "Rollouts"));
    rollouts.forEach(function (text, i) {
      var label = "Rollout #" + (i + 1);
      if (rewards.length) { label += " — reward " + fmt(rewards[i]); }
      if (correct) { label += correct[i] ? " — right" : " — wrong"; }
      root.appendChild(textBlock(label, text, rollouts.length <= 4));
    });
    return root;
  }

  window.addEventListener("hashchange", render);
  render();
})();
