// Task: the record, where it ran, its attempts with their errors, the tree of its parts, its
// documents, and Retry / Cancel / Delete (each confirmed first), live.
import { useCallback, useEffect, useState } from "preact/hooks";
import { api, download } from "../api.js";
import { ConfirmButton } from "../components/confirm.js";
import { duration, FINAL, StatusBadge, time } from "../format.js";
import { html } from "../html.js";
import { useLatestRequest } from "../latest.js";
import { useLiveReload } from "../live.js";
import { navigate } from "../router.js";

const CHILDREN_PAGE = 200;

function Field({ label, children }) {
  return html`<div class="field">
    <dt>${label}</dt>
    <dd>${children}</dd>
  </div>`;
}

function Attempts({ attempts }) {
  if (attempts.length === 0) return html`<p class="muted">No attempt yet.</p>`;
  return html`
    <table class="striped compact" data-testid="attempts">
      <thead>
        <tr>
          <th>#</th>
          <th>outcome</th>
          <th>site</th>
          <th>node</th>
          <th>started</th>
          <th>took</th>
          <th>error</th>
        </tr>
      </thead>
      <tbody>
        ${[...attempts].reverse().map(
          (a) =>
            html`<tr>
              <td>${a.n}</td>
              <td><span class=${`badge outcome-${a.outcome}`}>${a.outcome}</span></td>
              <td>${a.site ?? "—"}</td>
              <td><code>${a.node ?? "—"}</code></td>
              <td>${time(a.start)}</td>
              <td>${a.start === null ? "—" : duration(a.end - a.start)}</td>
              <td>
                ${
                  a.error === null
                    ? ""
                    : html`<details>
                        <summary>error</summary>
                        <pre class="error-text">${a.error}</pre>
                      </details>`
                }
              </td>
            </tr>`,
        )}
      </tbody>
    </table>
  `;
}

/** The parts of `parentId`, each opening its own parts on demand. */
function ChildTree({ parentId, reloadKey }) {
  const [children, setChildren] = useState(null);
  const [open, setOpen] = useState(new Set());
  const [error, setError] = useState(null);
  useEffect(() => {
    api(`/api/tasks?parentId=${encodeURIComponent(parentId)}&limit=${CHILDREN_PAGE}`)
      .then((page) => setChildren(page.items.slice().reverse()))
      .catch((err) => setError(err.message));
  }, [parentId, reloadKey]);
  if (error !== null) return html`<p class="error-text">${error}</p>`;
  if (children === null) return html`<p aria-busy="true">Loading parts…</p>`;
  const toggle = (id) => {
    const next = new Set(open);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setOpen(next);
  };
  return html`
    <ul class="tree" data-testid="children">
      ${children.map(
        (c, index) =>
          html`<li class=${c.status === "error" ? "failed" : ""}>
            ${
              c.childrenTotal > 0
                ? html`<button class="tree-toggle outline secondary" onClick=${() => toggle(c.id)} aria-expanded=${open.has(c.id)}>
                    ${open.has(c.id) ? "▾" : "▸"}
                  </button>`
                : html`<span class="tree-leaf">•</span>`
            }
            <${StatusBadge} status=${c.status} />
            <a href=${`#/task/${c.id}`}>part ${index + 1}</a>
            <small class="muted">${c.job} · <code class="id">${c.id}</code></small>
            ${c.childrenTotal > 0 ? html` <small>${c.childrenCompleted}/${c.childrenTotal}</small>` : null}
            ${c.status === "error" ? html` <small class="error-text">✗ ${c.error?.split("\n").at(-1) ?? "failed"}</small>` : null}
            ${open.has(c.id) ? html`<${ChildTree} parentId=${c.id} reloadKey=${reloadKey} />` : null}
          </li>`,
      )}
    </ul>
    ${children.length === CHILDREN_PAGE ? html`<p class="muted">The first ${CHILDREN_PAGE} parts; <a href=${`#/tasks?parentId=${parentId}`}>list them all</a>.</p>` : null}
  `;
}

function Actions({ task, onDone, onError }) {
  const act = (what) => async () => {
    try {
      await what();
      onDone();
    } catch (err) {
      onError(err);
    }
  };
  const final = FINAL.has(task.status);
  const retryable = task.status === "error" || task.status === "canceled";
  return html`
    <div class="actions">
      <${ConfirmButton}
        testId="retry"
        label="Retry"
        title="Retry this task?"
        question=${`Task ${task.id} goes back in the queue with a fresh try count; its attempts are kept.`}
        confirmLabel="Retry"
        kind=""
        disabled=${!retryable || task.depth > 0}
        onConfirm=${act(() => api(`/api/tasks/${task.id}/retry`, { method: "POST" }))}
      />
      <${ConfirmButton}
        testId="cancel"
        label="Cancel"
        title="Cancel this task?"
        question=${`Task ${task.id} stops (a running script is killed) and its documents are removed. This cannot be undone.`}
        confirmLabel="Cancel the task"
        kind="secondary"
        disabled=${final}
        onConfirm=${act(() => api(`/api/tasks/${task.id}`, { method: "DELETE" }))}
      />
      <${ConfirmButton}
        testId="delete"
        label="Delete"
        title="Delete this task?"
        question=${`The record of task ${task.id}, its parts and its documents are removed for good.`}
        confirmLabel="Delete"
        kind="danger"
        disabled=${!final}
        onConfirm=${act(async () => {
          await api(`/api/tasks/${task.id}`, { method: "DELETE" });
          navigate("#/tasks");
        })}
      />
    </div>
  `;
}

