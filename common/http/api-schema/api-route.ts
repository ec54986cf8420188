import type { z } from "zod";

/*
 * One route of the REST API as the OpenAPI document describes it: the zod schemas its request is
 * validated with and its answers are made of, so the document is generated, never written beside
 * the code (openapi-document.ts).
 */

export type HttpMethod = "get" | "post" | "patch" | "delete";

/**
 * Who may call it when authentication is on: `open` anyone (no key); `key` any key, a user key
 * seeing only its own; `admin` the admin key only; `metrics` the admin or metrics key (or anyone with metrics.public).
 */
export type RouteAccess = "open" | "key" | "admin" | "metrics";

/** An answer: JSON made of a zod schema, or another media type described by a JSON Schema as is. */
export interface RouteResponse {
  description: string;
  json?: z.ZodType;
  /** Non-JSON bodies (a document, an event stream, Prometheus text, a page): media type to JSON Schema. */
  media?: Record<string, Record<string, unknown>>;
  headers?: Record<string, { description: string; schema: Record<string, unknown> }>;
}

/** What a request carries in its body. */
export interface RouteBody {
  /** A JSON body. */
  json?: z.ZodType;
  /** The document itself, as the body (application/octet-stream, any type). */
  document?: boolean;
  /** A multipart form: these text fields besides the `file` (the document). */
  form?: z.ZodObject;
  /** With `form`: the field `file` repeated, one document per task (the batch submit). */
  files?: boolean;
}

export interface ApiRoute {
  method: HttpMethod;
  /** OpenAPI form: /api/tasks/{id}. */
  path: string;
  /** The controller's action (controller.<operationId>), or the name of the handler serving it. */
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  access: RouteAccess;
  pathParams?: z.ZodObject;
  query?: z.ZodObject;
  headers?: z.ZodObject;
  body?: RouteBody;
  /** Answers besides those every route of its access gets (401, 403 for admin, 503 when the queue is out of reach). */
  responses: Record<number, RouteResponse>;
  /** Whether answering needs the site's queuer (and so may be a 503); default true. */
  usesQueue?: boolean;
}
