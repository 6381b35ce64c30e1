/**
 * Explorer configurations: a scenario (host, one VM, a setup timeline) plus `actors` — concurrent
 * threads, each a list of scenario steps run one after another (a vCPU's accesses, a VMM thread's
 * memslot ioctls, host mm events, guest CR0/MTRR writes, device DMA) — and `bounds`. Parsed from YAML;
 * every error is one line `file:line:col: where: what` (the scenario part through the scenario parser,
 * which sees the same text with the explorer keys blanked out, so positions stay exact).
 * Model-only file (no kernel counterpart).
 */
import { readFileSync, existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parseYamlDoc } from '../scenario/yaml_doc.ts';
import { isMap, isSeq, isPair, isScalar, type Node, type Document } from 'yaml';
import { z } from 'zod';
import { parseScenario } from '../scenario/parse.ts';
import { STEP_SCHEMAS, num, type Scenario, type Step } from '../scenario/schema.ts';

/** Step kinds an actor may run (each a scenario step kind). */
export const ACTOR_STEP_KINDS = [
  'access',
  'delete',
  'move',
  'flags',
  'create',
  'host',
  'dirtyLog',
  'attributes',
  'punchHole',
  'accept',
  'cr0',
  'mtrr',
  'pat',
  'dma',
] as const;
type ActorStepKind = (typeof ACTOR_STEP_KINDS)[number];

const boundsSchema = z.strictObject({
  /** cut an execution after this many steps */
  steps: num.optional(),
  /** at most this many preemptions per execution */
  preemptions: num.optional(),
  /** at most this many executions */
  executions: num.optional(),
});

const actorSchema = z.strictObject({
  /** the column name in race diagrams */
  name: z.string().min(1),
  /** the vCPU whose accesses/CR0/MTRR writes these are (default 0) */
  vcpu: num.optional(),
  steps: z.array(z.record(z.string(), z.unknown())).min(1),
});

export type Bounds = z.output<typeof boundsSchema>;
export interface ActorDecl {
  name: string;
  vcpu: number;
  steps: Step[];
}
export interface ExploreConfig {
  name: string;
  description: string;
  scenario: Scenario;
  actors: ActorDecl[];
  bounds: Bounds;
  file: string;
}

export type ConfigResult = { ok: true; config: ExploreConfig } | { ok: false; error: string };

class ConfigError extends Error {
  constructor(
    readonly path: (string | number)[],
    message: string,
  ) {
    super(message);
  }
}

/** Parse and validate an explorer configuration. Never throws on bad input. */
export function parseExploreConfig(text: string, file: string): ConfigResult {
  const y = parseYamlDoc(text, file);
  if (!y.ok) return y;
  const { doc, where } = y;
  if (!isMap(doc.contents))
    return { ok: false, error: `${where(0)}: (top level): expected a mapping with name, vms, actors` };
  // The scenario parser sees the text without the explorer's keys (blanked, so offsets are unchanged).
  let scText = text;
  for (const key of ['actors', 'bounds']) {
    const pair = doc.contents.items.find((p) => isScalar(p.key) && p.key.value === key);
    if (pair === undefined) continue;
    const from = (pair.key as Node).range![0];
    const to = (pair.value as Node | null)?.range?.[2] ?? (pair.key as Node).range![2];
    scText = scText.slice(0, from) + scText.slice(from, to).replace(/[^\n]/g, ' ') + scText.slice(to);
  }
  const sc = parseScenario(scText.includes('timeline') ? scText : scText + '\ntimeline: []\n', file);
  if (!sc.ok) return sc;
  try {
    return { ok: true, config: validate(doc.toJS() as Record<string, unknown>, sc.scenario, file) };
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const node = nodeAt(doc, e.path);
    return {
      ok: false,
      error: `${where(node?.range?.[0] ?? 0)}: ${e.path.join('.') || '(top level)'}: ${e.message}`,
    };
  }
}

function zodFail(path: (string | number)[], err: z.ZodError): never {
  const issue = err.issues[0]!;
  throw new ConfigError(
    [...path, ...issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p))],
    issue.message,
  );
}

