import { z } from "zod";
import type { ApiRoute, RouteResponse } from "./api-route.js";
import { API_ROUTES } from "./api-routes.js";
import { ErrorBodySchema } from "./response-schemas.js";

/*
 * The OpenAPI 3.1 document of docq's REST API, generated from the route table (api-routes.ts) and
 * the zod schemas the API validates requests with and answers with (zod's own JSON Schema output,
 * draft 2020-12, which is OpenAPI 3.1's schema dialect). Served at /api/openapi.json, read by the
 * Swagger UI at /api/docs.
 */

type JsonSchema = Record<string, unknown>;
const COMPONENTS = "#/components/schemas/";

/** The bounds zod writes for every z.int(): noise to a reader, and implied by `integer`. */
const SAFE_INT_BOUNDS: ReadonlySet<unknown> = new Set([Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER]);

/**
 * A converted schema made fit for the document: a named schema's `$defs` reference becomes a
 * reference to components, its copy in `$defs` goes, and `$schema`/`$id` and the safe-integer bounds are dropped.
 */
function tidy(value: unknown, named: ReadonlySet<string>): unknown {
  if (Array.isArray(value)) return value.map((item) => tidy(item, named));
  if (typeof value !== "object" || value === null) return value;
  const out: JsonSchema = {};
  for (const [key, inner] of Object.entries(value)) {
    if (key === "$schema" || key === "$id") continue;
    if ((key === "minimum" || key === "maximum") && SAFE_INT_BOUNDS.has(inner)) continue;
    if (key === "$ref" && typeof inner === "string") {
      const id = /^#\/\$defs\/(.+)$/.exec(inner)?.[1];
      out.$ref = id !== undefined && named.has(id) ? `${COMPONENTS}${id}` : inner;
      continue;
    }
    if (key === "$defs") {
      const defs = Object.entries(inner as JsonSchema).filter(([id]) => !named.has(id));
      if (defs.length > 0) out.$defs = Object.fromEntries(defs.map(([id, def]) => [id, tidy(def, named)]));
      continue;
    }
    out[key] = tidy(inner, named);
  }
  return out;
}

/**
 * The schemas named by a meta `id` (zod's global registry, where `.meta()` writes), as JSON Schema
 * referring to each other in components/schemas.
 */
function namedSchemas(): JsonSchema {
  const { schemas } = z.toJSONSchema(z.globalRegistry, {
    target: "draft-2020-12",
    io: "output",
    unrepresentable: "any",
    uri: (id) => `${COMPONENTS}${id}`,
  }) as { schemas: JsonSchema };
  return schemas;
}

/** The JSON Schema of an answer (`output`) or of what a request may carry (`input`); a named schema in it is a reference. */
export function jsonSchemaOf(
  schema: z.ZodType,
  io: "input" | "output",
  named: ReadonlySet<string> = new Set(Object.keys(namedSchemas())),
): JsonSchema {
  return tidy(z.toJSONSchema(schema, { target: "draft-2020-12", io, unrepresentable: "any" }), named) as JsonSchema;
}

/** Each field of a query, path or header schema as an OpenAPI parameter. */
function parametersOf(schema: z.ZodObject | undefined, where: "query" | "path" | "header", named: ReadonlySet<string>): JsonSchema[] {
  if (schema === undefined) return [];
  return Object.entries(schema.shape).map(([name, field]) => {
    const fieldSchema = jsonSchemaOf(field as z.ZodType, "input", named);
    const { description, ...rest } = fieldSchema;
    const optional = (field as z.ZodType).safeParse(undefined).success;
    return {
      name,
      in: where,
      required: where === "path" || !optional,
      ...(typeof description === "string" ? { description } : {}),
      schema: rest,
    };
  });
}

