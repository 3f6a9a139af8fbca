// Session: one session, live over its event stream. Step events draw the curves and the phase
// bars and pull the step's attempts; status and end events refresh the header and solution.

import { follow, get, post } from "../api.js";
import { lineChart, stackedBars } from "../charts.js";
import { compareRoute, el, fixed, link, replace, statusBadge } from "../dom.js";
import { highlighted } from "../highlight.js";

const PHASES = ["generate", "judge", "teacher", "train", "sync", "wait"];  // wait: for a turn on the model
const TERMINAL = ["solved", "exhausted", "failed", "cancelled"];
const ATTEMPT_PAGE = 500;

function learningSeries(steps) {
  const metric = (name) => steps.map((s) => s.metrics[name] ?? null);
  return [
    { label: "loss", values: metric("loss"), scale: "loss" },
    { label: "mean divergence", values: metric("mean_divergence"), scale: "divergence" },
  ];
}

function passSeries(steps) {
  return [
    { label: "passes", values: steps.map((s) => s.pass_count), scale: "passes" },
    { label: "attempts", values: steps.map((s) => s.attempts), scale: "passes" },
  ];
}

const FROM_ZERO = { passes: (u, min, max) => [0, Math.max(1, max)] };

function attemptSeconds(attempt) {
  return attempt.tests.reduce((sum, t) => sum + t.time_s, 0);
}

function attemptRow(attempt, onOpen) {
  const tr = el(
    "tr",
    { class: `attempt ${attempt.passed ? "passed" : ""}`, "data-attempt": attempt.index },
    el("td", { class: "num" }, attempt.index),
    el("td", { class: "num" }, attempt.step),
    el("td", {}, el("span", { class: `verdict verdict-${attempt.verdict}` }, attempt.verdict)),
    el("td", { class: "num" }, attempt.tokens),
    el("td", { class: "num" }, `${attemptSeconds(attempt).toFixed(3)} s`),
  );
  tr.addEventListener("click", () => onOpen(attempt));
  return tr;
}

function attemptDetail(attempt) {
  const code = attempt.code
    ? highlighted(attempt.code)
    : el("pre", { class: "raw" }, attempt.elided ? "(not kept)" : attempt.text);
  return el(
    "section",
    { class: "attempt-detail", "data-attempt": attempt.index },
    el("h3", {}, `Attempt ${attempt.index} (step ${attempt.step}): ${attempt.verdict}`),
    el(
      "div",
      { class: "side-by-side" },
      el(
        "div",
        {},
        el("h4", {}, attempt.code ? "Code the sandbox ran" : "No code block found: the answer"),
        code,
      ),
      el(
        "div",
        {},
        el("h4", {}, "Feedback the teacher saw"),
        el("pre", { class: "feedback" }, attempt.feedback || "(none: the attempt passed)"),
      ),
    ),
    attempt.code
      ? el("details", {}, el("summary", {}, "The whole answer"), el("pre", { class: "raw" }, attempt.text))
      : "",
  );
}

