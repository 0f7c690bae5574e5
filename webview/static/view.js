// Shared helpers of the view's pages: JSON polling, DOM building (text only, never HTML), formats.
"use strict";

const fh = {
  async json(url) {
    const response = await fetch(url, {cache: "no-cache", headers: {Accept: "application/json"}});
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${await response.text()}`);
    return {text: await response.clone().text(), data: await response.json()};
  },
  el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "style") node.style.cssText = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of [].concat(children)) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  },
  swatch(colour) { return fh.el("span", {class: "swatch", style: `background:${colour}`}); },
  num(value, digits = 3) {
    if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
    return typeof value === "number" ? value.toFixed(Number.isInteger(value) ? 0 : digits) : String(value);
  },
  duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.round(seconds);
    return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` :
      `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  },
  statusClass(status) {
    const last = String(status || "").split(":").pop();
    return `status-${last}`;
  },
  fill(tbody, rows) { tbody.replaceChildren(...rows); },
  // Call `step` now and every `ms` until it returns false; errors are shown in `errorBox`.
  poll(step, ms, errorBox) {
    const tick = async () => {
      let again = true;
      try {
        again = await step();
        if (errorBox) errorBox.hidden = true;
        document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
      } catch (error) {
        if (errorBox) { errorBox.textContent = String(error.message || error); errorBox.hidden = false; }
      }
      if (again !== false) setTimeout(tick, ms);
    };
    tick();
  },
};
