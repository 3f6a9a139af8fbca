// Compare: the strategies of one comparison side by side, their discovery curves on one
// chart, polled until every run has ended.

import { get } from "../api.js";
import { lineChart } from "../charts.js";
import { el, fixed, link, replace, sessionRoute, statusBadge } from "../dom.js";

const REFRESH_MS = 2000;

// The curves as uPlot wants them: one x axis (every k where some curve changes, and 0), and
// each strategy's discovery@k at those k (a step function: the last point at or before k).
export function discoverySeries(strategies, budget) {
  const ks = [0, budget, ...strategies.flatMap((s) => s.discovery.map((p) => p.k))];
  const x = [...new Set(ks)].sort((a, b) => a - b);
  const series = strategies.map((s) => ({
    label: s.strategy,
    stepped: true,
    scale: "discovery@k",
    values: x.map((k) => {
      const before = s.discovery.filter((p) => p.k <= k);
      return before.length ? before[before.length - 1].rate : 0;
    }),
  }));
  return { x, series };
}

function strategyRow(result) {
  return el(
    "tr",
    { "data-strategy": result.strategy },
    el("td", {}, result.strategy),
    el("td", { class: "num" }, `${fixed(result.solved_rate * 100, 0)}%`),
    el("td", { class: "num" }, fixed(result.mean_attempts_to_success, 1)),
    el("td", { class: "num" }, fixed(result.mean_seconds_to_success, 1)),
    el(
      "td",
      {},
      result.runs.map((run) =>
        el(
          "span",
          { class: "run" },
          link(sessionRoute(run.session_id), `seed ${run.seed}`),
          " ",
          statusBadge(run.status),
          run.first_success_attempt ? ` @${run.first_success_attempt}` : "",
        ),
      ),
    ),
  );
}

export function compareView(root, { id, fail }) {
  const path = `/v1/compare/${encodeURIComponent(id)}`;
  const summary = el("p", { id: "compare-summary" });
  const body = el("tbody");
  const chartBox = el("div", { id: "discovery", class: "chart" });
  let chart = null;
  let timer = null;
  replace(
    root,
    el("h1", {}, "Comparison ", el("code", {}, id)),
    summary,
    el(
      "table",
      { class: "compare" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["strategy", "solved", "mean attempts to 1st pass", "mean seconds to 1st pass", "runs"].map(
            (h) => el("th", {}, h),
          ),
        ),
      ),
      body,
    ),
    chartBox,
  );

  async function refresh() {
    const comparison = await get(path);
    const budget = comparison.budget.max_attempts;
    replace(
      summary,
      statusBadge(comparison.status),
      ` budget ${budget} attempts · seed ${comparison.seed} · ${comparison.repeats} run(s) per strategy`,
    );
    replace(body, comparison.strategies.map(strategyRow));
    const { x, series } = discoverySeries(comparison.strategies, budget);
    if (chart && chartBox.dataset.series === String(series.length)) chart.update(x, series);
    else {
      chart?.destroy();
      chartBox.replaceChildren();
      chart = lineChart(chartBox, "discovery@k", "attempts (k)", x, series, {
        "discovery@k": [0, 1],
      });
    }
    if (comparison.status !== "done") timer = setTimeout(poll, REFRESH_MS);
  }
  const poll = () => refresh().catch(fail);
  poll();
  return () => {
    clearTimeout(timer);
    chart?.destroy();
  };
}
