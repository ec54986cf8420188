/*
 * A store's URL as logs and errors may show it: scheme and hosts, no user, password or options.
 * Apart from the adapters, so naming an endpoint does not load a database driver.
 */

/** A MongoDB URL without credentials or options. */
export function redactUrl(url: string): string {
  const match = /^(mongodb(?:\+srv)?:\/\/)(?:[^@/?]*@)?([^/?]*)/.exec(url);
  return match === null ? "(unparsable URL)" : `${match[1]}${match[2]}`;
}

/** A PostgreSQL URL without credentials or options. */
export function redactPostgresUrl(url: string): string {
  const match = /^(postgres(?:ql)?:\/\/)(?:[^@/?]*@)?([^?]*)/i.exec(url);
  return match === null ? "(unparsable URL)" : `${match[1]}${match[2]}`;
}
