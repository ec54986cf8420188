import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { getTask, REPO, startEmbeddedApp, submit, tempDir, useKey, waitUntil, type EmbeddedApp } from "./helpers.js";

/*
 * The dashboard in Debian's Chromium (headless, no network beyond the app) against the real app:
 * overview, submit through the form, the list updating live, the task page (download, retry,
 * cancel), filters, and the login with an API key. One app for the file, authentication on, so the
 * login is part of the walk. No error may reach the browser's console. Screenshots of each page
 * go to test-screenshots/dashboard/ (ignored by git) for a person to look at.
 */

const CHROMIUM = "/usr/bin/chromium";
const SHOTS = path.join(REPO, "test-screenshots", "dashboard");
const ADMIN_KEY = "dashboard-test-admin-key-0123456789";
/** Generous: a loaded 2-core machine runs eight people's tests. */
const WAIT_MS = 20_000;

describe("dashboard in Chromium", () => {
  let app: EmbeddedApp;
  let context: BrowserContext;
  let page: Page;
  const browserErrors: string[] = [];
  let splitId = "";
  let failId = "";

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    const profile = await tempDir("chromium-profile");
    // A persistent context: its profile is the fresh --user-data-dir, removed with the temp dir.
    [app, context] = await Promise.all([
      startEmbeddedApp({ slots: 2, env: { DOCQ_ADMIN_KEY: ADMIN_KEY } }),
      chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        acceptDownloads: true,
        viewport: { width: 1400, height: 900 },
        args: [
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
        ],
      }),
    ]);
    useKey(app.url, ADMIN_KEY);
    // Submitted now so they are over by the time their tests look (the walk's waits overlap them).
    [splitId, failId] = await Promise.all([
      submit(app.url, "one\ntwo\nthree\n", { job: "pages", name: "three-pages" }),
      submit(app.url, "x", { job: "fail", maxTries: 1, name: "will-fail" }),
    ]);
    page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (msg) => {
      if (msg.type() === "error") browserErrors.push(`console: ${msg.text()}`);
    });
    page.on("pageerror", (err) => browserErrors.push(`page error: ${err.message}`));
  });

  after(async () => {
    await context?.close();
    await app?.stop();
  });

  const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const go = (hash: string) => page.evaluate((h) => (location.hash = h), hash);

  it("asks for a key when authentication is on, and logs in with the admin key", async () => {
    await page.goto(`${app.url}/`);
    await page.getByTestId("login").waitFor({ timeout: WAIT_MS });
    await shot("login");
    // The page asked nothing the API refused: it read the open health first and saw that a key is needed.
    assert.deepEqual(browserErrors, []);
    await page.getByTestId("key-input").fill(ADMIN_KEY);
    await page.getByTestId("login-button").click();
    await page.getByTestId("overview").waitFor({ timeout: WAIT_MS });
    assert.equal(await page.evaluate(() => sessionStorage.getItem("docq.apiKey")), ADMIN_KEY);
  });

  it("serves the page with a strict CSP and the libraries from node_modules", async () => {
    const res = await fetch(`${app.url}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
    assert.match(res.headers.get("content-security-policy") ?? "", /default-src 'self'; script-src 'self' 'sha256-/);
    const lib = await fetch(`${app.url}/vendor/chart.js/chart.js`);
    assert.equal(lib.status, 200);
    assert.match(lib.headers.get("content-type") ?? "", /^text\/javascript/);
    assert.match(lib.headers.get("cache-control") ?? "", /max-age=/);
    const again = await fetch(`${app.url}/vendor/chart.js/chart.js`, { headers: { "if-none-match": lib.headers.get("etag") ?? "" } });
    assert.equal(again.status, 304);
    assert.equal((await fetch(`${app.url}/vendor/chart.js/..%2F..%2F..%2Fpackage.json`)).status, 404);
  });

  it("shows the overview: counts by status, charts, workers", async () => {
    await go("#/");
    await page.getByTestId("status-cards").waitFor({ timeout: WAIT_MS });
    await page.getByTestId("chart-throughput").waitFor({ timeout: WAIT_MS });
    await shot("overview-empty");
  });

  let submittedId = "";
  const document = `dashboard test document ${Date.now()}\n`.repeat(20);

  it("submits a document through the form and sees it reach output in the list, live", async () => {
    await page.getByTestId("nav-submit").click();
    await page.getByTestId("submit-form").waitFor({ timeout: WAIT_MS });
    // What job.yaml says of the job picked: noop-warm's two requests per process (concurrency: 2), its documents inline.
    await page.getByTestId("job-select").selectOption("noop-warm");
    await page.getByTestId("job-info").filter({ hasText: "warm, 2 tasks per process · inline documents" }).waitFor({ timeout: WAIT_MS });
    await page.getByTestId("job-select").selectOption("sleep");
    await page.getByTestId("param-ms").fill("300");
    await page.locator('input[type="file"]').setInputFiles({ name: "report.txt", mimeType: "text/plain", buffer: Buffer.from(document) });
    await shot("submit");
    await page.getByTestId("submit-button").click();
    const link = page.getByTestId("submitted-link").first();
    await link.waitFor({ timeout: WAIT_MS });
    submittedId = (await page.locator('[data-testid="submitted"] code').first().textContent()) ?? "";
    assert.match(submittedId, /^[a-z0-9_-]+-[0-9A-Z]{26}$/);
    await page.getByTestId("nav-tasks").click();
    await page.locator(`[data-testid="task-row"][data-id="${submittedId}"][data-status="output"]`).waitFor({ timeout: WAIT_MS });
    await shot("tasks");
  });

  it("opens the task from its row and downloads its output and input", async () => {
    await page.locator(`[data-testid="task-row"][data-id="${submittedId}"]`).click();
    await page.locator('[data-testid="task"][data-status="output"]').waitFor({ timeout: WAIT_MS });
    await page.getByTestId("attempts").waitFor();
    await shot("task-output");
    for (const which of ["output", "input"]) {
      const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId(`download-${which}`).click()]);
      const file = await download.path();
      assert.equal(readFileSync(file, "utf8"), document, `the ${which} downloaded`);
    }
  });

  it("shows a split task's parts with their progress", async () => {
    await go(`#/task/${splitId}`);
    await page.locator('[data-testid="task"][data-status="output"]').waitFor({ timeout: WAIT_MS });
    await waitUntil("its three parts listed", async () => (await page.locator('[data-testid="children"] li').count()) === 3, WAIT_MS, 100);
    assert.equal(await page.getByTestId("children-progress").getAttribute("value"), "3");
    await shot("task-parts");
  });

  it("retries a task of the fail job from its page", async () => {
    const id = failId;
    await waitUntil("the fail task to fail", async () => (await getTask(app.url, id)).status === "error", WAIT_MS, 100);
    await go(`#/task/${id}`);
    await page.locator('[data-testid="task"][data-status="error"]').waitFor({ timeout: WAIT_MS });
    await shot("task-error");
    await page.getByTestId("retry").click();
    await page.getByTestId("retry-confirm").click();
    await waitUntil("the retried task to run and fail again", async () => (await getTask(app.url, id)).attempts.length === 2, WAIT_MS, 100);
    await page.locator('[data-testid="attempts"] tbody tr').nth(1).waitFor({ timeout: WAIT_MS });
  });

  it("cancels a running sleep task from its page", async () => {
    const id = await submit(app.url, "zz", { job: "sleep", params: { ms: 60_000 }, name: "long-sleep" });
    await waitUntil("the sleep task to run", async () => (await getTask(app.url, id)).status === "work", WAIT_MS, 100);
    await go(`#/task/${id}`);
    await page.locator('[data-testid="task"][data-status="work"]').waitFor({ timeout: WAIT_MS });
    await page.getByTestId("cancel").click();
    await page.getByTestId("cancel-dialog").waitFor();
    await shot("cancel-dialog");
    await page.getByTestId("cancel-confirm").click();
    await page.locator('[data-testid="task"][data-status="canceled"]').waitFor({ timeout: WAIT_MS });
    assert.equal((await getTask(app.url, id)).status, "canceled");
    // Its documents went with the cancel: the input's download says so.
    const input = await fetch(`${app.url}/api/tasks/${id}/input`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    assert.equal(input.status, 409);
    assert.match(((await input.json()) as { error: string }).error, /removed/);
  });

  it("filters the list by status and by job, and pages it by the store's cursor", async () => {
    await page.getByTestId("nav-tasks").click();
    await page.getByTestId("filters").waitFor();
    await page.locator('[data-testid="filters"] select[name="status"]').selectOption("error");
    await page.getByTestId("apply-filters").click();
    await waitUntil(
      "only failed tasks listed",
      async () => {
        const statuses = await page
          .locator('[data-testid="task-row"]')
          .evaluateAll((rows) => rows.map((r) => r.getAttribute("data-status")));
        return statuses.length === 1 && statuses[0] === "error";
      },
      WAIT_MS,
      100,
    );
    assert.match(page.url(), /#\/tasks\?status=error$/);
    await page.locator('[data-testid="filters"] select[name="status"]').selectOption("");
    await page.locator('[data-testid="filters"] select[name="job"]').selectOption("sleep");
    await page.getByTestId("apply-filters").click();
    await waitUntil(
      "the two sleep tasks listed",
      async () => (await page.locator('[data-testid="task-row"]').evaluateAll((rows) => rows.length)) === 2,
      WAIT_MS,
      100,
    );
    await shot("tasks-filtered");
    // Paging by the store's cursor, two rows a page: older, then back to the newest.
    await go("#/tasks?limit=2");
    const rowIds = () => page.locator('[data-testid="task-row"]').evaluateAll((rows) => rows.map((r) => r.getAttribute("data-id")));
    await waitUntil("the first page of two", async () => (await rowIds()).length === 2, WAIT_MS, 100);
    const first = await rowIds();
    await page.getByTestId("next-page").click();
    await waitUntil("the second page", async () => (await rowIds()).every((id) => !first.includes(id)), WAIT_MS, 100);
    await page.getByTestId("prev-page").click();
    await waitUntil("the first page again", async () => JSON.stringify(await rowIds()) === JSON.stringify(first), WAIT_MS, 100);
    await go("#/");
    await page.getByTestId("chart-priority").or(page.getByTestId("status-cards")).first().waitFor();
    await page.getByTestId("count-output").waitFor();
    await page.getByTestId("workers").waitFor({ timeout: WAIT_MS });
    await shot("overview");
  });

  it("logs in with a user key in another tab: its own tasks only, the overview refused politely", async () => {
    const made = await fetch(`${app.url}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ user: "carol" }),
    });
    assert.equal(made.status, 201);
    const { key } = (await made.json()) as { key: string };
    const own = await fetch(`${app.url}/api/tasks?job=sleep&params=${encodeURIComponent('{"ms":0}')}&name=carols`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/octet-stream" },
      body: "carol's document",
    });
    assert.equal(own.status, 201);
    const ownId = ((await own.json()) as { id: string }).id;
    // A new tab: sessionStorage is per tab, so it starts logged out.
    const tab = await context.newPage();
    const tabErrors: string[] = [];
    tab.on("console", (msg) => {
      if (msg.type() === "error") tabErrors.push(`console: ${msg.text()}`);
    });
    tab.on("pageerror", (err) => tabErrors.push(`page error: ${err.message}`));
    try {
      await tab.goto(`${app.url}/#/tasks`);
      await tab.getByTestId("key-input").fill(key);
      await tab.getByTestId("login-button").click();
      await tab.locator(`[data-testid="task-row"][data-id="${ownId}"]`).waitFor({ timeout: WAIT_MS });
      const users = await tab.locator('[data-testid="task-row"] td:nth-child(4)').allTextContents();
      assert.deepEqual(users, ["carol"]);
      await tab.screenshot({ path: path.join(SHOTS, "tasks-user-key.png"), fullPage: true });
      await tab.getByTestId("nav-overview").click();
      await tab.getByTestId("overview-error").waitFor({ timeout: WAIT_MS });
      assert.match((await tab.getByTestId("overview-error").textContent()) ?? "", /admin key/);
    } finally {
      await tab.close();
    }
    // Nothing refused either: the login asked who the key is, and the overview did not ask for what a user key may not see.
    assert.deepEqual(tabErrors, []);
  });

  it("left no error in the browser console", () => {
    assert.deepEqual(browserErrors, []);
  });
});
