// Building the page without HTML strings: every value, above all the model's attempts and the
// verifier's feedback, goes in as a text node or an attribute value, never as markup.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export function link(route, text) {
  return el("a", { href: route }, text);
}

export const sessionRoute = (id) => `#/session/${encodeURIComponent(id)}`;
export const compareRoute = (id) => `#/compare/${encodeURIComponent(id)}`;

export function statusBadge(status) {
  return el("span", { class: `badge status-${status}`, "data-status": status }, status);
}

// "3 min ago" from an ISO time.
export function age(iso, now = Date.now()) {
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h ago`;
  return `${(seconds / 86400).toFixed(1)} d ago`;
}

export function fixed(value, digits = 2) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}
