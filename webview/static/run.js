// The run page: facts, per-round charts per hospital, privacy, timings, summary and model files.
// Polls /api/runs/KEY every 3 s while the run is live (charts at most every 10 s); redraws only what changed.
"use strict";

const KEY = decodeURIComponent(location.pathname.split("/").pop());
const PLOT_CONFIG = {displaylogo: false, responsive: true};
const PHASES = ["statistics", "train", "evaluate", "baselines"];
const KNOWN_COLUMNS = ["train-rows", "test-rows", "accuracy", "auc", "loss", "majority-accuracy",
  "local-accuracy", "local-auc"];

const drawn = new Map();  // chart id -> the traces last drawn: an unchanged chart is not redrawn

function plot(id, traces, chartLayout, config) {
  const key = typeof id === "string" ? id : id.id, text = JSON.stringify(traces);
  if (drawn.get(key) === text) return;
  drawn.set(key, text);
  Plotly.react(id, traces, chartLayout, config);
}

let DTICK = 1;  // whole rounds on the x axes, at most ~15 ticks

function layout(title, ytitle, extra = {}) {
  return {title: {text: title, font: {size: 14}}, margin: {l: 55, r: 15, t: 40, b: 90},
    xaxis: {title: {text: "round", standoff: 4}, tickformat: "d", dtick: DTICK}, yaxis: {title: {text: ytitle}},
    legend: {orientation: "h", y: -0.28}, uirevision: "keep", ...extra};
}

function perHospital(data, phase, column, suffix = "") {
  return data.hospitals.map((h) => {
    const rows = data.metrics.filter((r) => r.phase === phase && r.hospital === h && r[column] !== undefined &&
      r[column] !== null).sort((a, b) => a.round - b.round);
    return {x: rows.map((r) => r.round), y: rows.map((r) => r[column]), name: h + suffix, mode: "lines+markers",
      type: "scatter", line: {color: data.colours[h]}, marker: {color: data.colours[h]}};
  });
}

function federation(data, column, label) {
  const rows = data.metrics.filter((r) => r.phase === "federation" && r[column] !== undefined && r[column] !== null)
    .sort((a, b) => a.round - b.round);
  return {x: rows.map((r) => r.round), y: rows.map((r) => r[column]), name: label, mode: "lines+markers",
    type: "scatter", line: {color: data.colours.all || "#000", dash: "dash"}, marker: {symbol: "square"}};
}

function latestTimings(data) {
  const last = new Map();
  for (const row of data.timings || []) last.set(`${row.round}|${row.phase}|${row.hospital}`, row);
  return [...last.values()];
}

function timingCharts(data) {
  const rows = latestTimings(data);
  document.getElementById("timing-note").hidden = rows.length > 0;
  document.getElementById("chart-time-phases").hidden = rows.length === 0;
  const byRound = [];
  for (const [phase, dash] of [["train", "solid"], ["evaluate", "dot"]]) {
    for (const h of data.hospitals) {
      const mine = rows.filter((r) => r.phase === phase && r.hospital === h && r.seconds !== null)
        .sort((a, b) => a.round - b.round);
      if (mine.length) byRound.push({x: mine.map((r) => r.round), y: mine.map((r) => r.seconds),
        name: `${h} ${phase}`, mode: "lines+markers", line: {color: data.colours[h], dash}});
    }
  }
  byRound.push(federation(data, "seconds", "whole round (server)"));
  const phases = PHASES.filter((p) => rows.some((r) => r.phase === p));
  const bars = [...data.hospitals, "all"].map((h) => ({type: "bar", name: h === "all" ? "whole phase (server)" : h,
    x: phases, marker: {color: data.colours[h] || "#000"},
    y: phases.map((p) => rows.filter((r) => r.phase === p && r.hospital === h)
      .reduce((sum, r) => sum + (r.seconds || 0), 0))}));
  plot("chart-time-rounds", byRound, layout("Seconds per round until each reply", "seconds"), PLOT_CONFIG);
  plot("chart-time-phases", bars, layout("Seconds per phase (all rounds)", "seconds",
    {xaxis: {title: {text: "phase"}}, barmode: "group"}), PLOT_CONFIG);
}

