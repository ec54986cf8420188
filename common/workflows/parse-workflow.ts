import { z } from "zod";
import { formatZodIssues } from "../model/zod-issues.js";
import { STEP_NAME_PATTERN, WorkflowStepSchema, type WorkflowDefinition, type WorkflowStep } from "./workflow-definition.js";

/*
 * job.yaml `workflow:` into a checked WorkflowDefinition. Everything that can be checked from the
 * file alone is checked here (arrow lines, unknown steps, cycles, the one final step); that the
 * steps' jobs exist is the registry's check (it knows the other jobs).
 */

/** A refusal of a workflow definition: the message names the flow line or the step at fault. */
export class WorkflowDefinitionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WorkflowDefinitionError";
  }
}

/** A step as job.yaml writes it: its name is its key. */
const StepYamlSchema = WorkflowStepSchema.omit({ name: true });

const WorkflowYamlSchema = z.strictObject({
  steps: z.record(z.string(), StepYamlSchema),
  // Items are checked one by one below, so a line YAML did not read as a string is named by its number.
  flow: z.array(z.unknown()).optional(),
});

/** The definition, and the flow lines as written (GET /api/jobs shows them). */
export interface ParsedWorkflow {
  definition: WorkflowDefinition;
  flow: string[];
}

const ARROW = "->";

/** One flow line: its groups of step names, left to right (`a -> [b, c] -> d` is [[a], [b, c], [d]]). */
function parseArrowLine(line: string): string[][] {
  const parts = line.split(ARROW).map((part) => part.trim());
  if (parts.length < 2) throw new Error(`no "${ARROW}": write "a -> b", "[a, b] -> c" or "a -> b -> c"`);
  return parts.map((part, i) => {
    if (part === "") throw new Error(`a step name is missing ${i === 0 ? "before the first" : "after an"} "${ARROW}"`);
    let names: string[];
    if (part.startsWith("[") || part.endsWith("]")) {
      if (!part.startsWith("[") || !part.endsWith("]")) throw new Error(`unbalanced brackets in "${part}"`);
      names = part
        .slice(1, -1)
        .split(",")
        .map((name) => name.trim());
      if (names.some((name) => name === "")) throw new Error(`an empty name in "${part}": write "[a, b]"`);
    } else {
      names = [part];
    }
    for (const name of names) {
      if (!STEP_NAME_PATTERN.test(name)) throw new Error(`"${name}" is not a step name (letters a-z, digits, _ and -)`);
    }
    const twice = names.find((name, j) => names.indexOf(name) !== j);
    if (twice !== undefined) throw new Error(`step "${twice}" is written twice in "${part}"`);
    return names;
  });
}

