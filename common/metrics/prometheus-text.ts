/**
 * Reads Prometheus text exposition into its samples, for tests and tools that check figures:
 * `name{a="x",b="y"}` (labels in name order, as `sampleKey` writes them) to value. Comments and
 * blank lines are skipped; a line that is not a sample throws, naming it.
 */
export function parsePrometheusText(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.trim() === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (match === null) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`);
    const [, name = "", labelText = "", value = ""] = match;
    const labels: Record<string, string> = {};
    for (const label of labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[label[1] ?? ""] = (label[2] ?? "").replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    }
    samples.set(sampleKey(name, labels), Number(value));
  }
  return samples;
}

/** The key of a sample in parsePrometheusText's map. */
export function sampleKey(name: string, labels: Record<string, string | number> = {}): string {
  const names = Object.keys(labels).sort();
  if (names.length === 0) return name;
  return `${name}{${names.map((n) => `${n}="${String(labels[n])}"`).join(",")}}`;
}
