// The dashboard's few scripts: the token box, the action buttons, and the overview's live charts.
// Data comes aggregated from the server (/ui/data/...); nothing here sums or averages the logs.
"use strict";

const TOKEN_KEY = "ratchet-token";

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function setupTokenBox() {
  const input = document.getElementById("token");
  if (!input) return;
  input.value = token();
  input.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, input.value.trim()));
}

// A button with data-action POSTs there, with the token typed in the token box as its bearer token.
function setupActions() {
  for (const button of document.querySelectorAll("button.action")) {
    button.addEventListener("click", async () => {
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      const result = button.parentElement.querySelector(".result");
      const headers = token() ? { Authorization: "Bearer " + token() } : {};
      result.className = "result"; result.textContent = "…";
      let response, body;
      try {
        response = await fetch(button.dataset.action, { method: "POST", headers });
        body = await response.json();
      } catch (err) {
        result.className = "result bad"; result.textContent = "no answer: " + err; return;
      }
      if (!response.ok) {
        result.className = "result bad";
        result.textContent = `${response.status}: ${body.detail}` + (body.fix ? ` Fix: ${body.fix}` : "");
        return;
      }
      result.className = "result ok";
      result.textContent = body.version ? `made ${body.version}` : `job is now ${body.state}`;
      if (button.dataset.reload) setTimeout(() => window.location.reload(), 800);
    });
  }
}

// --- the overview -------------------------------------------------------------------------------------

const MAX_MARKERS = 2000;  // as views.MARKERS: the newest versions drawn
const COLORS = { patch: "#8a93a6", minor: "#c26a00", major: "#b3261e", rollback: "#7a3fb0", wake: "#b3261e" };

function markerColor(v) {
  if (v.kind === "rollback") return COLORS.rollback;
  return v.bump === "major" ? COLORS.major : v.bump === "minor" ? COLORS.minor : COLORS.patch;
}

