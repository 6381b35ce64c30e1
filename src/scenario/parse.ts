/**
 * Scenario parsing: YAML or JSON text → a validated Scenario, or one error of the form
 * `file:line:col: where: what was expected`. Never throws on bad input (the CLI prints the message and
 * exits non-zero). Positions come from yaml's LineCounter; zod issue paths are mapped back to nodes.
 *
 * Order: YAML syntax → "$param" substitution → the document's shape (zod) → each step by its kind →
 * cross-references (region and VM names, vCPU ids) → the memory layout (no two initially-present
 * regions of one address space may overlap; duplicate slot ids).
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
import { MAX_FRAMES_PER_MAPPING } from '../host/host_mm.ts';

/** Bytes per frame of each backing, and the most one region may have (the host mappings start at 1 TiB and end at 2^47). */
const FRAME_BYTES = { '4k': 4096, '2m': 2 ** 21, '1g': 2 ** 30, thp: 2 ** 21 } as const;
const MAX_REGION_BYTES = 2 ** 47 - 2 ** 40;

export type ParseResult = { ok: true; scenario: Scenario } | { ok: false; error: string };
type Path = (string | number)[];
type Param = string | number | boolean;

class ScenarioError extends Error {
  constructor(
    readonly path: Path,
    message: string,
    readonly atKey = false,
  ) {
    super(message);
  }
}

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
  const { doc, where } = y;
  const fromFlag = new Map<string, string>();
  try {
    return { ok: true, scenario: validate(doc.toJS(), params, opts.maxSteps ?? DEFAULT_MAX_STEPS, fromFlag) };
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
  // The schema's own message when it names what it wants (numbers, u64s); otherwise the expected type.
  if (issue.code === 'custom' || field === undefined) return fail(path, issue.message);
  return fail(path, `expected ${typeOf(field)}; got ${shortJson(value)}`);
}