function requestBodyOf(route: ApiRoute, named: ReadonlySet<string>): JsonSchema | undefined {
  const { body } = route;
  if (body === undefined) return undefined;
  const content: JsonSchema = {};
  if (body.json !== undefined) content["application/json"] = { schema: jsonSchemaOf(body.json, "input", named) };
  if (body.document === true) content["application/octet-stream"] = { schema: { type: "string", format: "binary" } };
  if (body.form !== undefined) {
    const fields = jsonSchemaOf(body.form, "input", named) as { properties?: JsonSchema; required?: string[] };
    content["multipart/form-data"] = {
      schema: {
        type: "object",
        properties: {
          file:
            body.files === true
              ? { type: "array", items: { type: "string", format: "binary" }, description: "the documents, one part named file per task" }
              : { type: "string", format: "binary", description: "the document" },
          ...fields.properties,
        },
        required: ["file", ...(fields.required ?? [])],
      },
    };
  }
  return { required: true, content };
}

const ERROR_CONTENT = { "application/json": { schema: { $ref: `${COMPONENTS}Error` } } };

function responseOf(status: number, response: RouteResponse, named: ReadonlySet<string>): JsonSchema {
  const content =
    response.json !== undefined
      ? { "application/json": { schema: jsonSchemaOf(response.json, "output", named) } }
      : response.media !== undefined
        ? Object.fromEntries(Object.entries(response.media).map(([type, schema]) => [type, { schema }]))
        : status >= 400
          ? ERROR_CONTENT
          : undefined;
  return {
    description: response.description,
    ...(response.headers === undefined ? {} : { headers: response.headers }),
    ...(content === undefined ? {} : { content }),
  };
}

/** The answers any route of its kind may give besides its own: no key, the wrong key, the queue out of reach. */
function commonResponses(route: ApiRoute): Record<number, RouteResponse> {
  const common: Record<number, RouteResponse> = {};
  if (route.access !== "open") common[401] = { description: "authentication is on and no key, or an unknown or revoked key, was given" };
  if (route.access === "admin") common[403] = { description: "a user key: this needs the admin key" };
  if (route.access === "metrics") common[403] = { description: "a user key: this needs the admin or metrics key" };
  if (route.usesQueue !== false) {
    common[503] = {
      description: "the site's queue cannot be reached right now (restarting, or a standby taking over): retry",
      headers: { "Retry-After": { description: "seconds", schema: { type: "integer" } } },
    };
  }
  return common;
}

function operationOf(route: ApiRoute, named: ReadonlySet<string>): JsonSchema {
  const responses = { ...commonResponses(route), ...route.responses };
  const parameters = [
    ...parametersOf(route.pathParams, "path", named),
    ...parametersOf(route.query, "query", named),
    ...parametersOf(route.headers, "header", named),
  ];
  const requestBody = requestBodyOf(route, named);
  return {
    operationId: route.operationId,
    summary: route.summary,
    ...(route.description === undefined ? {} : { description: route.description }),
    tags: route.tags,
    ...(route.access === "open" ? { security: [] } : {}),
    ...(parameters.length === 0 ? {} : { parameters }),
    ...(requestBody === undefined ? {} : { requestBody }),
    responses: Object.fromEntries(
      Object.entries(responses)
        .sort(([a], [b]) => Number(a) - Number(b))
        .map(([status, response]) => [status, responseOf(Number(status), response, named)]),
    ),
  };
}

/** The document for `routes` (the whole API by default). */
export function openApiDocument(version: string, routes: readonly ApiRoute[] = API_ROUTES): JsonSchema {
  // Referenced by every error answer; named in response-schemas.ts (imported here so it is registered).
  void ErrorBodySchema;
  const components = namedSchemas();
  const named: ReadonlySet<string> = new Set(Object.keys(components));
  const paths: Record<string, JsonSchema> = {};
  for (const route of routes) {
    const path = (paths[route.path] ??= {});
    if (path[route.method] !== undefined) throw new Error(`the route table has ${route.method.toUpperCase()} ${route.path} twice`);
    path[route.method] = operationOf(route, named);
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "docq",
      version,
      description:
        "A document-processing task queue: submit a document, run a job script on it, fetch the result. " +
        "With DOCQ_ADMIN_KEY set, every route but the open ones needs `Authorization: Bearer <key>`; errors answer `{error, field}`.",
    },
    paths,
    security: [{ bearer: [] }],
    components: {
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", description: "the admin key, a user key, or the metrics key (/metrics)" },
      },
      schemas: tidy(components, named),
    },
  };
}
