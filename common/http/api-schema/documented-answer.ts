import { z } from "zod";

/*
 * Reads an answer's schema back out of a served OpenAPI document, as a zod schema (zod's JSON
 * Schema reader), so a test can hold what the API really sent to what its document says.
 */

interface DocumentShape {
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema?: unknown }> }> }>>;
  components: { schemas: Record<string, unknown> };
}

/** The JSON answer `method path` documents for `status`, its references to components resolved; throws when it documents none. */
export function documentedAnswer(document: unknown, method: string, path: string, status: number): z.ZodType {
  const doc = document as DocumentShape;
  const schema = doc.paths[path]?.[method.toLowerCase()]?.responses[String(status)]?.content?.["application/json"]?.schema;
  if (schema === undefined) throw new Error(`the document has no JSON answer ${status} for ${method.toUpperCase()} ${path}`);
  return documentedSchema(doc, schema as Record<string, unknown>);
}

/** A schema of the document (e.g. `{$ref: "#/components/schemas/Task"}`) as a zod schema. */
export function documentedSchema(document: unknown, schema: Record<string, unknown>): z.ZodType {
  const doc = document as DocumentShape;
  const standalone = JSON.stringify({ ...schema, $defs: doc.components.schemas }).replaceAll("#/components/schemas/", "#/$defs/");
  return z.fromJSONSchema(JSON.parse(standalone) as Parameters<typeof z.fromJSONSchema>[0]);
}