export function TaskPage({ id }) {
  const [task, setTask] = useState(null);
  const [error, setError] = useState(null);
  const [actionError, setActionError] = useState(null);
  const [reloadKey, setReloadKey] = useState(0);
  const latest = useLatestRequest();
  const load = useCallback(() => {
    latest(
      api(`/api/tasks/${encodeURIComponent(id)}`),
      (t) => {
        setTask(t);
        setError(null);
        setReloadKey((k) => k + 1);
      },
      setError,
    );
  }, [id]);
  useEffect(() => {
    setTask(null);
    load();
  }, [id]);
  useLiveReload(load, (event) => event.id === id || event.parentId === id);

  if (error !== null && (task === null || error.status === 404)) {
    return html`<article class="notice" data-testid="task-error">
      ${error.status === 404 ? `No task ${id} (or not yours).` : error.message}
    </article>`;
  }
  if (task === null) return html`<p aria-busy="true">Loading ${id}…</p>`;
  // Where it ran: the worker's word, else the last attempt's record; a running task, its lease holder.
  const place = task.processedBy ?? [...task.attempts].reverse().find((a) => a.site !== null || a.node !== null) ?? null;
  const runningOn = task.status === "work" && task.lease !== null ? task.lease.owner : null;
  const saveAs = (what) => `${(task.name || task.id).replace(/[\\/]/g, "_")}.${what}`;
  const get = (what) => () => download(`/api/tasks/${task.id}/${what}`, saveAs(what)).catch((err) => setActionError(err));
  return html`
    <section data-testid="task" data-status=${task.status}>
      <div class="toolbar">
        <hgroup>
          <h2>${task.name || "(no name)"} <${StatusBadge} status=${task.status} /></h2>
          <p><code data-testid="task-id">${task.id}</code></p>
        </hgroup>
        <${Actions} task=${task} onDone=${load} onError=${setActionError} />
      </div>
      ${actionError === null ? null : html`<article class="notice error-text" data-testid="action-error">${actionError.message}</article>`}
      ${
        task.error === null
          ? null
          : html`<article class="notice error-box" data-testid="task-error-text">
              <strong>Error</strong>
              <pre>${task.error}</pre>
            </article>`
      }
      <div class="grid two">
        <article>
          <header><strong>Record</strong></header>
          <dl class="record">
            <${Field} label="job">${task.job}<//>
            <${Field} label="user">${task.user}<//>
            <${Field} label="priority">${task.priority}<//>
            <${Field} label="tries">${task.tries} of ${task.maxTries}<//>
            <${Field} label="submitted">${time(task.submitTime)}<//>
            <${Field} label="started">${time(task.startTime)}<//>
            <${Field} label="ended">${time(task.endTime)}<//>
            <${Field} label="duration">${duration(task.duration)}<//>
            ${runningOn === null ? null : html`<${Field} label="running on"><code>${runningOn}</code><//>`}
            <${Field} label="ran at"
              >${place === null ? "—" : html`site <strong>${place.site ?? "?"}</strong>, node <code>${place.node ?? "?"}</code>`}<//
            >
            <${Field} label="origin site">${task.site}<//>
            ${task.parentId === null ? null : html`<${Field} label="parent"><a href=${`#/task/${task.parentId}`}>${task.parentId}</a><//>`}
            ${
              task.status === "work" && task.progress !== null
                ? html`<${Field} label="progress"><progress value=${task.progress} max="1"></progress> ${task.progressMessage ?? ""}<//>`
                : null
            }
            <${Field} label="params"><code>${JSON.stringify(task.params)}</code><//>
          </dl>
        </article>
        <article>
          <header><strong>Documents</strong></header>
          <div class="documents">
            <button class="outline" disabled=${task.input === null} onClick=${get("input")} data-testid="download-input">
              Download input
            </button>
            <button disabled=${task.status !== "output"} onClick=${get("result")} data-testid="download-output">Download output</button>
          </div>
          ${
            task.childrenTotal > 0
              ? html`
                  <header class="sub"><strong>Parts</strong> ${task.childrenCompleted} / ${task.childrenTotal} done</header>
                  <progress value=${task.childrenCompleted} max=${task.childrenTotal} data-testid="children-progress"></progress>
                  <${ChildTree} parentId=${task.id} reloadKey=${reloadKey} />
                `
              : null
          }
        </article>
      </div>
      <article>
        <header><strong>Attempts</strong></header>
        <${Attempts} attempts=${task.attempts} />
      </article>
    </section>
  `;
}
