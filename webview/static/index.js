// The index page: the federation's SuperNodes and the runs, refreshed every few seconds.
"use strict";

function nodeRows(data) {
  return data.nodes.map((n) => fh.el("tr", {"data-node": n.node_id}, [
    fh.el("td", {}, fh.swatch(data.colours[n.name] || "#ccc")), fh.el("td", {class: "hospital", text: n.name || "(unnamed)"}),
    fh.el("td", {text: n.node_id}), fh.el("td", {class: fh.statusClass(n.status), text: n.status}),
    fh.el("td", {class: "when", text: n.online_since || ""}), fh.el("td", {class: "when", text: n.last_seen || ""}),
    fh.el("td", {class: "when", text: n.registered_at || ""})]));
}

function runRows(runs) {
  return runs.map((r) => {
    const flower = r.flower || {};
    const status = flower.status || (r.finished ? "folder only: finished" : "folder only: not on this SuperLink");
    const failed = String(flower.status || "").endsWith(":failed");
    const rounds = r.rounds_planned === null || r.rounds_planned === undefined ? "" :
      `${r.rounds_done ?? 0} / ${r.rounds_planned}`;
    return fh.el("tr", {"data-key": r.key, "data-run-id": flower.run_id || ""}, [
      fh.el("td", {}, fh.el("a", {href: `/run/${encodeURIComponent(r.key)}`, text: r.folder || r.key})),
      fh.el("td", {text: flower.run_id || (r.run_ids || []).join(", ")}),
      fh.el("td", {class: `status ${fh.statusClass(status)}`, text: status}),
      fh.el("td", {text: r.strategy ?? ""}), fh.el("td", {text: r.privacy ?? ""}),
      fh.el("td", {text: r.aggregation ?? ""}), fh.el("td", {class: "rounds num", text: rounds}),
      fh.el("td", {class: "when", text: flower.running_at || flower.pending_at || r.started || ""}),
      fh.el("td", {class: "num", text: fh.duration(flower.elapsed ?? r.seconds)}),
      fh.el("td", {class: "reason", text: failed ? flower.details : (r.stopped_reason || "")})]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const nodes = document.querySelector("#nodes tbody"), seen = document.querySelector("#seen tbody");
  const runs = document.querySelector("#runs tbody");
  fh.poll(async () => {
    const {data} = await fh.json("/api/federation");
    document.getElementById("superlink").textContent = data.superlink;
    const error = document.getElementById("federation-error");
    error.hidden = data.flower_ok; error.textContent = data.flower_ok ? "" : `SuperLink: ${data.flower_error}`;
    fh.fill(nodes, data.nodes.length ? nodeRows(data) :
      [fh.el("tr", {}, fh.el("td", {colspan: 7, class: "muted", text: "The SuperLink knows no SuperNode."}))]);
    document.getElementById("seen-block").hidden = data.nodes.length > 0 || data.seen.length === 0;
    fh.fill(seen, data.seen.map((h) => fh.el("tr", {}, [fh.el("td", {}, fh.swatch(data.colours[h.hospital])),
      fh.el("td", {text: h.hospital}), fh.el("td", {text: h.node_id}), fh.el("td", {text: h.run})])));
  }, 5000, document.getElementById("federation-error"));
  fh.poll(async () => {
    const {data} = await fh.json("/api/runs");
    document.getElementById("runs-root").textContent = data.runs_root;
    const error = document.getElementById("runs-error");
    error.hidden = data.flower_ok; error.textContent = data.flower_ok ? "" : `SuperLink: ${data.flower_error}`;
    fh.fill(runs, data.runs.length ? runRows(data.runs) :
      [fh.el("tr", {}, fh.el("td", {colspan: 10, class: "muted", text: "No run yet."}))]);
  }, 5000, document.getElementById("runs-error"));
});
