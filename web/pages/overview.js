// Overview: tasks by status, queued by priority, finished and failed per minute, workers, sites.
import { useCallback, useEffect, useState } from "preact/hooks";
import { api, keyRole } from "../api.js";
import { BarChart } from "../components/chart.js";
import { ago, STATUSES, StatusBadge } from "../format.js";
import { html } from "../html.js";
import { useLatestRequest } from "../latest.js";
import { useLiveReload } from "../live.js";

const COLORS = { output: "#2e8540", error: "#c62828", canceled: "#8d8d8d", queued: "#1e6fd9" };

function StatusCards({ byStatus }) {
  return html`
    <div class="cards" data-testid="status-cards">
      ${STATUSES.map(
        (status) => html`
          <a class="card" href=${`#/tasks?status=${status}`} data-testid=${`count-${status}`}>
            <span class="card-value">${(byStatus[status] ?? 0).toLocaleString()}</span>
            <${StatusBadge} status=${status} />
          </a>
        `,
      )}
    </div>
  `;
}

function minuteLabel(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

function Workers({ workers, slots }) {
  if (workers.length === 0) return html`<p class="muted">No worker has reported in the last heartbeats.</p>`;
  return html`
    <p><strong>${slots.busy}</strong> of <strong>${slots.total}</strong> slots busy</p>
    <table class="striped compact" data-testid="workers">
      <thead>
        <tr>
          <th>worker</th>
          <th>slots busy / total</th>
          <th></th>
        </tr>
      </thead>
      <tbody>
        ${workers.map(
          (w) =>
            html`<tr>
              <td><code>${w.owner}</code></td>
              <td>${w.busy} / ${w.slots}</td>
              <td class="meter-cell"><progress value=${w.busy} max=${Math.max(1, w.slots)}></progress></td>
            </tr>`,
        )}
      </tbody>
    </table>
  `;
}

function Sites({ sites, now }) {
  if (sites.length === 0) return html`<p class="muted">No other site: stealing is off, or no site has been heard yet.</p>`;
  return html`
    <table class="striped compact" data-testid="sites">
      <thead>
        <tr>
          <th>site</th>
          <th>backlog</th>
          <th>top priority</th>
          <th>idle slots</th>
          <th>stolen in</th>
          <th>stolen out</th>
          <th>heard</th>
        </tr>
      </thead>
      <tbody>
        ${sites.map(
          (s) =>
            html`<tr>
              <td><strong>${s.site}</strong></td>
              <td>${s.backlog?.queued ?? "—"}</td>
              <td>${s.backlog?.highestPriority ?? "—"}</td>
              <td>${s.backlog?.idleSlots ?? "—"}</td>
              <td>${s.stolenIn}</td>
              <td>${s.stolenOut}</td>
              <td>${s.backlog === null ? "not heard" : ago(s.backlog.at, now)}</td>
            </tr>`,
        )}
      </tbody>
    </table>
  `;
}

/** The overview shows the whole site: a user key is told so without asking (the API would refuse it). */
export function OverviewPage() {
  if (keyRole() === "user") {
    return html`<article class="notice" data-testid="overview-error">
      The overview shows the whole site: it needs the admin key. Your key sees its own tasks under <a href="#/tasks">Tasks</a>.
    </article>`;
  }
  return html`<${SiteOverview} />`;
}

function SiteOverview() {
  const [overview, setOverview] = useState(null);
  const [error, setError] = useState(null);
  const latest = useLatestRequest();
  const load = useCallback(() => {
    latest(
      api("/api/overview"),
      (o) => {
        setOverview(o);
        setError(null);
      },
      setError,
    );
  }, []);
  useEffect(load, []);
  // Workers' slots and other sites' backlogs change without task events: read again every few seconds too.
  useLiveReload(load, () => true, 5000);

  if (error !== null && overview === null) {
    const why =
      error.status === 403
        ? "The overview shows the whole site: it needs the admin key. Your key sees its own tasks under Tasks."
        : error.message;
    return html`<article class="notice" data-testid="overview-error">${why}</article>`;
  }
  if (overview === null) return html`<p aria-busy="true">Loading the overview…</p>`;

  const total = Object.values(overview.byStatus).reduce((a, b) => a + b, 0);
  const perMinute = overview.finishedPerMinute;
  const lastHour = perMinute.reduce((sum, m) => ({ output: sum.output + m.output, error: sum.error + m.error }), { output: 0, error: 0 });
  // One string: htm drops the whitespace of a line break between an expression and text.
  const summary =
    `${total.toLocaleString()} tasks (parts included) · ${overview.queue.ready} ready, ${overview.queue.delayed} delayed · ` +
    `last hour: ${lastHour.output} done, ${lastHour.error} failed`;
  return html`
    <section data-testid="overview">
      <hgroup>
        <h2>Site <code>${overview.site}</code></h2>
        <p>${summary}</p>
      </hgroup>
      <${StatusCards} byStatus=${overview.byStatus} />
      <div class="grid two">
        <article>
          <header><strong>Queued by priority</strong></header>
          ${
            overview.queuedByPriority.length === 0
              ? html`<p class="muted chart-empty">Nothing queued.</p>`
              : html`<${BarChart}
                  testId="chart-priority"
                  label="queued tasks per priority"
                  labels=${overview.queuedByPriority.map((p) => `p${p.priority}`)}
                  datasets=${[{ label: "queued", data: overview.queuedByPriority.map((p) => p.count), backgroundColor: COLORS.queued }]}
                />`
          }
        </article>
        <article>
          <header><strong>Finished per minute, last hour</strong></header>
          <${BarChart}
            testId="chart-throughput"
            label="tasks finished and failed per minute over the last hour"
            stacked=${true}
            labels=${perMinute.map((m) => minuteLabel(m.minute))}
            datasets=${[
              { label: "done", data: perMinute.map((m) => m.output), backgroundColor: COLORS.output },
              { label: "failed", data: perMinute.map((m) => m.error), backgroundColor: COLORS.error },
              { label: "canceled", data: perMinute.map((m) => m.canceled), backgroundColor: COLORS.canceled },
            ]}
          />
        </article>
      </div>
      <div class="grid two">
        <article>
          <header><strong>Workers</strong></header>
          <${Workers} workers=${overview.workers} slots=${overview.slots} />
        </article>
        <article>
          <header><strong>Sites</strong></header>
          <${Sites} sites=${overview.sites} now=${overview.at} />
        </article>
      </div>
    </section>
  `;
}
