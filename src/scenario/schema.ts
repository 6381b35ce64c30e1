/**
 * The scenario format: a YAML (or JSON) document declaring the host and kernel being modelled, the VMs
 * with a named memory layout, and a timeline of steps (memslot calls, guest access patterns, host mm
 * events, dirty-log and attribute calls, audit points, repeats). Validated by zod; the parser
 * (parse.ts) maps every issue back to file:line:col.
 *
 * Numbers are integers, "0x…" hex strings, or sizes with a binary suffix ("64K", "2M", "4G"); "$name"
 * anywhere refers to a `params` entry (resolved before validation, so every field can be scaled).
 * Not a kernel structure: a model-only file.
 */
import { z } from 'zod';
import { VM_TYPE_NAMES } from '../uapi/kvm_x86.ts';

const SUFFIX: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** "0x1000", "64K", 4096 → 4096; anything else is a validation issue naming what was expected. */
export const num = z.union([z.number(), z.string()]).transform((v, ctx): number => {
  let n = NaN;
  if (typeof v === 'number') n = v;
  else if (/^0x[0-9a-f_]+$/i.test(v)) n = parseInt(v.slice(2).replace(/_/g, ''), 16);
  else {
    const m = /^(\d+)([KMGT])i?B?$/i.exec(v) ?? /^(\d+)$/.exec(v);
    if (m) n = Number(m[1]) * (m[2] ? SUFFIX[m[2].toUpperCase()]! : 1);
  }
  if (!Number.isSafeInteger(n) || n < 0) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a non-negative integer, hex ("0x…") or size ("64K", "2M", "4G"); got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return n;
});

const vmType = z.union([z.enum(VM_TYPE_NAMES), z.number().int().min(0).max(5)]);
const backing = z.enum(['4k', '2m', '1g', 'thp']);

export const regionSchema = z.strictObject({
  name: z.string().min(1),
  gpa: num,
  size: num,
  backing: backing.optional(),
  /** Memslot id; assigned in declaration order when omitted. */
  slot: num.optional(),
  /** Address space: 1 is SMRAM (only with SMM and without private memory). */
  as: z.union([z.literal(0), z.literal(1)]).optional(),
  /** Backed by a guest_memfd (KVM_MEM_GUEST_MEMFD) as well as the hva. */
  private: z.boolean().optional(),
  readonly: z.boolean().optional(),
  logDirty: z.boolean().optional(),
  /** Create the slot when the VM is built (default true); false = the timeline creates it. */
  present: z.boolean().optional(),
});

const vmSchema = z.strictObject({
  name: z.string().min(1).optional(),
  type: vmType.optional(),
  vcpus: num.optional(),
  regions: z.array(regionSchema),
});

const common = { label: z.string().optional(), vm: z.string().optional() };
const pattern = {
  region: z.string(),
  offset: num.optional(),
  length: num.optional(),
  /** bytes between touched addresses (default 4096) */
  stride: num.optional(),
  /** touch this many random pages of the range (seeded) instead of all of them */
  workingSet: num.optional(),
  /** vCPU ids, or "all" (default: all, each touching the whole pattern) */
  vcpus: z.union([z.literal('all'), z.array(num)]).optional(),
  kind: z.enum(['read', 'write', 'exec']).optional(),
  private: z.boolean().optional(),
  passes: num.optional(),
  /** added to offset × the enclosing repeat's iteration index */
  eachOffset: num.optional(),
};

const hostEvent = z.enum(['munmap', 'mprotect', 'migrate', 'thpSplit', 'thpCollapse', 'swapOut', 'ksmMerge']);

/** One schema per step kind, keyed by the kind's distinguishing key; the parser picks by key so an
 * error names the right kind's expectations rather than a union's "invalid input". */
export const STEP_SCHEMAS = {
  create: z.strictObject({ ...common, create: z.string() }),
  delete: z.strictObject({ ...common, delete: z.string() }),
  move: z.strictObject({ ...common, move: z.string(), to: num }),
  flags: z.strictObject({
    ...common,
    flags: z.string(),
    logDirty: z.boolean().optional(),
    readonly: z.boolean().optional(),
  }),
  memslot: z.strictObject({
    ...common,
    memslot: z.strictObject({
      slot: num,
      as: z.union([z.literal(0), z.literal(1)]).optional(),
      gpa: num,
      size: num,
      flags: num.optional(),
      /** hva = this region's mapping + offset (default: no mapping, hva 0) */
      region: z.string().optional(),
      offset: num.optional(),
      /** added × the enclosing repeat's iteration index (0-based): sweeps slots across a repeat */
      each: z.strictObject({ slot: num.optional(), gpa: num.optional(), offset: num.optional() }).optional(),
    }),
  }),
  access: z.strictObject({ ...common, access: z.strictObject(pattern) }),
  host: z.strictObject({
    ...common,
    host: z.strictObject({
      event: hostEvent,
      region: z.string(),
      offset: num.optional(),
      length: num.optional(),
      writable: z.boolean().optional(),
      /** ksmMerge: the second page (offset into the same region) */
      with: num.optional(),
    }),
  }),
  dirtyLog: z.strictObject({ ...common, dirtyLog: z.string(), clear: z.boolean().optional() }),
  attributes: z.strictObject({
    ...common,
    attributes: z.strictObject({
      region: z.string(),
      offset: num.optional(),
      length: num.optional(),
      private: z.boolean(),
    }),
  }),
  enableCap: z.strictObject({ ...common, enableCap: num, args: z.array(num).max(4).optional() }),
  audit: z.strictObject({ ...common, audit: z.string() }),
  /** nested steps are validated one by one by the parser */
  repeat: z.strictObject({ ...common, repeat: num, steps: z.array(z.unknown()) }),
} as const;

export type StepKind = keyof typeof STEP_SCHEMAS;
export const STEP_KINDS = Object.keys(STEP_SCHEMAS) as StepKind[];
type Out<K extends StepKind> = z.output<(typeof STEP_SCHEMAS)[K]>;
export type RepeatStep = Omit<Out<'repeat'>, 'steps'> & { steps: Step[] };
export type Step = { [K in Exclude<StepKind, 'repeat'>]: Out<K> }[Exclude<StepKind, 'repeat'>] | RepeatStep;

export const scenarioSchema = z.strictObject({
  name: z.string().min(1),
  description: z.string().optional(),
  seed: num.optional(),
  /** Defaults for "$name" references; the CLI's --param overrides them. */
  params: z.record(z.string(), z.union([z.number(), z.string()])).optional(),
  /** Model features the scenario needs beyond memslots (see runner FEATURES). */
  requires: z.array(z.string()).optional(),
  host: z
    .strictObject({
      profile: z.enum(['upstream-6.18', 'pvm-6.18']).optional(),
      overrides: z.record(z.string(), z.unknown()).optional(),
      bugs: z.array(z.string()).optional(),
    })
    .optional(),
  vms: z.array(vmSchema).min(1),
  timeline: z.array(z.unknown()),
});

export type Scenario = Omit<z.output<typeof scenarioSchema>, 'timeline'> & { timeline: Step[] };
export type Region = z.output<typeof regionSchema>;
export type VmDecl = Scenario['vms'][number];
export type AccessPattern = Extract<Step, { access: unknown }>['access'];
export type HostStep = Extract<Step, { host: unknown }>['host'];