const shortJson = (v: unknown): string => {
  const t = JSON.stringify(v) ?? String(v);
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

function fail(path: Path, message: string, atKey = false): never {
  throw new ScenarioError(path, message, atKey);
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

/** Refuse a timeline past the limit, pointing at the top-level step that contributes most. */
function checkStepCount(timeline: Step[], maxSteps: number): void {
  const total = countSteps(timeline);
  if (total <= maxSteps) return;
  let worst = 0;
  timeline.forEach((s, i) => {
    if (countSteps([s]) > countSteps([timeline[worst]!])) worst = i;
  });
  const n = countSteps([timeline[worst]!]);
  fail(
    ['timeline', worst],
    `the timeline unrolls to ${fmtCount(total)} steps (this step: ${fmtCount(n)}), more than the limit of ${fmtCount(maxSteps)}; raise it with --max-steps if you mean it`,
  );
}

const fmtCount = (n: number): string =>
  Number.isFinite(n) && n < 1e15 ? n.toLocaleString('en-US') : n.toExponential(2);

/** Duplicate names and slot ids, and overlapping initially-present regions, are layout errors. */
function checkLayout(sc: Scenario): void {
  sc.vms.forEach((vm, v) => {
    const seen = new Map<string, number>();
    const slots = new Map<string, string>();
    vm.regions.forEach((r, i) => {
      const at: Path = ['vms', v, 'regions', i];
      if (seen.has(r.name)) fail([...at, 'name'], `duplicate region name '${r.name}'`);
      seen.set(r.name, i);
      if (r.size === 0 || r.size % 4096 !== 0)
        fail([...at, 'size'], `size must be a non-zero multiple of 4K (got 0x${r.size.toString(16)})`);
      if (r.gpa % 4096 !== 0) fail([...at, 'gpa'], `gpa must be 4K-aligned (got 0x${r.gpa.toString(16)})`);
      const frames = r.size / FRAME_BYTES[r.backing ?? '4k'];
      if (r.size > MAX_REGION_BYTES || frames > MAX_FRAMES_PER_MAPPING)
        fail(
          [...at, 'size'],
          `size 0x${r.size.toString(16)} is more than the model's host can map at ${r.backing ?? '4k'} backing (at most 0x${Math.min(MAX_REGION_BYTES, MAX_FRAMES_PER_MAPPING * FRAME_BYTES[r.backing ?? '4k']).toString(16)} bytes; a 2m, 1g or thp backing maps more)`,
        );
      if (r.slot !== undefined) {
        const key = `${r.as ?? 0}:${r.slot}`;
        if (slots.has(key))
          fail([...at, 'slot'], `slot ${r.slot} already used by region '${slots.get(key)}'`);
        slots.set(key, r.name);
      }
      if (r.present === false) return;
      for (let j = 0; j < i; j++) {
        const o = vm.regions[j]!;
        if (o.present === false || (o.as ?? 0) !== (r.as ?? 0)) continue;
        if (r.gpa < o.gpa + o.size && o.gpa < r.gpa + r.size) {
          fail(
            at,
            `overlapping memory layout: '${r.name}' [0x${r.gpa.toString(16)}, 0x${(r.gpa + r.size).toString(16)}) overlaps '${o.name}' [0x${o.gpa.toString(16)}, 0x${(o.gpa + o.size).toString(16)}) (mark one 'present: false' if the timeline swaps them)`,
          );
        }
      }
    });
  });
}

interface Names {
  devices: Set<string>;
  containers: Set<string>;
  iommus: Set<string>;
}

/** VFIO devices and containers are declared by timeline steps (anywhere), IOMMU units under host. */
function declaredNames(sc: Scenario): Names {
  const n: Names = {
    devices: new Set(),
    containers: new Set(),
    iommus: new Set(['default', ...(sc.host?.iommus ?? []).map((u) => u.name)]),
  };
  const walk = (list: Step[]): void => {
    for (const s of list) {
      if ('repeat' in s) walk(s.steps);
      if ('vfioDevice' in s) n.devices.add(s.vfioDevice);
      if ('vfioContainer' in s) n.containers.add(s.vfioContainer);
    }
  };
  walk(sc.timeline);
  return n;
}

/** Steps must name existing VMs, regions, vCPUs, VFIO devices and containers, IOMMU units. */
function checkRefs(sc: Scenario, list: Step[], base: Path, names: Names): void {
  list.forEach((s, i) => {
    const at: Path = [...base, i];
    const vm = s.vm === undefined ? sc.vms[0]! : sc.vms.find((v) => v.name === s.vm);
    if (!vm)
      fail(
        [...at, 'vm'],
        `unknown VM '${s.vm}' (declared: ${sc.vms.map((v) => v.name ?? '(unnamed)').join(', ')})`,
      );
    const region = (name: string | undefined, p: Path): void => {
      if (name !== undefined && !vm.regions.some((r) => r.name === name))
        fail(p, `unknown region '${name}' (declared: ${vm.regions.map((r) => r.name).join(', ')})`);
    };
    if ('repeat' in s) return checkRefs(sc, s.steps, [...at, 'steps'], names);
    const known = (set: Set<string>, what: string, name: string | undefined, p: Path): void => {
      if (name !== undefined && !set.has(name))
        fail(p, `unknown ${what} '${name}' (declared: ${[...set].join(', ') || 'none'})`);
    };
    const vcpuIds = (ids: 'all' | number[] | undefined, p: Path): void => {
      if (!Array.isArray(ids)) return;
      const n = vm.vcpus ?? 1;
      ids.forEach((id, k) => {
        if (id >= n) fail([...p, k], `vCPU ${id} does not exist (the VM has ${n})`);
      });
    };
    if ('vfioDevice' in s) {
      known(names.iommus, 'IOMMU unit', s.iommu, [...at, 'iommu']);
      known(names.devices, 'VFIO device', s.group, [...at, 'group']);
    }
    if ('vfioGroup' in s) {
      known(names.devices, 'VFIO device', s.vfioGroup, [...at, 'vfioGroup']);
      known(names.containers, 'VFIO container', s.container, [...at, 'container']);
      if (s.unset !== true && s.container === undefined)
        fail(at, "vfioGroup needs 'container' (or 'unset: true')");
    }
    if ('vfioIommu' in s) known(names.containers, 'VFIO container', s.vfioIommu, [...at, 'vfioIommu']);
    if ('kvmVfio' in s) known(names.devices, 'VFIO device', s.kvmVfio, [...at, 'kvmVfio']);
    if ('mapDma' in s) {
      known(names.containers, 'VFIO container', s.mapDma.container, [...at, 'mapDma', 'container']);
      region(s.mapDma.region, [...at, 'mapDma', 'region']);
    }
    if ('unmapDma' in s) {
      known(names.containers, 'VFIO container', s.unmapDma.container, [...at, 'unmapDma', 'container']);
      region(s.unmapDma.region, [...at, 'unmapDma', 'region']);
    }
    if ('dma' in s) {
      known(names.devices, 'VFIO device', s.dma.device, [...at, 'dma', 'device']);
      region(s.dma.region, [...at, 'dma', 'region']);
    }
    if ('cr0' in s) vcpuIds(s.cr0.vcpus, [...at, 'cr0', 'vcpus']);
    if ('pat' in s) vcpuIds(s.pat.vcpus, [...at, 'pat', 'vcpus']);
    if ('mtrr' in s) {
      vcpuIds(s.mtrr.vcpus, [...at, 'mtrr', 'vcpus']);
      s.mtrr.var?.forEach((r, k) => {
        const p = [...at, 'mtrr', 'var', k];
        region(r.region, [...p, 'region']);
        if (r.index >= 8) fail([...p, 'index'], `variable MTRR ${r.index} does not exist (KVM has 8)`);
        const hasRange = r.region !== undefined || (r.base !== undefined && r.size !== undefined);
        if (r.off !== true && (!hasRange || r.type === undefined))
          fail(p, "a variable MTRR needs 'type' and either 'region' or 'base' and 'size' (or 'off: true')");
      });
    }
    if ('guestPaging' in s) {
      const g = s.guestPaging;
      region(g.tables, [...at, 'guestPaging', 'tables']);
      g.map.forEach((r, k) => region(r, [...at, 'guestPaging', 'map', k]));
      vcpuIds(g.vcpus, [...at, 'guestPaging', 'vcpus']);
      const shadowPaging =
        sc.host?.tdp === false || (sc.host?.profile === 'pvm-6.18' && sc.host.tdp !== true);
      if (!shadowPaging)
        fail(
          [...at, 'guestPaging'],
          'guest page tables need shadow paging (host: { tdp: false } or profile pvm-6.18)',
        );
    }
    if ('create' in s) region(s.create, [...at, 'create']);
    if ('delete' in s) region(s.delete, [...at, 'delete']);
    if ('delete' in s && s.whileInvalid) region(s.whileInvalid.region, [...at, 'whileInvalid', 'region']);
    if ('move' in s) region(s.move, [...at, 'move']);
    if ('flags' in s) region(s.flags, [...at, 'flags']);
    if ('dirtyLog' in s) region(s.dirtyLog, [...at, 'dirtyLog']);
    if ('memslot' in s) region(s.memslot.region, [...at, 'memslot', 'region']);
    if ('host' in s) region(s.host.region, [...at, 'host', 'region']);
    if ('attributes' in s) region(s.attributes.region, [...at, 'attributes', 'region']);
    if ('accept' in s) {
      region(s.accept.region, [...at, 'accept', 'region']);
      vcpuIds(s.accept.vcpus, [...at, 'accept', 'vcpus']);
    }
    if ('punchHole' in s) {
      region(s.punchHole.region, [...at, 'punchHole', 'region']);
      if (!vm.regions.find((r) => r.name === s.punchHole.region)!.private)
        fail(
          [...at, 'punchHole', 'region'],
          `region '${s.punchHole.region}' has no guest_memfd (declare it private: true)`,
        );
    }
    if ('access' in s) {
      region(s.access.region, [...at, 'access', 'region']);
      const n = vm.vcpus ?? 1;
      const ids = s.access.vcpus;
      if (Array.isArray(ids)) {
        ids.forEach((id, k) => {
          if (id >= n) fail([...at, 'access', 'vcpus', k], `vCPU ${id} does not exist (the VM has ${n})`);
        });
      }
    }
  });
}

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