// Vertical lines for the versions and the wake-ups: drawn by uPlot after each redraw.
function markersPlugin(current) {
  return {
    hooks: {
      draw: [(u) => {
        const { ctx } = u, { top, height } = u.bbox, data = current();
        ctx.save();
        for (const v of data.versions) {
          const x = Math.round(u.valToPos(v.t, "x", true));
          ctx.strokeStyle = markerColor(v);
          ctx.lineWidth = (v.bump === "patch" || !v.bump) ? 1 : 2.5;
          ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
        }
        ctx.setLineDash([4, 4]); ctx.strokeStyle = COLORS.wake; ctx.lineWidth = 1.5;
        for (const w of data.wakeups) {
          const x = Math.round(u.valToPos(w.t, "x", true));
          ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
}

// A click on a chart opens the conversations active in the clicked bucket (the server lists them).
function bucketLinks(current) {
  return {
    hooks: {
      ready: [(u) => {
        u.over.style.cursor = "pointer";
        u.over.title = "click: the conversations of this time bucket";
        let down = null;  // a drag (uPlot's selection) is not a click on a bucket
        u.over.addEventListener("mousedown", (e) => { down = [e.clientX, e.clientY]; });
        u.over.addEventListener("click", (e) => {
          const d = current();
          const moved = down && Math.hypot(e.clientX - down[0], e.clientY - down[1]) > 4;
          if (moved || !d || u.cursor.left == null || u.cursor.left < 0) return;
          const t = u.posToVal(u.cursor.left, "x");
          const start = d.start + Math.floor((t - d.start) / d.width) * d.width;
          window.location.href = `/ui/conversations?start=${start}&end=${start + d.width}`;
        });
      }],
    },
  };
}

function chartWidth(el) { return Math.max(el.clientWidth - 12, 300); }

// Every bucket from start to now, so an empty one is a gap in the line rather than a slope across it.
function buckets(d, rows) {
  const byT = new Map(rows.map((b) => [b.t, b]));
  const out = [];
  for (let t = d.start; t <= d.now; t += d.width) out.push([t + d.width / 2, byT.get(t) || null]);
  return out;
}

function rewardData(d) {
  const rows = buckets(d, d.reward);
  return [rows.map(([x]) => x), rows.map(([, b]) => (b ? b.mean : null)),
          rows.map(() => (d.slo ? d.slo.reward_rate_min : null))];
}

function callsData(d) {
  const rows = buckets(d, d.calls);
  return [rows.map(([x]) => x), rows.map(([, b]) => (b ? b.error_rate : null)),
          rows.map(() => (d.slo ? d.slo.error_rate_max : null)), rows.map(([, b]) => (b ? b.calls : 0))];
}

function text(id, value) { const el = document.getElementById(id); if (el) el.textContent = value; }

function when(t) { return new Date(t * 1000).toLocaleString(); }

function fillTables(d) {
  const latest = document.querySelector("#latest-versions tbody");
  latest.replaceChildren(...d.versions.slice(-10).reverse().map((v) => {
    const tr = document.createElement("tr");
    const a = document.createElement("a"); a.href = "/ui/versions/" + v.version; a.textContent = v.version;
    const cells = [a, v.kind || "", v.bump || "", when(v.t)];
    for (const c of cells) { const td = document.createElement("td"); td.append(c); tr.append(td); }
    return tr;
  }));
  const wakes = document.querySelector("#wakeups tbody");
  wakes.replaceChildren(...d.wakeups.slice(-10).reverse().map((w) => {
    const tr = document.createElement("tr");
    for (const c of [when(w.t), w.breaches.join(", ")]) { const td = document.createElement("td"); td.append(c); tr.append(td); }
    return tr;
  }));
}

function setupOverview() {
  const root = document.getElementById("overview");
  if (!root) return;
  const rewardEl = document.getElementById("reward-chart"), callsEl = document.getElementById("calls-chart");
  let current = null, reward = null, calls = null, updates = 0;
  const range = () => [current.start, current.now];

  function make(d) {
    const x = { time: true, range: () => range() };
    reward = new uPlot({
      width: chartWidth(rewardEl), height: 260, scales: { x, y: { range: [0, 1] } },
      series: [{}, { label: "reward (mean per bucket)", stroke: "#2457c5", width: 2, spanGaps: false, points: { show: true, size: 4 } },
               { label: "SLO: reward rate ≥", stroke: "#1d7a46", dash: [6, 4], width: 1.5, points: { show: false } }],
      axes: [{}, { label: "reward" }], plugins: [markersPlugin(() => current), bucketLinks(() => current)],
    }, rewardData(d), rewardEl);
    calls = new uPlot({
      width: chartWidth(callsEl), height: 200, scales: { x, y: { range: [0, 1] }, n: { auto: true } },
      series: [{}, { label: "error rate", stroke: "#b3261e", width: 2, points: { show: true, size: 4 } },
               { label: "SLO: error rate ≤", stroke: "#b3261e", dash: [6, 4], width: 1, points: { show: false } },
               { label: "calls", stroke: "#8a93a6", scale: "n", width: 1, points: { show: false } }],
      axes: [{}, { label: "error rate" }, { scale: "n", side: 1, label: "calls", grid: { show: false } }],
      plugins: [markersPlugin(() => current), bucketLinks(() => current)],
    }, callsData(d), callsEl);
  }

  // Versions and wake-ups come once: each answer holds those since the cursor of the one before.
  let cursor = null, versions = [], wakeups = [];
  function keep(d) {
    const inRange = (x) => x.t >= d.start;
    versions = versions.concat(d.versions).filter(inRange).slice(-MAX_MARKERS);
    wakeups = wakeups.concat(d.wakeups).filter(inRange);
    cursor = d.cursor;
    return { ...d, versions, wakeups };
  }

  function show(answer) {
    const d = keep(answer);
    current = d;
    if (!reward) make(d); else { reward.setData(rewardData(d)); calls.setData(callsData(d)); }
    updates += 1;
    rewardEl.dataset.updates = String(updates);
    rewardEl.dataset.versions = String(d.versions.length);
    text("active-version", d.active.version || "none");
    text("active-revision", d.active.state_revision);
    text("versions-total", String(d.versions_total));
    const last = d.reward.filter((b) => b.mean !== null).at(-1);
    text("reward-last", last ? last.mean.toFixed(3) : "no reward yet");
    text("reward-slo", d.slo ? `SLO: reward rate ≥ ${d.slo.reward_rate_min} over ${d.slo.window_seconds} s` : "no SLO (ci/budgets.json)");
    text("wakeups-total", String(d.wakeups.length));
    const shown = d.versions.length < d.versions_in_range ? ` (newest ${d.versions.length} of ${d.versions_in_range} versions drawn)` : "";
    text("bucket", `buckets of ${d.width} s${shown}`);
    const r = d.rollup;
    text("rollup-state", r && r.building ? `Summarising the logs: ${r.percent}% done. The charts show what is summarised` +
      (r.rolled_until ? ` (up to ${when(r.rolled_until)})` : "") + " and the last minutes; the rest follows." : "");
    rewardEl.dataset.building = r && r.building ? String(r.percent) : "";
    text("updated", "updated " + new Date().toLocaleTimeString());
    fillTables(d);
  }

  async function poll() {
    try {
      const url = "/ui/data/overview" + (cursor ? "?cursor=" + encodeURIComponent(cursor) : "");
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (response.ok) show(await response.json());
      else text("updated", `could not update: HTTP ${response.status}`);
    } catch (err) {
      text("updated", "could not update: " + err);
    }
    setTimeout(poll, Number(root.dataset.pollMs) || 2000);
  }
  window.addEventListener("resize", () => {
    if (reward) { reward.setSize({ width: chartWidth(rewardEl), height: 260 }); calls.setSize({ width: chartWidth(callsEl), height: 200 }); }
  });
  poll();
}

// The JSON at url; an answer that is not 2xx throws its detail.
async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail);
  return body;
}

// --- the strategies page: reward per choice and latency p95 over time (aggregated by the server) ---------

const PALETTE = ["#2457c5", "#c26a00", "#1d7a46", "#7a3fb0", "#b3261e", "#00838f", "#8a6d00", "#5d4037",
                 "#ad1457", "#455a64", "#6a8f00", "#3949ab"];

async function setupStrategyCharts() {
  const root = document.getElementById("strategy-charts");
  if (!root) return;
  let d;
  try {
    d = await getJSON(root.dataset.src);
  } catch (err) {
    text("latency-note", "could not read the series: " + err.message);
    root.dataset.loaded = "error";
    return;
  }
  const x = { time: true, range: () => [d.start, d.now] };
  const latencyEl = document.getElementById("latency-chart");
  const lat = buckets(d, d.latency.buckets);
  if (d.latency.buckets.length) {
    new uPlot({
      width: chartWidth(latencyEl), height: 180, scales: { x },
      series: [{}, { label: "latency p95 (ms)", stroke: "#2457c5", width: 2, points: { show: true, size: 4 } },
               { label: "SLO: p95 ≤", stroke: "#b3261e", dash: [6, 4], width: 1.5, points: { show: false } }],
      axes: [{}, { label: "ms" }],
    }, [lat.map(([t]) => t), lat.map(([, b]) => (b ? b.p95 : null)),
        lat.map(() => (d.slo ? d.slo.latency_p95_ms : null))], latencyEl);
  } else {
    latencyEl.textContent = "no call with a latency in this period";
  }
  if (d.latency.since > d.start) text("latency-note", `per time bucket, all calls, from ${when(d.latency.since)} (the newest calls only)`);
  for (const el of document.querySelectorAll(".strategy-chart")) {
    const key = el.dataset.strategy, s = d.strategies[key];
    if (!s || !s.choices.length) {
      el.textContent = "no reward joined to a named choice of this strategy in this period";
      el.dataset.choices = "0";
      continue;
    }
    const rows = buckets(d, s.buckets);
    const data = [rows.map(([t]) => t), rows.map(([, b]) => (b ? b.mean : null))];
    const lines = [{}, { label: "all choices", stroke: "#1d2330", width: 2.5, points: { show: false } }];
    s.choices.forEach((c, i) => {
      data.push(rows.map(([, b]) => (b && b.by[c] ? b.by[c].mean : null)));
      lines.push({ label: c, stroke: PALETTE[i % PALETTE.length], width: 1.5, points: { show: true, size: 4 } });
    });
    const values = data.slice(1).flat().filter((v) => v !== null);
    const unit = values.every((v) => v >= 0 && v <= 1);  // a bandit's rewards: keep the whole [0, 1] in view
    new uPlot({ width: chartWidth(el), height: 200, scales: { x, y: unit ? { range: [0, 1] } : { auto: true } }, series: lines,
                axes: [{}, { label: "mean reward" }] }, data, el);
    el.dataset.choices = String(s.choices.length);
    text("reward-note-" + key, `mean reward per bucket of ${d.width} s, by choice` + (s.since > d.start ? `, from ${when(s.since)}` : ""));
  }
  root.dataset.loaded = "yes";
}

// --- a version's tool-schema diff, read after the page (the first read of a version's schemas is slow) ---

function item(textContent, bad) {
  const li = document.createElement("li");
  li.textContent = textContent;
  if (bad) li.className = "bad";
  return li;
}

async function setupToolsDiff() {
  const root = document.getElementById("tools-diff");
  if (!root) return;
  let body;
  try {
    body = await getJSON(root.dataset.src);
  } catch (err) {
    root.replaceChildren(item("could not read the tool schemas: " + err.message, true));
    root.dataset.loaded = "error";
    return;
  }
  const list = document.createElement("ul");
  if (body.tools) {
    for (const [server, d] of Object.entries(body.tools.servers)) {
      for (const t of d.added) list.append(item(`${server}: added ${t}`));
      for (const t of d.removed) list.append(item(`${server}: removed ${t}`, true));
      for (const [t, c] of Object.entries(d.changed)) {
        const parts = [];
        if (c.required_added.length) parts.push("newly required " + c.required_added.join(", "));
        if (c.arguments_added.length) parts.push("added " + c.arguments_added.join(", "));
        if (c.arguments_removed.length) parts.push("removed " + c.arguments_removed.join(", "));
        for (const n of c.narrowed) parts.push(`${n.argument}: ${n.change}`);
        list.append(item(`${server}: ${t} changed` + (parts.length ? ": " + parts.join("; ") : ""), c.breaking));
      }
    }
    if (!list.children.length) list.append(item("no tool changed"));
    list.append(item(body.tools.breaking ? "a breaking change" : "no breaking change", body.tools.breaking));
  } else {
    list.append(item(body.tools_error || "no tool schemas to compare", Boolean(body.tools_error)));
  }
  root.replaceChildren(list);
  root.dataset.loaded = "yes";
}

document.addEventListener("DOMContentLoaded", () => {
  setupTokenBox(); setupActions(); setupOverview(); setupToolsDiff(); setupStrategyCharts();
});
