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

export { num } from './numbers.ts';
import { num } from './numbers.ts';
import { VFIO_STEP_SCHEMAS } from './schema_vfio.ts';

const KERNELS = ['6.12', '6.15', '6.17', '6.18', '6.19'] as const;
const kernelVersion = z
  .union([z.number(), z.string()])
  .transform((v) => (typeof v === 'number' ? v.toFixed(2) : v))
  .pipe(z.enum(KERNELS));

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
  delete: z.strictObject({
    ...common,
    delete: z.string(),
    /** guest accesses made while the DELETE's KVM_MEMSLOT_INVALID copy is published (vm.onInvalidWindow) */
    whileInvalid: z.strictObject(pattern).optional(),
    /** guest accesses made where the memslot flush first drops mmu_lock (vm.onMmuLockDrop), after an audit */
    whileLockDropped: z.strictObject(pattern).optional(),
  }),
  move: z.strictObject({ ...common, move: z.string(), to: num }),
  flags: z.strictObject({
    ...common,
    flags: z.string(),
    logDirty: z.boolean().optional(),
    readonly: z.boolean().optional(),
    /** false: request the slot without KVM_MEM_GUEST_MEMFD (6.12–6.18 accept it: gmem-flag-clear-uaf) */
    guestMemfd: z.boolean().optional(),
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
    /**
     * A guest fault racing the event: it gets its pfn before the event and takes mmu_lock after it
     * (vcpu.beginAccess), so is_page_fault_stale must send it back (bug: fault-no-seq-recheck).
     */
    racingFault: z
      .strictObject({ offset: num, vcpu: num.optional(), kind: z.enum(['read', 'write']).optional() })
      .optional(),
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
  /** TDX guest: TDG.MEM.PAGE.ACCEPT of each page of a pattern (faults it in first if unmapped) */
  accept: z.strictObject({
    ...common,
    accept: z.strictObject({
      region: z.string(),
      offset: num.optional(),
      length: num.optional(),
      stride: num.optional(),
      workingSet: num.optional(),
      vcpus: z.union([z.literal('all'), z.array(num)]).optional(),
    }),
  }),
  /** fallocate(PUNCH_HOLE | KEEP_SIZE) on a private region's guest_memfd: the pages are freed, SPTEs zapped */
  punchHole: z.strictObject({
    ...common,
    punchHole: z.strictObject({ region: z.string(), offset: num.optional(), length: num.optional() }),
  }),
  enableCap: z.strictObject({ ...common, enableCap: num, args: z.array(num).max(4).optional() }),
  audit: z.strictObject({ ...common, audit: z.string() }),
  ...VFIO_STEP_SCHEMAS,
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
  params: z.record(z.string(), z.union([z.number(), z.string(), z.boolean()])).optional(),
  /** Model features the scenario needs beyond memslots (see runner FEATURES). */
  requires: z.array(z.string()).optional(),
  host: z
    .strictObject({
      profile: z.enum(['upstream-6.18', 'pvm-6.18']).optional(),
      /** the kernel whose behaviour is modelled where versions differ (a YAML 6.12 is read as "6.12") */
      kernel: kernelVersion.optional(),
      /** tdp_enabled: EPT on (false = shadow paging) */
      tdp: z.boolean().optional(),
      /** kvm.tdp_mmu: false on an EPT host builds EPT with the shadow MMU's direct pages (the pre-5.10 MMU) */
      tdpMmu: z.boolean().optional(),
      /** the v5.x–6.10 VMX memtype code: guest MTRRs and CR0.CD honoured with non-coherent DMA */
      honorGuestMtrrs: z.boolean().optional(),
      /** with honorGuestMtrrs: Yan Zhao's Nov 2024 fix, zap EPT on every CR0.CD toggle */
      cdToggleZap: z.boolean().optional(),
      /** the Intel IOMMU driver's snoop-control check: 'attached' (v5.19+) or 'system' (the pre-v5.19 bug) */
      snoopScope: z.enum(['attached', 'system']).optional(),
      /** DMA-remapping units beyond unit 0 ('default', with snoop control), named for vfioDevice.iommu */
      iommus: z
        .array(z.strictObject({ name: z.string().min(1), snoopControl: z.boolean().optional() }))
        .optional(),
      overrides: z.record(z.string(), z.unknown()).optional(),
      /** historical KVM bugs switched back on (KvmOptions.bugs) */
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
export type RacingFault = NonNullable<Extract<Step, { host: unknown }>['racingFault']>;
