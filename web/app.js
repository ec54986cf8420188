// The dashboard: a header with the pages, the page of the route, and the login when the API asks
// for a key.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { apiKey, authRequired, loadKeyRole, loadSite, onUnauthorized, setApiKey } from "./api.js";
import { html } from "./html.js";
import { restartEvents, useLiveState } from "./live.js";
import { OverviewPage } from "./pages/overview.js";
import { SubmitPage } from "./pages/submit.js";
import { TaskPage } from "./pages/task.js";
import { TasksPage } from "./pages/tasks.js";
import { navigate, useRoute } from "./router.js";

function LiveBadge() {
  const state = useLiveState();
  const words = { live: "live", polling: "polling", connecting: "connecting" };
  return html`<span class=${`live live-${state}`} data-testid="live-state" title="updates: the event stream, or polling while it is down"
    >${words[state]}</span
  >`;
}

function LoginPage({ onLogin, refused }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const login = async (e) => {
    e.preventDefault();
    setBusy(true);
    setApiKey(key.trim());
    try {
      // Who the key is: checks it, and tells the pages what it may see.
      await loadKeyRole();
      onLogin();
    } catch (err) {
      setApiKey(null);
      setError(err.status === 401 ? "Unknown or revoked key." : err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <section class="login" data-testid="login">
      <article>
        <header><strong>Log in with an API key</strong></header>
        ${refused ? html`<p class="muted">Authentication is on: the dashboard needs an API key.</p>` : null}
        <form onSubmit=${login}>
          <input
            type="password"
            name="key"
            autocomplete="off"
            placeholder="dq_… or the admin key"
            value=${key}
            onInput=${(e) => setKey(e.currentTarget.value)}
            aria-invalid=${error === null ? undefined : "true"}
            data-testid="key-input"
          />
          <small>Kept in this browser tab only (sessionStorage). The admin key sees everything; a user key sees its own tasks.</small>
          ${error === null ? null : html`<p class="error-text">${error}</p>`}
          <button type="submit" aria-busy=${busy} data-testid="login-button">Log in</button>
        </form>
      </article>
    </section>
  `;
}

function Page({ route }) {
  switch (route.page) {
    case "overview":
      return html`<${OverviewPage} />`;
    case "tasks":
      return html`<${TasksPage} params=${route.params} />`;
    case "task":
      return html`<${TaskPage} id=${route.id} />`;
    case "submit":
      return html`<${SubmitPage} />`;
    default:
      return html`<article class="notice">No such page. <a href="#/">Back to the overview</a>.</article>`;
  }
}

function App() {
  const route = useRoute();
  const [needsKey, setNeedsKey] = useState(false);
  const [session, setSession] = useState(0);
  // Nothing asks the API before its open health says whether a key is needed: no refused request.
  const [siteKnown, setSiteKnown] = useState(false);
  useEffect(() => onUnauthorized(() => setNeedsKey(true)), []);
  useEffect(() => {
    loadSite()
      .catch(() => null)
      .then(async () => {
        if (authRequired() && apiKey() === null) setNeedsKey(true);
        else {
          if (authRequired()) await loadKeyRole().catch(() => null);
          // The stream waited for this answer (it asks nothing without a key where one is needed).
          restartEvents();
        }
        setSiteKnown(true);
      });
  }, []);
  const loggedIn = apiKey() !== null;
  const logout = () => {
    setApiKey(null);
    setNeedsKey(true);
    restartEvents();
  };
  const onLogin = () => {
    setNeedsKey(false);
    setSession(session + 1);
    restartEvents();
    if (route.page === "login") navigate("#/");
  };
  const active = (page) => (route.page === page || (page === "tasks" && route.page === "task") ? "page" : undefined);
  return html`
    <header class="topbar">
      <nav class="container-fluid">
        <ul>
          <li>
            <a href="#/" class="brand"><strong>docq</strong></a>
          </li>
          <li><a href="#/" aria-current=${active("overview")} data-testid="nav-overview">Overview</a></li>
          <li><a href="#/tasks" aria-current=${active("tasks")} data-testid="nav-tasks">Tasks</a></li>
          <li><a href="#/submit" aria-current=${active("submit")} data-testid="nav-submit">Submit</a></li>
        </ul>
        <ul>
          <li><${LiveBadge} /></li>
          <li><a href="/api/docs" target="_blank" rel="noopener">API docs</a></li>
          ${loggedIn ? html`<li><button class="outline secondary small" onClick=${logout} data-testid="logout">Log out</button></li>` : null}
        </ul>
      </nav>
    </header>
    <main class="container-fluid" key=${session}>
      ${
        !siteKnown
          ? html`<p aria-busy="true">Connecting…</p>`
          : needsKey || route.page === "login"
            ? html`<${LoginPage} onLogin=${onLogin} refused=${needsKey && !loggedIn} />`
            : html`<${Page} route=${route} />`
      }
    </main>
  `;
}

render(html`<${App} />`, document.getElementById("app"));
