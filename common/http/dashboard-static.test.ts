import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { REPO_ROOT } from "../config/config.js";
import { dashboardFileOf, dashboardFiles, inlineScriptHashes } from "./dashboard-static.js";

describe("dashboard files", () => {
  it("maps the page, web/ and the libraries, and nothing outside their folders", () => {
    assert.deepEqual(dashboardFileOf("/r", "/"), { file: path.join("/r", "web", "index.html"), library: false });
    assert.deepEqual(dashboardFileOf("/r", "/web/app.js"), { file: path.join("/r", "web", "app.js"), library: false });
    assert.deepEqual(dashboardFileOf("/r", "/vendor/chart.js/chunks/helpers.js"), {
      file: path.join("/r", "node_modules/chart.js/dist/chunks/helpers.js"),
      library: true,
    });
    for (const escape of [
      "/web/../package.json",
      "/web/..%2Fpackage.json",
      "/vendor/htm/%2e%2e/package.json",
      "/web/",
      "/web/%00x",
      "/web/%E0%A4%A",
    ]) {
      assert.equal(dashboardFileOf("/r", escape), null, escape);
    }
    for (const api of ["/api/tasks", "/metrics", "/api/docs", "/index.htm"]) assert.equal(dashboardFileOf("/r", api), null, api);
  });

  it("hashes the inline scripts only, as CSP names them", () => {
    const html = `<script type="importmap">{"a":1}</script><script type="module" src="/web/app.js"></script>`;
    assert.deepEqual(inlineScriptHashes(html), [createHash("sha256").update('{"a":1}').digest("base64")]);
  });

  describe("served", () => {
    let server: Server;
    let base: string;
    before(async () => {
      const serve = dashboardFiles(REPO_ROOT);
      server = createServer((req, res) => {
        if (!serve(req, res)) {
          res.writeHead(418);
          res.end();
        }
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it("answers the page with its CSP, the types, the cache headers and 304 on a matching ETag", async () => {
      const page = await fetch(`${base}/`);
      assert.equal(page.status, 200);
      assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
      assert.equal(page.headers.get("cache-control"), "no-cache");
      assert.equal(page.headers.get("x-content-type-options"), "nosniff");
      const csp = page.headers.get("content-security-policy") ?? "";
      const [hash] = inlineScriptHashes(await page.text());
      assert.ok(csp.includes(`script-src 'self' 'sha256-${hash}'`), csp);
      assert.ok(csp.includes("default-src 'self'") && csp.includes("object-src 'none'"), csp);
      const css = await fetch(`${base}/vendor/pico/pico.min.css`);
      assert.equal(css.headers.get("content-type"), "text/css; charset=utf-8");
      assert.equal(css.headers.get("cache-control"), "public, max-age=3600");
      await css.arrayBuffer();
      const again = await fetch(`${base}/vendor/pico/pico.min.css`, { headers: { "if-none-match": css.headers.get("etag") ?? "" } });
      assert.equal(again.status, 304);
      const js = await fetch(`${base}/web/app.js`, { method: "HEAD" });
      assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
    });

    it("answers 404 for a missing file of its folders, and leaves other paths and methods to the API", async () => {
      const missing = await fetch(`${base}/web/nope.js`);
      assert.equal(missing.status, 404);
      assert.equal(((await missing.json()) as { field: string }).field, "path");
      assert.equal((await fetch(`${base}/api/tasks`)).status, 418);
      assert.equal((await fetch(`${base}/`, { method: "POST" })).status, 418);
    });
  });
});
