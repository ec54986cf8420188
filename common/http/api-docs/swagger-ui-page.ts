import { createRequire } from "node:module";
import { readFile } from "node:fs/promises";
import path from "node:path";

/*
 * GET /api/docs: Swagger UI over /api/openapi.json, every file from the app itself (swagger-ui-dist
 * in node_modules), so the page works with no internet access. swagger-ui-dist's own index.html
 * loads the petstore: this page is docq's own, its start-up script a file (not inline) so the CSP
 * can forbid inline scripts.
 */

const DIST_DIR = path.dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));

/** Where the page is served; its files are under it. */
export const DOCS_PATH = "/api/docs";

/**
 * Only what the page needs: its own script and style files (no inline ones: Swagger UI sets styles
 * through the DOM, which style-src does not govern), the document and "Try it out" requests to this
 * origin, its icons as data: URLs. Nothing of another origin, no frames. Checked in Chromium: no violation.
 */
export const DOCS_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>docq API</title>
  <link rel="stylesheet" href="${DOCS_PATH}/swagger-ui.css">
  <link rel="icon" type="image/png" href="${DOCS_PATH}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="${DOCS_PATH}/swagger-ui-bundle.js"></script>
  <script src="${DOCS_PATH}/docs-init.js"></script>
</body>
</html>
`;

/** Starts Swagger UI on the served document; a key given with Authorize is kept by the page only (not in localStorage). */
const INIT_SCRIPT = `window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
`;

/** The files the page may load from swagger-ui-dist, by name, with their type: nothing else of node_modules is reachable. */
const DIST_FILES: Readonly<Record<string, string>> = {
  "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
  "swagger-ui.css": "text/css; charset=utf-8",
  "favicon-32x32.png": "image/png",
  "favicon-16x16.png": "image/png",
};

export interface DocsFile {
  body: string | Buffer;
  contentType: string;
}

/** The page (`asset` undefined or empty) or one of its files; null for any other name. */
export async function docsFile(asset: string | undefined): Promise<DocsFile | null> {
  if (asset === undefined || asset === "") return { body: PAGE, contentType: "text/html; charset=utf-8" };
  if (asset === "docs-init.js") return { body: INIT_SCRIPT, contentType: "application/javascript; charset=utf-8" };
  const contentType = Object.hasOwn(DIST_FILES, asset) ? DIST_FILES[asset] : undefined;
  if (contentType === undefined) return null;
  return { body: await readFile(path.join(DIST_DIR, asset)), contentType };
}

/** The headers of every answer of the page: its CSP, and no sniffing of types. */
export function docsHeaders(file: DocsFile): Record<string, string> {
  return {
    "Content-Type": file.contentType,
    "Content-Security-Policy": DOCS_CSP,
    "X-Content-Type-Options": "nosniff",
    // The files change only with docq's version: an hour spares reloading 1.5 MB on each visit.
    "Cache-Control": file.contentType.startsWith("text/html") ? "no-cache" : "public, max-age=3600",
  };
}
