// Hash routing: #/ overview, #/tasks?filters, #/task/<id>, #/submit, #/login.
import { useEffect, useState } from "preact/hooks";

export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}

export function parseRoute(hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  const params = new URLSearchParams(search);
  const task = /^\/task\/([^/]+)$/.exec(path);
  if (task !== null) return { page: "task", id: decodeURIComponent(task[1]), params };
  const page = { "/": "overview", "/tasks": "tasks", "/submit": "submit", "/login": "login" }[path] ?? "notfound";
  return { page, params };
}

export function useRoute() {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}