function privacyChart(data) {
  const note = document.getElementById("privacy-note"), box = document.getElementById("chart-epsilon");
  if (!data.privacy || data.privacy === "none") {
    note.textContent = `privacy=${data.privacy ?? "n/a"}: no differential privacy, no ε spent.`;
    box.hidden = true;
    return;
  }
  const traces = perHospital(data, "train", "epsilon").filter((t) => t.x.length);
  if (!traces.length) traces.push(federation(data, "epsilon", "server (hospital-level ε)"));
  const rounds = data.metrics.map((r) => r.round);
  if (data.budget !== null && data.budget !== undefined && rounds.length) {
    traces.push({x: [Math.min(...rounds), Math.max(...rounds)], y: [data.budget, data.budget], mode: "lines",
      name: `budget ε = ${data.budget}`, line: {color: "#b00020", dash: "dash"}});
  }
  note.textContent = `privacy=${data.privacy}: ε spent so far against the budget ` +
    `(${data.budget ?? "no cap"}${data.delta ? `, δ ${data.delta}` : ""}).`;
  box.hidden = false;
  plot(box, traces, layout("Privacy spent (ε, cumulative)", "ε"), PLOT_CONFIG);
}

function table(headers, rows) {
  return fh.el("table", {}, [fh.el("thead", {}, fh.el("tr", {}, headers.map((h) => fh.el("th", {text: h})))),
    fh.el("tbody", {}, rows.map((cells) => fh.el("tr", {}, cells.map((c, i) =>
      fh.el("td", {class: i && typeof c === "number" ? "num" : "", text: i ? fh.num(c) : c})))))]);
}

function scalar(v) { return v === null || typeof v !== "object"; }

function generic(title, value) {
  // A dict of dicts as a matrix, a dict of scalars as a two-column table.
  const entries = Object.entries(value || {}).filter(([, v]) => scalar(v) || Object.keys(v).length);
  if (!entries.length) return null;
  const nested = entries.filter(([, v]) => !scalar(v) && !Array.isArray(v));
  const flat = entries.filter(([, v]) => scalar(v));
  const parts = [fh.el("h3", {text: title})];
  if (flat.length) parts.push(table(["", ""], flat));
  if (nested.length) {
    const cols = [...new Set(nested.flatMap(([, v]) => Object.keys(v)))];
    parts.push(table(["", ...cols], nested.map(([k, v]) => [k, ...cols.map((c) => scalar(v[c]) ? v[c] :
      JSON.stringify(v[c]))])));
  }
  return fh.el("div", {class: `summary-${title.replace(/\W+/g, "-")}`}, parts);
}

function summary(data) {
  const s = data.summary, box = document.getElementById("summary");
  if (!s) return;
  const hospitals = s.hospitals || {};
  const names = [...data.hospitals.filter((h) => h in hospitals), ...Object.keys(hospitals)
    .filter((h) => !data.hospitals.includes(h))];
  const extra = [...new Set(names.flatMap((h) => Object.keys(hospitals[h])))].filter((c) =>
    !KNOWN_COLUMNS.includes(c) && names.every((h) => scalar(hospitals[h][c])));
  const cols = [...KNOWN_COLUMNS, ...extra];
  const fed = s.federation || {}, means = s.means || {};
  const rows = names.map((h) => [h, ...cols.map((c) => hospitals[h][c])]);
  rows.push(["mean over hospitals", ...cols.map((c) => means[c] ?? "")]);
  rows.push(["pooled test set", ...cols.map((c) => ({"test-rows": fed["num-examples"], auc: fed["pooled-auc"],
    loss: fed.loss})[c] ?? "")]);
  const main = table(["hospital", ...cols], rows);
  main.id = "summary-table";
  const parts = [fh.el("p", {class: "muted", text: "Global model on each hospital's test rows, beside the " +
    "majority-class and local-only baselines."}), fh.el("div", {class: "wide"}, main)];
  const facts = Object.entries(s).filter(([, v]) => scalar(v));
  if (facts.length) parts.push(generic("run", Object.fromEntries(facts)));
  for (const [k, v] of Object.entries(s)) {
    if (!["hospitals", "means", "federation"].includes(k) && !scalar(v) && !Array.isArray(v)) parts.push(generic(k, v));
  }
  box.replaceChildren(...parts.filter(Boolean));
}

