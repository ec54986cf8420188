// The REST API as the dashboard calls it: the key (sessionStorage only, sent as Authorization:
// Bearer, as the API expects), JSON answers, errors with the API's own words.

const KEY_ITEM = "docq.apiKey";
const ROLE_ITEM = "docq.role";

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function setApiKey(key) {
  sessionStorage.removeItem(ROLE_ITEM);
  if (key === null || key === "") sessionStorage.removeItem(KEY_ITEM);
  else sessionStorage.setItem(KEY_ITEM, key);
}

/** "admin" or "user": what the key may see (GET /api/whoami), known once logged in; null before. */
export function keyRole() {
  return sessionStorage.getItem(ROLE_ITEM);
}

/** Learns the key's role; a refused key rejects with the API's 401. */
export async function loadKeyRole() {
  const who = await api("/api/whoami");
  sessionStorage.setItem(ROLE_ITEM, who.admin ? "admin" : "user");
  return keyRole();
}

/** Whether the API asks for a key, from the open GET /api/health; until it answered, assumed so. */
let authOn = true;
export function authRequired() {
  return authOn;
}

/** Reads GET /api/health once (open: no key, so no refused request before the login). */
export async function loadSite() {
  const res = await fetch("/api/health");
  const body = await res.json();
  authOn = body.auth !== false;
  return body;
}

function authHeaders() {
  const key = apiKey();
  return key === null ? {} : { authorization: `Bearer ${key}` };
}

/** An answer other than 2xx: `status`, and the API's `error` and `field`. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error ?? `the server answered ${status}`);
    this.status = status;
    this.field = body?.field ?? null;
  }
}

/** Listeners told when the API answers 401 (no key, or a revoked one): the app shows the login. */
const unauthorizedListeners = new Set();
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export async function api(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers ?? {}) } });
  const text = await res.text();
  let body = null;
  try {
    body = text === "" ? null : JSON.parse(text);
  } catch {
    body = { error: text };
  }
  if (res.status === 401) for (const listener of unauthorizedListeners) listener();
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

/** Downloads a document of the API (the key goes in a header, so not a plain link) under `filename`. */
export async function download(path, filename) {
  const res = await fetch(path, { headers: authHeaders() });
  if (!res.ok) {
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    throw new ApiError(res.status, body);
  }
  const url = URL.createObjectURL(await res.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A query string of the set values only. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined && value !== null && value !== "") q.set(name, String(value));
  const text = q.toString();
  return text === "" ? "" : `?${text}`;
}