function validate(raw: Record<string, unknown>, scenario: Scenario, file: string): ExploreConfig {
  if (scenario.vms.length !== 1)
    throw new ConfigError(['vms'], `the explorer runs one VM (got ${scenario.vms.length})`);
  const vm = scenario.vms[0]!;
  const vcpus = vm.vcpus ?? 1;
  const regions = new Set(vm.regions.map((r) => r.name));
  if (!Array.isArray(raw['actors']) || raw['actors'].length === 0)
    throw new ConfigError(
      raw['actors'] === undefined ? [] : ['actors'],
      'expected actors: a list of at least one actor',
    );
  const names = new Set<string>();
  const actors = raw['actors'].map((a: unknown, i: number): ActorDecl => {
    const r = actorSchema.safeParse(a);
    if (!r.success) zodFail(['actors', i], r.error);
    if (names.has(r.data.name))
      throw new ConfigError(['actors', i, 'name'], `duplicate actor name '${r.data.name}'`);
    names.add(r.data.name);
    const vcpu = r.data.vcpu ?? 0;
    if (vcpu >= vcpus)
      throw new ConfigError(['actors', i, 'vcpu'], `vCPU ${vcpu} does not exist (the VM has ${vcpus})`);
    const steps = r.data.steps.map((s, j) => actorStep(s, ['actors', i, 'steps', j], regions));
    return { name: r.data.name, vcpu, steps };
  });
  const b = boundsSchema.safeParse(raw['bounds'] ?? {});
  if (!b.success) zodFail(['bounds'], b.error);
  return {
    name: scenario.name,
    description: scenario.description ?? '',
    scenario,
    actors,
    bounds: b.data,
    file,
  };
}

function actorStep(s: Record<string, unknown>, path: (string | number)[], regions: Set<string>): Step {
  const kind = ACTOR_STEP_KINDS.find((k) => k in s);
  if (kind === undefined)
    throw new ConfigError(
      path,
      `expected one of the step kinds ${ACTOR_STEP_KINDS.join(', ')} (got ${Object.keys(s).join(', ') || 'nothing'})`,
    );
  const schema = STEP_SCHEMAS[kind as ActorStepKind] as z.ZodType;
  const r = schema.safeParse(s);
  if (!r.success) zodFail(path, r.error);
  const step = r.data as Record<string, unknown>;
  const v = step[kind];
  const region =
    typeof v === 'string'
      ? v
      : typeof v === 'object' && v !== null
        ? (v as { region?: unknown }).region
        : undefined;
  if (typeof region === 'string' && kind !== 'dma' && !regions.has(region))
    throw new ConfigError([...path, kind], `unknown region '${region}' (has: ${[...regions].join(', ')})`);
  if ('vm' in step) throw new ConfigError([...path, 'vm'], "actors run on the configuration's one VM");
  return step as Step;
}

/** The YAML node at a path (the deepest one that exists). */
function nodeAt(doc: Document, path: (string | number)[]): Node | null {
  let node: unknown = doc.contents;
  let last: Node | null = node as Node;
  for (const key of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === key);
      if (pair === undefined) return last;
      node = pair.value;
    } else if (isSeq(node) && typeof key === 'number') node = node.items[key];
    else return last;
    if (node !== null && node !== undefined) last = node as Node;
  }
  return last;
}

export const EXPLORE_LIBRARY_DIR = fileURLToPath(new URL('./library/', import.meta.url));

/** The library's configuration names (file names without .yaml). */
export function exploreLibraryNames(): string[] {
  return readdirSync(EXPLORE_LIBRARY_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => f.slice(0, -5))
    .sort();
}

/** A library name or a path → parsed configuration. */
export function loadExploreConfig(nameOrPath: string): ConfigResult {
  const lib = join(EXPLORE_LIBRARY_DIR, `${nameOrPath}.yaml`);
  const file = existsSync(nameOrPath) ? nameOrPath : existsSync(lib) ? lib : null;
  if (file === null)
    return {
      ok: false,
      error: `${nameOrPath}: no such file or library configuration (library: ${exploreLibraryNames().join(', ')})`,
    };
  return parseExploreConfig(readFileSync(file, 'utf8'), file);
}