/** Parses and checks job.yaml's `workflow:` value. Throws WorkflowDefinitionError naming the line or step at fault. */
export function parseWorkflow(raw: unknown): ParsedWorkflow {
  const parsed = WorkflowYamlSchema.safeParse(raw);
  if (!parsed.success) throw new WorkflowDefinitionError(`workflow: ${formatZodIssues(parsed.error.issues)}`);
  const { steps: stepsYaml, flow: rawFlow = [] } = parsed.data;

  const names = Object.keys(stepsYaml);
  if (names.length === 0) throw new WorkflowDefinitionError("workflow.steps: at least one step is needed");
  for (const name of names) {
    if (!STEP_NAME_PATTERN.test(name)) {
      throw new WorkflowDefinitionError(`workflow.steps: "${name}" is not a step name: it must match ${String(STEP_NAME_PATTERN)}`);
    }
    // JavaScript puts integer-like keys first, whatever the order written: the steps' order would be lost.
    if (/^[0-9]+$/.test(name)) throw new WorkflowDefinitionError(`workflow.steps: "${name}": a step name must not be only digits`);
  }
  const steps: WorkflowStep[] = names.map((name) => ({ name, ...stepsYaml[name]! }));

  const known = new Set(names);
  const upstreams = new Map<string, string[]>(names.map((name) => [name, []]));
  const downstreams = new Map<string, string[]>(names.map((name) => [name, []]));
  /** The line (1-based) that wrote each edge "from\0to". */
  const edgeLine = new Map<string, number>();
  const mentioned = new Set<string>();
  const flow: string[] = [];

  rawFlow.forEach((item, index) => {
    const n = index + 1;
    if (typeof item !== "string") {
      throw new WorkflowDefinitionError(
        `flow line ${n}: not a text line (YAML read ${Array.isArray(item) ? "a list" : typeof item}): quote it, e.g. - "[a, b] -> c"`,
      );
    }
    flow.push(item);
    const at = `flow line ${n} "${item}"`;
    let groups: string[][];
    try {
      groups = parseArrowLine(item);
    } catch (err) {
      throw new WorkflowDefinitionError(`${at}: ${(err as Error).message}`);
    }
    for (const name of groups.flat()) {
      if (!known.has(name)) throw new WorkflowDefinitionError(`${at}: unknown step "${name}" (the steps are ${names.join(", ")})`);
      mentioned.add(name);
    }
    for (let g = 0; g + 1 < groups.length; g++) {
      for (const to of groups[g + 1]!) {
        for (const from of groups[g]!) {
          if (from === to) throw new WorkflowDefinitionError(`${at}: cycle: ${from} -> ${from}`);
          const key = `${from}\0${to}`;
          const earlier = edgeLine.get(key);
          if (earlier !== undefined) {
            const where = earlier === n ? "twice in this line" : `already in flow line ${earlier}`;
            throw new WorkflowDefinitionError(`${at}: ${from} -> ${to} is written ${where}`);
          }
          edgeLine.set(key, n);
          upstreams.get(to)!.push(from);
          downstreams.get(from)!.push(to);
        }
      }
    }
  });

  if (names.length > 1) {
    const lone = names.filter((name) => !mentioned.has(name));
    if (lone.length > 0) {
      throw new WorkflowDefinitionError(
        `workflow: step${lone.length > 1 ? "s" : ""} ${lone.map((s) => `"${s}"`).join(", ")} in no flow line: every step of a workflow of several steps must be linked`,
      );
    }
  }

  const cycle = findCycle(names, downstreams);
  if (cycle !== null) {
    const closing = edgeLine.get(`${cycle.at(-2)!}\0${cycle.at(-1)!}`)!;
    throw new WorkflowDefinitionError(`flow line ${closing} "${flow[closing - 1]!}": cycle: ${cycle.join(" -> ")}`);
  }

  const finals = names.filter((name) => downstreams.get(name)!.length === 0);
  if (finals.length !== 1) {
    // A DAG has at least one step with no downstream, so this is two or more.
    throw new WorkflowDefinitionError(
      `workflow: ${finals.length} final steps (${finals.join(", ")}): the workflow's output is its one last step's; join them, e.g. "[${finals.join(", ")}] -> <a last step>"`,
    );
  }

  return { definition: { steps, upstreams: Object.fromEntries(upstreams), final: finals[0]! }, flow };
}

/** A cycle as its steps, the first repeated at the end (`a -> b -> a`), or null when there is none. */
function findCycle(names: readonly string[], downstreams: ReadonlyMap<string, readonly string[]>): string[] | null {
  const done = new Set<string>();
  const path: string[] = [];
  const onPath = new Set<string>();
  const visit = (name: string): string[] | null => {
    if (onPath.has(name)) return [...path.slice(path.indexOf(name)), name];
    if (done.has(name)) return null;
    path.push(name);
    onPath.add(name);
    for (const next of downstreams.get(name) ?? []) {
      const cycle = visit(next);
      if (cycle !== null) return cycle;
    }
    path.pop();
    onPath.delete(name);
    done.add(name);
    return null;
  };
  for (const name of names) {
    const cycle = visit(name);
    if (cycle !== null) return cycle;
  }
  return null;
}
