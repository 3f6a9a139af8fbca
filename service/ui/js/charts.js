// Charts: line charts through the vendored uPlot (a global from vendor/uPlot.iife.min.js), and
// the per-step phase breakdown as a small stacked-bar SVG of our own.

import { el } from "./dom.js";

export const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const SVG = "http://www.w3.org/2000/svg";

function width(container) {
  return Math.max(320, Math.min(container.clientWidth || 640, 900));
}

const DASHES = [[], [8, 4], [2, 3], [12, 3, 2, 3]];
const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

function short(value) {
  if (value === null || value === undefined) return "";
  return Math.abs(value) >= 100 ? value.toFixed(0) : String(Number(value.toPrecision(3)));
}

// series: [{label, values, scale, stepped?}] over the same whole-number x values; at most two
// scales (left and right axes). ranges: {scale: [min, max] or (u, min, max) => [min, max]}.
export function lineChart(container, title, xLabel, x, series, ranges = {}) {
  const scaleNames = [...new Set(series.map((s) => s.scale))];
  const scales = { x: { time: false } };
  for (const name of scaleNames) scales[name] = ranges[name] ? { range: ranges[name] } : {};
  const options = {
    title,
    width: width(container),
    height: 240,
    scales,
    axes: [
      { label: xLabel, incrs: WHOLE_STEPS },
      ...scaleNames.map((scale, i) => ({
        scale,
        label: scale,
        side: i === 0 ? 3 : 1,
        size: 64,
        grid: { show: i === 0 },
        values: (u, ticks) => ticks.map(short),
      })),
    ],
    series: [
      { label: xLabel },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        dash: DASHES[i % DASHES.length],
        width: 2,
        scale: s.scale,
        points: { show: x.length < 40 },
        value: (u, v) => short(v),
        paths: s.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
      })),
    ],
  };
  const plot = new uPlot(options, [x, ...series.map((s) => s.values)], container);
  container.dataset.series = String(series.length);
  return {
    update(newX, newSeries) {
      plot.setData([newX, ...newSeries.map((s) => s.values)]);
    },
    destroy: () => plot.destroy(),
  };
}

// rows: [{label, parts: {phase: seconds}}]; one stacked bar per row.
export function stackedBars(container, title, rows, phases) {
  const height = 200;
  const barArea = { left: 44, top: 24, right: 8, bottom: 24 };
  const total = Math.max(1e-9, ...rows.map((r) => phases.reduce((s, p) => s + (r.parts[p] || 0), 0)));
  const w = width(container);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${height}`);
  svg.setAttribute("width", w);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  const plotW = w - barArea.left - barArea.right;
  const plotH = height - barArea.top - barArea.bottom;
  const slot = plotW / Math.max(rows.length, 1);
  add("text", { x: barArea.left, y: 14, class: "chart-title" }, title);
  add("text", { x: 4, y: barArea.top + 10, class: "axis" }, `${total.toFixed(2)} s`);
  add("text", { x: 4, y: barArea.top + plotH, class: "axis" }, "0");
  rows.forEach((row, i) => {
    let y = barArea.top + plotH;
    phases.forEach((phase, j) => {
      const seconds = row.parts[phase] || 0;
      const h = (seconds / total) * plotH;
      y -= h;
      const rect = add("rect", {
        x: barArea.left + i * slot + slot * 0.15,
        y,
        width: Math.max(1, slot * 0.7),
        height: h,
        fill: COLORS[j % COLORS.length],
        "data-phase": phase,
      });
      const tip = document.createElementNS(SVG, "title");
      tip.textContent = `${row.label}: ${phase} ${seconds.toFixed(3)} s`;
      rect.append(tip);
    });
    if (rows.length <= 40 || i % Math.ceil(rows.length / 40) === 0) {
      add("text", { x: barArea.left + i * slot + slot / 2, y: height - 8, class: "axis tick" }, row.label);
    }
  });
  const legend = el(
    "div",
    { class: "legend" },
    phases.map((phase, j) =>
      el("span", { class: "legend-item" }, el("span", { class: `swatch swatch-${j}` }), phase),
    ),
  );
  container.replaceChildren(svg, legend);
}
