import { createHash } from "node:crypto";
import { createReadStream, readFileSync, statSync, type Stats } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";

/*
 * The dashboard's files, served by the controller before moleculer-web routes anything: the page
 * at `/`, its own modules under /web/ (the project's web/ folder), and the libraries it imports
 * under /vendor/ straight from node_modules (no build step, no CDN: it works offline). Only these
 * folders are served, never a path outside them.
 */

/** URL prefix → folder (relative to the repository). Each library's ESM build, as the page's import map names it. */
const FOLDERS: Readonly<Record<string, string>> = {
  "/web/": "web",
  "/vendor/preact/": "node_modules/preact/dist",
  "/vendor/preact-hooks/": "node_modules/preact/hooks/dist",
  "/vendor/htm/": "node_modules/htm/dist",
  "/vendor/chart.js/": "node_modules/chart.js/dist",
  "/vendor/kurkle-color/": "node_modules/@kurkle/color/dist",
  "/vendor/pico/": "node_modules/@picocss/pico/css",
};

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

/** The page itself and the project's modules change with each deploy: revalidated every time (a 304 costs nothing). */
const REVALIDATE = "no-cache";
/** Libraries change only with package.json: cached an hour, then revalidated by ETag. */
const LIBRARY_CACHE = "public, max-age=3600";

/**
 * Self only: every script, style, image and fetch from this origin. The one inline script, the
 * import map, is allowed by its hash. Pico's icons are data: SVGs.
 */
function contentSecurityPolicy(inlineScriptHashes: readonly string[]): string {
  return [
    "default-src 'self'",
    `script-src 'self' ${inlineScriptHashes.map((h) => `'sha256-${h}'`).join(" ")}`,
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/** The hashes (base64 sha256) of the page's inline scripts, as CSP names them. */
export function inlineScriptHashes(html: string): string[] {
  return [...html.matchAll(/<script(?![^>]*\bsrc=)[^>]*>([\s\S]*?)<\/script>/g)].map((m) =>
    createHash("sha256")
      .update(m[1] ?? "")
      .digest("base64"),
  );
}

/** The file a URL path names inside `FOLDERS`, or null (not ours, or an attempt to leave the folder). */
export function dashboardFileOf(root: string, urlPath: string): { file: string; library: boolean } | null {
  if (urlPath === "/" || urlPath === "/index.html") return { file: path.join(root, "web", "index.html"), library: false };
  for (const [prefix, folder] of Object.entries(FOLDERS)) {
    if (!urlPath.startsWith(prefix)) continue;
    let rest: string;
    try {
      rest = decodeURIComponent(urlPath.slice(prefix.length));
    } catch {
      return null;
    }
    const base = path.join(root, folder);
    const file = path.resolve(base, rest);
    if (rest === "" || rest.includes("\0") || !file.startsWith(base + path.sep)) return null;
    return { file, library: prefix.startsWith("/vendor/") };
  }
  return null;
}

const etagOf = (stat: Stats): string => `"${stat.size.toString(36)}-${Math.floor(stat.mtimeMs).toString(36)}"`;

/**
 * A handler for the HTTP server: answers a GET or HEAD of a dashboard file and says so, or answers
 * false and leaves the request to the API. The page's CSP is computed once, from the page as it is
 * at start.
 */
export function dashboardFiles(root: string): (req: IncomingMessage, res: ServerResponse) => boolean {
  const page = path.join(root, "web", "index.html");
  const csp = contentSecurityPolicy(inlineScriptHashes(readFileSync(page, "utf8")));
  return (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const urlPath = (req.url ?? "/").split("?")[0] ?? "/";
    const target = dashboardFileOf(root, urlPath);
    if (target === null) return false;
    const type = CONTENT_TYPES[path.extname(target.file)];
    let stat: Stats | undefined;
    try {
      stat = statSync(target.file);
    } catch {
      stat = undefined;
    }
    const common = {
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "no-referrer",
      "Content-Security-Policy": csp,
    };
    if (stat === undefined || !stat.isFile() || type === undefined) {
      res.writeHead(404, { ...common, "Content-Type": "application/json; charset=utf-8" });
      res.end(JSON.stringify({ error: `no dashboard file ${urlPath}`, field: "path" }));
      return true;
    }
    const etag = etagOf(stat);
    const headers = { ...common, ETag: etag, "Cache-Control": target.library ? LIBRARY_CACHE : REVALIDATE };
    if (req.headers["if-none-match"] === etag) {
      res.writeHead(304, headers);
      res.end();
      return true;
    }
    res.writeHead(200, { ...headers, "Content-Type": type, "Content-Length": String(stat.size) });
    if (req.method === "HEAD") {
      res.end();
      return true;
    }
    const stream = createReadStream(target.file);
    stream.on("error", () => res.destroy());
    stream.pipe(res);
    return true;
  };
}
