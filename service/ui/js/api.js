// The v1 API as the page uses it: the same bearer header as any client, the key kept in
// sessionStorage (never in a URL), and Server-Sent Events read with fetch, since EventSource
// cannot send an Authorization header.

const KEY_ITEM = "sdpo.apiKey";

export class AuthError extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const apiKey = () => sessionStorage.getItem(KEY_ITEM);
export const setApiKey = (key) => sessionStorage.setItem(KEY_ITEM, key);
export const forgetApiKey = () => sessionStorage.removeItem(KEY_ITEM);

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    const fields = (body.fields || []).map((f) => `${f.field}: ${f.message}`).join("; ");
    return fields || body.message || response.statusText;
  } catch {
    return response.statusText;
  }
}

async function check(response) {
  if (response.status === 401) throw new AuthError(await errorMessage(response));
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response;
}

export async function get(path) {
  const response = await fetch(path, { headers: headers({ Accept: "application/json" }) });
  return (await check(response)).json();
}

export async function post(path, body = undefined) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ Accept: "application/json", "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return (await check(response)).json();
}

// Split a text/event-stream into events: {id, event, data}. Comment lines (pings) are skipped.
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { id: null, event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
        else if (field === "event") event.event = text;
      }
      if (event.data.length) yield { ...event, data: event.data.join("\n") };
    }
  }
}

// Follow a session's events until `end`, reconnecting with Last-Event-ID whenever the stream
// closes before it (the server closes long streams; networks drop them), so no event is missed
// or seen twice. Stops when `signal` aborts.
export async function follow(path, onEvent, { signal, onConnection = () => {} }) {
  let lastId = null;
  let connections = 0;
  let delayMs = 0;
  while (!signal.aborted) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId) extra["Last-Event-ID"] = lastId;
      const response = await check(await fetch(path, { headers: headers(extra), signal }));
      connections += 1;
      onConnection({ connected: true, lastId, connections });
      delayMs = 0; // a stream the server closed is resumed at once
      for await (const event of readEvents(response.body)) {
        if (event.id) lastId = event.id;
        onEvent(event);
        if (event.event === "end") return;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof AuthError || (error instanceof ApiError && error.status < 429)) {
        throw error;
      }
      delayMs = Math.min(Math.max(delayMs * 2, 500), 8000); // an error backs off
    }
    onConnection({ connected: false, lastId, connections });
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }
}
