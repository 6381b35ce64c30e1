/**
 * Scenario parsing: YAML or JSON text → a validated Scenario, or one error of the form
 * `file:line:col: where: what was expected`. Never throws on bad input (the CLI prints the message and
 * exits non-zero). Positions come from yaml's LineCounter; zod issue paths are mapped back to nodes.
 *
 * Order: YAML syntax → "$param" substitution → the document's shape (zod) → each step by its kind →
 * cross-references (region and VM names, vCPU ids) → the memory layout (no two initially-present
 * regions of one address space may overlap; duplicate slot ids). The checks after the shape are
 * parse_checks.ts; this file reads the YAML, substitutes parameters, maps zod issues to messages and
 * positions.
 */
import { parseYamlDoc } from './yaml_doc.ts';
import { isMap, isSeq, isPair, isScalar, type Node } from 'yaml';
import { toJSONSchema, type z } from 'zod';
import { typeOf, type Json } from './json_schema.ts';
import {
  scenarioSchema,
  STEP_SCHEMAS,
  STEP_KINDS,
  type Scenario,
  type Step,
  type StepKind,
} from './schema.ts';
import {
  checkLayout,
  checkRefs,
  checkStepCount,
  declaredNames,
  fail,
  ScenarioError,
  type Path,
} from './parse_checks.ts';

export type ParseResult = { ok: true; scenario: Scenario } | { ok: false; error: string };
type Param = string | number | boolean;

import { DEFAULT_MAX_STEPS } from './limits.ts';
import { countSteps } from './step_kinds.ts';
export { DEFAULT_MAX_STEPS };

export interface ParseOptions {
  /** refuse a timeline that unrolls to more leaf steps than this (default DEFAULT_MAX_STEPS) */
  maxSteps?: number;
}

/** Parse and validate; `params` override the scenario's own `params` defaults. */
export function parseScenario(
  text: string,
  file: string,
  params: Record<string, string> = {},
  opts: ParseOptions = {},
): ParseResult {
  const y = parseYamlDoc(text, file);
  if (!y.ok) return y;
  const { doc, where, value } = y;
  const fromFlag = new Map<string, string>();
  try {
    return { ok: true, scenario: validate(value, params, opts.maxSteps ?? DEFAULT_MAX_STEPS, fromFlag) };
  } catch (e) {
    if (!(e instanceof ScenarioError)) throw e;
    const node = nodeAt(doc.contents, e.path, e.atKey);
    const at = e.path.length ? e.path.join('.') : '(top level)';
    const pos = `${where(node?.range?.[0] ?? 0)}: ${at}`;
    // A value that came from --param: the flag is what to fix, the file only says where it was used.
    const flag = [...fromFlag].find(([p]) => at === p || at.startsWith(`${p}.`));
    if (flag) return { ok: false, error: `-p ${flag[1]}=${params[flag[1]]}: ${e.message} (used at ${pos})` };
    return { ok: false, error: `${pos}: ${e.message}` };
  }
}

function validate(
  raw: unknown,
  overrides: Record<string, string>,
  maxSteps: number,
  fromFlag: Map<string, string>,
): Scenario {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ScenarioError([], 'expected a mapping with name, vms and timeline');
  const params: Record<string, Param> = {
    ...((raw as { params?: Record<string, Param> }).params ?? {}),
  };
  for (const [k, v] of Object.entries(overrides)) {
    if (!(k in params))
      throw new ScenarioError(
        ['params'],
        `unknown parameter '${k}' (has: ${Object.keys(params).join(', ') || 'none'})`,
      );
    params[k] = /^\d+$/.test(v) ? Number(v) : v === 'true' ? true : v === 'false' ? false : v;
  }
  const data = substitute(raw, params, [], (path, name) => {
    if (name in overrides) fromFlag.set(path.join('.'), name);
  });
  const top = zodParse(scenarioSchema, data, []);
  const scenario = { ...top, timeline: steps(top.timeline, ['timeline']) } as Scenario;
  checkStepCount(scenario.timeline, maxSteps);
  checkLayout(scenario);
  checkRefs(scenario, scenario.timeline, ['timeline'], declaredNames(scenario));
  return scenario;
}

/** Replace "$name" strings by parameter values (params itself is left alone). */
function substitute(
  v: unknown,
  params: Record<string, Param>,
  path: Path,
  used: (path: Path, name: string) => void,
): unknown {
  if (typeof v === 'string' && v.startsWith('$')) {
    const p = params[v.slice(1)];
    if (p === undefined)
      throw new ScenarioError(
        path,
        `unknown parameter ${v} (declared: ${Object.keys(params).join(', ') || 'none'})`,
      );
    used(path, v.slice(1));
    return p;
  }
  if (Array.isArray(v)) return v.map((x, i) => substitute(x, params, [...path, i], used));
  if (typeof v === 'object' && v !== null) {
    return Object.fromEntries(
      Object.entries(v).map(([k, x]) => [
        k,
        path.length === 0 && k === 'params' ? x : substitute(x, params, [...path, k], used),
      ]),
    );
  }
  return v;
}