function downloads(data) {
  const list = document.getElementById("downloads");
  if (!data.downloads.length) return;
  list.replaceChildren(...data.downloads.map((f) => fh.el("li", {}, [fh.el("a", {
    href: `/files/${encodeURIComponent(data.folder)}/${encodeURIComponent(f.name)}`, download: f.name,
    text: f.name}), ` (${f.bytes} bytes)`])));
}

function facts(data) {
  const flower = data.flower || {};
  const status = flower.status || (data.summary ? "folder only: finished" : "folder only: not on this SuperLink");
  const set = (id, text) => { document.getElementById(id).textContent = text ?? ""; };
  document.title = `fedheart run ${data.folder || KEY}`;
  set("run-name", data.folder || KEY);
  set("status", status);
  document.getElementById("status").className = fh.statusClass(status);
  set("rounds", data.rounds_planned === null || data.rounds_planned === undefined ? "" :
    `${data.rounds_done ?? 0} / ${data.rounds_planned}`);
  set("run-id", flower.run_id || (data.run_ids || []).join(", "));
  for (const k of ["strategy", "privacy", "aggregation", "model"]) set(k, data[k]);
  set("started", flower.running_at || flower.pending_at || data.started);
  set("duration", fh.duration(flower.elapsed ?? data.seconds));
  const reason = String(flower.status || "").endsWith(":failed") ? flower.details : data.stopped_reason;
  document.getElementById("reason-row").hidden = !reason;
  set("reason", reason);
}

function draw(data, charts) {
  facts(data);
  DTICK = Math.max(1, Math.ceil((data.rounds_planned || 1) / 15));
  if (data.metrics && charts) {
    plot("chart-auc", [...perHospital(data, "evaluate", "auc"), federation(data, "pooled-auc",
      "pooled test set")], layout("Test ROC AUC of the global model", "AUC"), PLOT_CONFIG);
    plot("chart-accuracy", [...perHospital(data, "evaluate", "accuracy"), federation(data, "mean-accuracy",
      "mean over hospitals")], layout("Test accuracy of the global model", "accuracy"), PLOT_CONFIG);
    plot("chart-loss", [...perHospital(data, "evaluate", "loss"), federation(data, "loss",
      "all (example-weighted)")], layout("Test loss of the global model", "loss"), PLOT_CONFIG);
    plot("chart-train-loss", [...perHospital(data, "train", "train-loss"), federation(data, "train-loss",
      "mean over hospitals")], layout("Training loss (local, per round)", "loss"), PLOT_CONFIG);
    timingCharts(data);
  }
  if (charts) privacyChart(data);
  summary(data);
  downloads(data);
}

document.addEventListener("DOMContentLoaded", () => {
  // Numbers every poll; charts at most every CHARTS_MS while the run is live (a browser redrawing
  // Plotly charts costs CPU the run's machine may need), and once more when it has finished.
  const CHARTS_MS = 10000;
  let last = null, settled = false, chartsAt = 0, chartsOf = null;
  fh.poll(async () => {
    const {text, data} = await fh.json(`/api/runs/${encodeURIComponent(KEY)}`);
    const charts = chartsOf !== text && (!data.live || Date.now() - chartsAt >= CHARTS_MS);
    if (text !== last || charts) {
      draw(data, charts);
      last = text;
      if (charts) { chartsAt = Date.now(); chartsOf = text; }
    }
    document.body.dataset.live = String(data.live);
    if (!data.live) { if (settled) return false; settled = true; }
    return true;
  }, 3000, document.getElementById("run-error"));
});