export function sessionView(root, { id, fail }) {
  const path = `/v1/problems/${encodeURIComponent(id)}`;
  const abort = new AbortController();
  const steps = new Map(); // step index -> StepPublic
  const attempts = [];
  let problem = null;
  let learning = null;
  let passes = null;

  const header = el("div", { class: "session-header" });
  const live = el("span", { id: "live", class: "live" }, "connecting…");
  const stepCount = el("span", { id: "step-count", class: "muted" }, "0");
  const cancel = el("button", { id: "cancel", class: "danger" }, "Cancel");
  const solution = el("section", { id: "solution" });
  const curvesBox = el("div", { id: "curves", class: "chart" });
  const passesBox = el("div", { id: "passes", class: "chart" });
  const phasesBox = el("div", { id: "phases", class: "chart" });
  const attemptsBody = el("tbody");
  const detail = el("div", { id: "attempt-detail" });
  replace(
    root,
    el("h1", {}, "Session ", el("code", {}, id)),
    header,
    el("p", {}, live, " ", cancel),
    solution,
    el("h2", {}, "Steps ", stepCount),
    el("div", { class: "charts" }, curvesBox, passesBox),
    phasesBox,
    el("h2", {}, "Attempts"),
    el("p", { class: "muted" }, "Click an attempt to see its code and the feedback the teacher saw."),
    el(
      "table",
      { class: "attempts" },
      el("thead", {}, el("tr", {}, ["#", "step", "verdict", "tokens", "time"].map((h) => el("th", {}, h)))),
      attemptsBody,
    ),
    detail,
  );

  function drawHeader() {
    const p = problem;
    const budget = p.budget.max_attempts;
    replace(
      header,
      el(
        "p",
        {},
        statusBadge(p.status),
        ` ${p.strategy} · model ${p.model} · seed ${p.seed}`,
        p.resumed ? ` · resumed ${p.resumed}×` : "",
        p.compare_id ? [" · ", link(compareRoute(p.compare_id), "its comparison")] : "",
        p.cancel_requested && !TERMINAL.includes(p.status) ? " · cancel requested" : "",
      ),
      el(
        "div",
        { class: "budget" },
        el("progress", { id: "budget-bar", max: budget, value: p.attempts_used }),
        el("span", { id: "budget-text" }, ` ${p.attempts_used} / ${budget} attempts`),
        p.first_success_attempt
          ? ` · first success at attempt ${p.first_success_attempt} (${fixed(p.first_success_s, 1)} s)`
          : "",
      ),
      p.error ? el("p", { class: "error" }, `Error: ${p.error}`) : "",
    );
    cancel.disabled = TERMINAL.includes(p.status);
    if (p.solution) {
      replace(
        solution,
        el("h2", {}, `Solution (attempt ${p.solution.attempt})`),
        p.solution.code ? highlighted(p.solution.code) : el("pre", {}, p.solution.text),
      );
    }
  }

  function drawSteps() {
    const ordered = [...steps.values()].sort((a, b) => a.step - b.step);
    stepCount.textContent = String(ordered.length);
    curvesBox.dataset.steps = String(ordered.length);
    if (!ordered.length) return;
    const x = ordered.map((s) => s.step);
    if (learning) {
      learning.update(x, learningSeries(ordered));
      passes.update(x, passSeries(ordered));
    } else {
      const title = "Loss and teacher–student divergence";
      learning = lineChart(curvesBox, title, "step", x, learningSeries(ordered));
      passes = lineChart(passesBox, "Passes per step", "step", x, passSeries(ordered), FROM_ZERO);
    }
    const rows = ordered.map((s) => ({ label: String(s.step), parts: s.phase_s }));
    stackedBars(phasesBox, "Seconds per phase, per step", rows, PHASES);
  }

  async function fetchNewAttempts() {
    for (;;) {
      const page = await get(`${path}/attempts?offset=${attempts.length}&limit=${ATTEMPT_PAGE}`);
      for (const attempt of page.items) {
        if (attempt.index <= attempts.length) continue; // already shown
        attempts.push(attempt);
        attemptsBody.append(attemptRow(attempt, (a) => replace(detail, attemptDetail(a))));
      }
      if (!page.items.length || attempts.length >= page.total) return;
    }
  }

  // One fetch at a time: a step event and a status event arriving together must not both
  // append the same page.
  let loading = Promise.resolve();
  function loadAttempts() {
    loading = loading.then(fetchNewAttempts, fetchNewAttempts);
    return loading;
  }

  async function refresh() {
    problem = await get(path);
    for (const step of problem.steps) steps.set(step.step, step);
    drawHeader();
    drawSteps();
    await loadAttempts();
  }

  let received = 0;
  function onEvent(event) {
    live.dataset.events = String((received += 1));
    if (event.event === "step") {
      const step = JSON.parse(event.data);
      steps.set(step.step, step);
      if (problem) {
        problem.attempts_used = Math.max(problem.attempts_used, step.attempts_used);
        drawHeader();
      }
      drawSteps();
      loadAttempts().catch(fail);
    } else {
      refresh().catch(fail);
    }
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      problem = await post(`${path}/cancel`);
      drawHeader();
    } catch (error) {
      fail(error);
    }
  });

  refresh()
    .then(() =>
      follow(`${path}/events`, onEvent, {
        signal: abort.signal,
        onConnection: ({ connected, connections }) => {
          live.textContent = connected ? "live" : "reconnecting…";
          live.className = connected ? "live on" : "live off";
          live.dataset.connections = String(connections);
        },
      }),
    )
    .then(() => {
      if (!abort.signal.aborted) {
        live.textContent = "finished";
        live.className = "live done";
        return refresh();
      }
    })
    .catch(fail);
  return () => {
    abort.abort();
    learning?.destroy();
    passes?.destroy();
  };
}