function zodParse<T extends z.ZodType>(schema: T, data: unknown, base: Path): z.output<T> {
  const r = schema.safeParse(data);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const path = [...base, ...(issue.path as Path)];
  const json = jsonOf(schema);
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys;
    const allowed = Object.keys((jsonAt(json, issue.path as Path)?.['properties'] ?? {}) as object);
    return fail([...path, keys[0]!], `unknown key '${keys[0]}' (allowed: ${allowed.join(', ')})`, true);
  }
  const value = (issue.path as Path).reduce<unknown>(
    (o, k) => (o as Record<string | number, unknown> | undefined)?.[k],
    data,
  );
  const field = jsonAt(json, issue.path as Path);
  if ((issue.code === 'invalid_type' || issue.code === 'invalid_union') && value === undefined)
    return fail(path, `missing required field '${String(path.at(-1))}' (${typeOf(field)})`);
  // An empty list or string where at least one is needed (vms: [], name: ''): say so, not "expected
  // a list of mapping; got []", which is what was given.
  if (issue.code === 'too_small' && (Array.isArray(value) || typeof value === 'string'))
    return fail(
      path,
      Array.isArray(value)
        ? `expected at least ${String(issue.minimum)} ${Number(issue.minimum) === 1 ? 'entry' : 'entries'}; got ${shortJson(value)}`
        : `expected a non-empty string; got ${shortJson(value)}`,
    );
  // The schema's own message when it names what it wants (numbers, u64s); otherwise the expected type.
  if (issue.code === 'custom' || field === undefined) return fail(path, issue.message);
  return fail(path, `expected ${typeOf(field)}; got ${shortJson(value)}`);
}

const shortJson = (v: unknown): string => {
  // JSON has no Infinity or NaN (YAML's 1e400, .inf, .nan): JSON.stringify would print null
  const t = typeof v === 'number' && !Number.isFinite(v) ? String(v) : (JSON.stringify(v) ?? String(v));
  return t.length > 60 ? `${t.slice(0, 59)}…` : t;
};

const jsonCache = new WeakMap<z.ZodType, Json>();
function jsonOf(schema: z.ZodType): Json {
  let j = jsonCache.get(schema);
  if (j === undefined)
    jsonCache.set(schema, (j = toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Json));
  return j;
}

/** The JSON Schema node at a data path (through properties, items and union branches). */
function jsonAt(node: Json | undefined, path: Path): Json | undefined {
  for (const k of path) {
    if (node === undefined) return undefined;
    const branches = (node['anyOf'] as Json[] | undefined) ?? [node];
    node = undefined;
    for (const b of branches) {
      const next =
        typeof k === 'number'
          ? (b['items'] as Json | undefined)
          : ((b['properties'] as Record<string, Json> | undefined)?.[k] ??
            (b['additionalProperties'] as Json | undefined));
      if (next !== undefined && typeof next === 'object') {
        node = next;
        break;
      }
    }
  }
  return node;
}

function steps(list: unknown[], base: Path): Step[] {
  return list.map((s, i) => step(s, [...base, i]));
}

function step(s: unknown, path: Path): Step {
  if (typeof s !== 'object' || s === null || Array.isArray(s))
    fail(path, `expected a step mapping with one of: ${STEP_KINDS.join(', ')}`);
  const kinds = Object.keys(s).filter((k): k is StepKind => (STEP_KINDS as string[]).includes(k));
  if (kinds.length !== 1) {
    const what =
      kinds.length === 0
        ? `unknown step (keys: ${Object.keys(s).join(', ')})`
        : `ambiguous step (${kinds.join(' and ')})`;
    fail(path, `${what}; expected exactly one of: ${STEP_KINDS.join(', ')}`);
  }
  const kind = kinds[0]!;
  const parsed = zodParse(STEP_SCHEMAS[kind], s, path) as Step;
  if ('repeat' in parsed) return { ...parsed, steps: steps(parsed.steps as unknown[], [...path, 'steps']) };
  return parsed;
}

export { countSteps };

/** The YAML node at a path (the key node for unknown-key errors); the nearest ancestor if missing. */
function nodeAt(root: unknown, path: Path, atKey: boolean): Node | null {
  let n = root as Node | null;
  for (let i = 0; i < path.length; i++) {
    const k = path[i]!;
    if (isMap(n)) {
      const pair = n.items.find((it) => isPair(it) && isScalar(it.key) && it.key.value === k);
      if (!pair) break;
      n = (atKey && i === path.length - 1 ? pair.key : pair.value) as Node;
    } else if (isSeq(n) && typeof k === 'number' && n.items[k]) n = n.items[k] as Node;
    else break;
  }
  return n;
}
