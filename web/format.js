// How values read on the dashboard.
import { html } from "./html.js";

export const STATUSES = ["input", "work", "wait", "complete", "output", "error", "canceled"];
export const FINAL = new Set(["output", "error", "canceled"]);

const STATUS_WORDS = {
  input: "queued",
  work: "running",
  wait: "waiting for parts",
  complete: "queued for merge",
  output: "done",
  error: "failed",
  canceled: "canceled",
};

export function StatusBadge({ status }) {
  return html`<span class=${`badge status-${status}`} title=${STATUS_WORDS[status] ?? status} data-status=${status}>${status}</span>`;
}

export function time(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

export function ago(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60_000);
  return `${m} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function short(id) {
  return id.length > 14 ? `…${id.slice(-10)}` : id;
}
