// Tasks: the list with filters (status, job, user, name, parent), search by id, paging with the
// store's cursor (next, and back through the cursors already seen), live.
import { useCallback, useEffect, useState } from "preact/hooks";
import { api, query } from "../api.js";
import { ago, duration, STATUSES, StatusBadge } from "../format.js";
import { html } from "../html.js";
import { useLatestRequest } from "../latest.js";
import { useLiveReload } from "../live.js";
import { navigate } from "../router.js";

const PAGE_SIZE = 25;
const FILTERS = ["status", "job", "user", "name", "parentId"];

function Filters({ filters, jobs, onApply }) {
  const [draft, setDraft] = useState(filters);
  useEffect(() => setDraft(filters), [JSON.stringify(filters)]);
  const set = (name) => (e) => setDraft({ ...draft, [name]: e.currentTarget.value });
  const submit = (e) => {
    e.preventDefault();
    onApply(draft);
  };
  const clear = () => onApply({});
  return html`
    <form class="filters" onSubmit=${submit} data-testid="filters">
      <select name="status" value=${draft.status ?? ""} onChange=${set("status")} aria-label="status">
        <option value="">any status</option>
        ${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
      </select>
      <select name="job" value=${draft.job ?? ""} onChange=${set("job")} aria-label="job">
        <option value="">any job</option>
        ${jobs.map((j) => html`<option value=${j}>${j}</option>`)}
      </select>
      <input name="user" placeholder="user" value=${draft.user ?? ""} onInput=${set("user")} aria-label="user" />
      <input name="name" placeholder="name" value=${draft.name ?? ""} onInput=${set("name")} aria-label="name" />
      <input name="parentId" placeholder="parent id" value=${draft.parentId ?? ""} onInput=${set("parentId")} aria-label="parent id" />
      <button type="submit" data-testid="apply-filters">Filter</button>
      <button type="button" class="secondary outline" onClick=${clear}>Clear</button>
    </form>
  `;
}

function SearchById() {
  const [id, setId] = useState("");
  const [error, setError] = useState(null);
  const go = async (e) => {
    e.preventDefault();
    const wanted = id.trim();
    if (wanted === "") return;
    try {
      await api(`/api/tasks/${encodeURIComponent(wanted)}`);
      navigate(`#/task/${wanted}`);
    } catch (err) {
      setError(err.status === 404 ? `no task ${wanted}` : err.message);
    }
  };
  return html`
    <form role="search" class="search" onSubmit=${go} data-testid="search">
      <input
        type="search"
        placeholder="task id, e.g. local-01J…"
        value=${id}
        onInput=${(e) => setId(e.currentTarget.value)}
        aria-label="task id"
      />
      <button type="submit">Open</button>
    </form>
    ${error === null ? null : html`<small class="error-text">${error}</small>`}
  `;
}

function Progress({ task }) {
  if (task.childrenTotal > 0) {
    return html`<span title="parts done / total"
      ><progress value=${task.childrenCompleted} max=${task.childrenTotal}></progress> ${task.childrenCompleted}/${task.childrenTotal}</span
    >`;
  }
  if (task.status === "work" && task.progress !== null) return html`<progress value=${task.progress} max="1"></progress>`;
  return null;
}

export function TasksPage({ params }) {
  const filters = Object.fromEntries(FILTERS.filter((f) => params.get(f)).map((f) => [f, params.get(f)]));
  // ?limit= in the hash sets the page size (as the API's limit: 1..1000).
  const pageSize = Math.min(1000, Math.max(1, Number.parseInt(params.get("limit") ?? "", 10) || PAGE_SIZE));
  const key = JSON.stringify({ ...filters, pageSize });
  const [jobs, setJobs] = useState([]);
  /**
   * Paging of these filters: the cursors of the pages before this one (the first page's is null)
   * and this page's. Kept with the filters they belong to, so new filters start at their first
   * page in the same render (never a request pairing new filters with an old cursor).
   */
  const [paging, setPaging] = useState({ key, before: [], cursor: null });
  const { before: cursors, cursor } = paging.key === key ? paging : { before: [], cursor: null };
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const latest = useLatestRequest();

  useEffect(() => {
    api("/api/jobs")
      .then((answer) => setJobs(answer.jobs.filter((j) => !("error" in j)).map((j) => j.name)))
      .catch(() => setJobs([]));
  }, []);

  const load = useCallback(() => {
    latest(
      api(`/api/tasks${query({ ...filters, cursor, limit: pageSize })}`),
      (p) => {
        setPage(p);
        setError(null);
      },
      setError,
    );
  }, [key, cursor]);
  useEffect(load, [load]);
  useLiveReload(load);

  const apply = (next) =>
    navigate(
      `#/tasks${query({ ...Object.fromEntries(FILTERS.map((f) => [f, next[f]])), limit: pageSize === PAGE_SIZE ? null : pageSize })}`,
    );
  const nextPage = () => setPaging({ key, before: [...cursors, cursor], cursor: page.nextCursor });
  const prevPage = () => setPaging({ key, before: cursors.slice(0, -1), cursor: cursors.at(-1) ?? null });
  const now = Date.now();
  return html`
    <section data-testid="tasks">
      <div class="toolbar">
        <h2>Tasks</h2>
        <${SearchById} />
      </div>
      <${Filters} filters=${filters} jobs=${jobs} onApply=${apply} />
      ${error === null ? null : html`<article class="notice error-text" data-testid="tasks-error">${error.message}${error.field ? ` (${error.field})` : ""}</article>`}
      ${
        page === null
          ? html`<p aria-busy="true">Loading…</p>`
          : page.items.length === 0
            ? html`<p class="muted" data-testid="no-tasks">No task matches.</p>`
            : html`
                <div class="table-wrap">
                  <table class="striped tasks-table" data-testid="task-table">
                    <thead>
                      <tr>
                        <th>status</th>
                        <th>name</th>
                        <th>job</th>
                        <th>user</th>
                        <th>priority</th>
                        <th>submitted</th>
                        <th>duration</th>
                        <th>tries</th>
                        <th>progress</th>
                        <th>id</th>
                      </tr>
                    </thead>
                    <tbody>
                      ${page.items.map(
                        (t) => html`
                          <tr
                            class="row-link"
                            data-testid="task-row"
                            data-id=${t.id}
                            data-status=${t.status}
                            onClick=${() => navigate(`#/task/${t.id}`)}
                          >
                            <td><${StatusBadge} status=${t.status} /></td>
                            <td>
                              <a href=${`#/task/${t.id}`} onClick=${(e) => e.stopPropagation()}>${t.name || "(no name)"}</a
                              >${t.depth > 0 ? html` <small class="muted">part</small>` : null}
                            </td>
                            <td>${t.job}</td>
                            <td>${t.user}</td>
                            <td>${t.priority}</td>
                            <td title=${new Date(t.submitTime).toISOString()}>${ago(t.submitTime, now)}</td>
                            <td>${duration(t.duration)}</td>
                            <td>${t.tries}/${t.maxTries}</td>
                            <td><${Progress} task=${t} /></td>
                            <td><code class="id">${t.id}</code></td>
                          </tr>
                        `,
                      )}
                    </tbody>
                  </table>
                </div>
              `
      }
      <div class="pager">
        <button class="secondary outline" disabled=${cursors.length === 0} onClick=${prevPage} data-testid="prev-page">← Newer</button>
        <span class="muted">page ${cursors.length + 1}</span>
        <button class="secondary outline" disabled=${page === null || page.nextCursor === null} onClick=${nextPage} data-testid="next-page">
          Older →
        </button>
      </div>
    </section>
  `;
}
