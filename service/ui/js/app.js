// The page's router: #/sessions, #/session/ID and #/compare/ID, each a view that draws itself
// into <main> and returns a function that stops its polling and streams. Every view reads the
// public v1 API with the caller's key, exactly as any other client.

import { AuthError, apiKey, forgetApiKey, setApiKey } from "./api.js";
import { compareRoute, el, replace } from "./dom.js";
import { compareView } from "./views/compare.js";
import { sessionView } from "./views/session.js";
import { sessionsView } from "./views/sessions.js";

const root = document.getElementById("view");
const notice = document.getElementById("notice");
const forgetButton = document.getElementById("forget-key");
let stopView = () => {};

function currentRoute() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const parts = (path || "").split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(search || "") };
}

function showNotice(message) {
  notice.textContent = message;
  notice.hidden = false;
}

function fail(error) {
  if (error instanceof AuthError) askForKey(error.message);
  else showNotice(error.message || String(error));
}

function askForKey(message) {
  stopView();
  stopView = () => {};
  const refused = apiKey() !== null;
  if (refused) forgetApiKey();
  forgetButton.hidden = true;
  const input = el("input", { type: "password", id: "api-key", autocomplete: "off", required: true });
  const form = el(
    "form",
    { id: "key-form" },
    el("label", {}, "API key ", input),
    " ",
    el("button", { type: "submit" }, "Use this key"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    render();
  });
  replace(
    root,
    el("h1", {}, "API key needed"),
    el(
      "p",
      { id: "auth-message", class: refused ? "error" : "" },
      refused
        ? `The server refused that API key (${message}). Check it and enter it again.`
        : "This server needs an API key. It stays in this tab (sessionStorage) and is sent " +
            "as the Authorization: Bearer header, never in a URL.",
    ),
    form,
  );
  input.focus();
}

function render() {
  stopView();
  notice.hidden = true;
  forgetButton.hidden = apiKey() === null;
  const { parts, query } = currentRoute();
  const context = { query, fail };
  if (parts[0] === "session" && parts[1]) {
    stopView = sessionView(root, { ...context, id: parts[1] });
  } else if (parts[0] === "compare" && parts[1]) {
    stopView = compareView(root, { ...context, id: parts[1] });
  } else {
    stopView = sessionsView(root, context);
  }
}

document.getElementById("goto-compare").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = new FormData(event.target).get("id").trim();
  if (id) location.hash = compareRoute(id);
});
forgetButton.addEventListener("click", () => {
  forgetApiKey();
  render();
});
window.addEventListener("hashchange", render);
render();
