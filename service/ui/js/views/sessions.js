// Sessions: the caller's sessions, newest first, filterable by status, refreshed every few
// seconds.

import { get } from "../api.js";
import { age, compareRoute, el, link, replace, sessionRoute, statusBadge } from "../dom.js";

const STATUSES = ["queued", "running", "solved", "exhausted", "failed", "cancelled"];
const PAGE = 50;
const REFRESH_MS = 3000;

function row(item) {
  return el(
    "tr",
    { "data-session": item.id },
    el("td", {}, link(sessionRoute(item.id), item.id.slice(0, 12))),
    el("td", {}, statusBadge(item.status)),
    el("td", {}, item.strategy),
    el(
      "td",
      { class: "num" },
      `${item.attempts_used} / ${item.max_attempts}`,
      el("progress", { max: item.max_attempts, value: item.attempts_used }),
    ),
    el("td", { class: "num" }, item.first_success_attempt ?? "–"),
    el("td", {}, age(item.created_at)),
    el("td", {}, item.compare_id ? link(compareRoute(item.compare_id), "compare") : ""),
  );
}

export function sessionsView(root, { query, fail }) {
  const status = STATUSES.includes(query.get("status")) ? query.get("status") : "";
  const offset = Math.max(0, Number(query.get("offset")) || 0);
  const filter = el(
    "select",
    { id: "status-filter", "aria-label": "status" },
    el("option", { value: "" }, "any status"),
    STATUSES.map((s) => el("option", { value: s, selected: s === status }, s)),
  );
  filter.addEventListener("change", () => {
    location.hash = `#/sessions${filter.value ? `?status=${filter.value}` : ""}`;
  });
  const body = el("tbody");
  const pager = el("div", { class: "pager" });
  replace(
    root,
    el("h1", {}, "Sessions"),
    el("p", {}, "Filter: ", filter),
    el(
      "table",
      { class: "sessions" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["session", "status", "strategy", "attempts / budget", "first success", "age", ""].map(
            (h) => el("th", {}, h),
          ),
        ),
      ),
      body,
    ),
    pager,
  );

  const pageRoute = (at) => {
    const params = new URLSearchParams();
    if (status) params.set("status", status);
    if (at) params.set("offset", at);
    return `#/sessions${params.size ? `?${params}` : ""}`;
  };
  async function refresh() {
    const params = new URLSearchParams({ offset, limit: PAGE });
    if (status) params.set("status", status);
    const page = await get(`/v1/problems?${params}`);
    replace(
      body,
      page.items.length
        ? page.items.map(row)
        : el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No sessions yet.")),
    );
    replace(
      pager,
      offset > 0 ? link(pageRoute(Math.max(0, offset - PAGE)), "← newer") : "",
      ` ${page.total ? offset + 1 : 0}–${offset + page.items.length} of ${page.total} `,
      offset + PAGE < page.total ? link(pageRoute(offset + PAGE), "older →") : "",
    );
  }
  const poll = () => refresh().catch(fail);
  poll();
  const timer = setInterval(poll, REFRESH_MS);
  return () => clearInterval(timer);
}
