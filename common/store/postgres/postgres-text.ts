/*
 * PostgreSQL refuses the character U+0000 in text (and its escape \u0000 in jsonb), which a job
 * script's stderr can hold. A refused write would leave a task unrecordable (a step that can
 * never end its attempt), so the store writes it as U+FFFD, the replacement character, instead.
 */

const NUL = "\u0000";
const REPLACEMENT = "\uFFFD";

/** `text` with every U+0000 replaced. */
export function pgText(text: string): string {
  return text.includes(NUL) ? text.replaceAll(NUL, REPLACEMENT) : text;
}

/** JSON for a jsonb column: the strings inside (not the keys: docq's are its own) without U+0000. */
export function pgJson(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) => (typeof inner === "string" ? pgText(inner) : inner));
}

/** JSON for a jsonb column, or null. */
export function pgJsonOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : pgJson(value);
}

/** A statement's values: strings, and strings in arrays, without U+0000. */
export function pgValues(values: readonly unknown[]): unknown[] {
  return values.map((value) =>
    typeof value === "string"
      ? pgText(value)
      : Array.isArray(value)
        ? value.map((v: unknown) => (typeof v === "string" ? pgText(v) : v))
        : value,
  );
}
