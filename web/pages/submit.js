// Submit: a document, the job (from GET /api/jobs), priority, name and params (a field per param
// the job declares, or JSON), sent as the multipart form POST /api/tasks takes.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api.js";
import { html } from "../html.js";

/** The params a job declares: a list of names, or a JSON Schema's properties (name → type); null: any. */
function declaredParams(job) {
  if (job === undefined || job.params === null || job.params === undefined) return null;
  if (Array.isArray(job.params)) return job.params.map((name) => ({ name, type: null }));
  const props = job.params.properties ?? job.params;
  return Object.entries(props).map(([name, schema]) => ({
    name,
    type: typeof schema === "object" && schema !== null ? (schema.type ?? null) : null,
  }));
}

/** A field's text as a param value: JSON when it reads as JSON (numbers, true, objects), else the text itself. */
function paramValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function JobInfo({ job }) {
  if (job === undefined) return null;
  if (job.kind === "workflow") return html`<small class="muted">workflow: ${job.steps.map((s) => s.name).join(" → ")}</small>`;
  // One string: htm drops whitespace around a line break in a template.
  const facts = [
    job.kind,
    `timeout ${Math.round(job.timeoutMs / 1000)} s`,
    job.maxTries === null ? "default tries" : `${job.maxTries} tries`,
  ];
  if (job.warm) facts.push(job.concurrency > 1 ? `warm, ${job.concurrency} tasks per process` : "warm");
  if (job.inline) facts.push("inline documents");
  if (job.split) facts.push("splits");
  return html`<small class="muted" data-testid="job-info">${facts.join(" · ")}</small>`;
}

export function SubmitPage() {
  const [jobs, setJobs] = useState(null);
  const [jobName, setJobName] = useState("");
  const [priority, setPriority] = useState(50);
  const [name, setName] = useState("");
  const [file, setFile] = useState(null);
  const [paramMode, setParamMode] = useState("fields");
  const [paramFields, setParamFields] = useState({});
  const [paramJson, setParamJson] = useState("{}");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [created, setCreated] = useState([]);

  useEffect(() => {
    api("/api/jobs")
      .then((answer) => {
        setJobs(answer.jobs);
        const first = answer.jobs.find((j) => !("error" in j));
        if (first !== undefined) setJobName((current) => current || first.name);
      })
      .catch((err) => setError(err));
  }, []);

  const job = jobs?.find((j) => j.name === jobName);
  const params = declaredParams(job);
  useEffect(() => {
    setParamFields({});
    setParamMode(params === null ? "json" : "fields");
  }, [jobName]);

  const paramsOf = () => {
    if (paramMode === "json") {
      const text = paramJson.trim();
      if (text === "" || text === "{}") return null;
      let value;
      try {
        value = JSON.parse(text);
      } catch (err) {
        throw Object.assign(new Error(`params are not JSON: ${err.message}`), { field: "params" });
      }
      if (typeof value !== "object" || value === null || Array.isArray(value))
        throw Object.assign(new Error("params must be a JSON object"), { field: "params" });
      return value;
    }
    const entries = Object.entries(paramFields).filter(([, text]) => text !== "");
    return entries.length === 0 ? null : Object.fromEntries(entries.map(([k, text]) => [k, paramValue(text)]));
  };

  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      if (file === null) throw Object.assign(new Error("choose a document to submit"), { field: "file" });
      const form = new FormData();
      form.set("job", jobName);
      form.set("priority", String(priority));
      if (name.trim() !== "") form.set("name", name.trim());
      const p = paramsOf();
      if (p !== null) form.set("params", JSON.stringify(p));
      // The document last: the API reads the fields before it stores the file.
      form.set("file", file, file.name);
      setBusy(true);
      const answer = await api("/api/tasks", { method: "POST", body: form });
      setCreated([{ id: answer.id, name: name.trim() || file.name }, ...created].slice(0, 5));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const invalid = (field) => (error?.field === field ? "true" : undefined);
  return html`
    <section data-testid="submit">
      <h2>Submit a document</h2>
      <div class="grid two">
        <article>
          <form onSubmit=${submit} data-testid="submit-form">
            <label>
              Document
              <input
                type="file"
                name="file"
                aria-invalid=${invalid("file") ?? invalid("body")}
                onChange=${(e) => {
                  const chosen = e.currentTarget.files?.[0] ?? null;
                  setFile(chosen);
                  if (chosen !== null && name === "") setName(chosen.name);
                }}
              />
            </label>
            <div class="grid">
              <label>
                Job
                <select
                  name="job"
                  value=${jobName}
                  onChange=${(e) => setJobName(e.currentTarget.value)}
                  aria-invalid=${invalid("job")}
                  data-testid="job-select"
                >
                  ${(jobs ?? []).map((j) => html`<option value=${j.name} disabled=${"error" in j}>${j.name}${"error" in j ? " (refused)" : ""}</option>`)}
                </select>
                <${JobInfo} job=${job} />
              </label>
              <label>
                Priority <strong>${priority}</strong>
                <input
                  type="range"
                  name="priority"
                  min="0"
                  max="100"
                  value=${priority}
                  onInput=${(e) => setPriority(Number(e.currentTarget.value))}
                  aria-invalid=${invalid("priority")}
                />
              </label>
            </div>
            <label>
              Name
              <input
                name="name"
                value=${name}
                onInput=${(e) => setName(e.currentTarget.value)}
                placeholder="defaults to the file's name"
                aria-invalid=${invalid("name")}
              />
            </label>
            <fieldset>
              <legend>
                Params
                ${
                  params === null
                    ? html` <small class="muted">(this job declares none: any JSON object)</small>`
                    : html` <a
                        href="#"
                        class="mode"
                        onClick=${(e) => {
                          e.preventDefault();
                          setParamMode(paramMode === "json" ? "fields" : "json");
                        }}
                        >${paramMode === "json" ? "as fields" : "as JSON"}</a
                      >`
                }
              </legend>
              ${
                paramMode === "fields" && params !== null
                  ? params.map(
                      (p) =>
                        html`<label>
                          ${p.name}${p.type === null ? "" : html` <small class="muted">${p.type}</small>`}
                          <input
                            name=${`param-${p.name}`}
                            data-testid=${`param-${p.name}`}
                            value=${paramFields[p.name] ?? ""}
                            aria-invalid=${invalid("params")}
                            onInput=${(e) => setParamFields({ ...paramFields, [p.name]: e.currentTarget.value })}
                          />
                        </label>`,
                    )
                  : html`<textarea
                      name="params"
                      rows="3"
                      data-testid="params-json"
                      aria-invalid=${invalid("params")}
                      value=${paramJson}
                      onInput=${(e) => setParamJson(e.currentTarget.value)}
                    ></textarea>`
              }
            </fieldset>
            <button type="submit" aria-busy=${busy} disabled=${busy || jobs === null} data-testid="submit-button">Submit</button>
            ${error === null ? null : html`<p class="error-text" data-testid="submit-error">${error.message}${error.field ? ` (field: ${error.field})` : ""}</p>`}
          </form>
        </article>
        <article>
          <header><strong>Submitted here</strong></header>
          ${
            created.length === 0
              ? html`<p class="muted">Tasks you submit appear here, and in <a href="#/tasks">Tasks</a>.</p>`
              : html`<ul data-testid="submitted">
                  ${created.map((c) => html`<li><a href=${`#/task/${c.id}`} data-testid="submitted-link">${c.name}</a> <code class="id">${c.id}</code></li>`)}
                </ul>`
          }
        </article>
      </div>
    </section>
  `;
}
