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
import { expectErrno, num } from './numbers.ts';
import { VFIO_STEP_SCHEMAS } from './schema_vfio.ts';

const KERNELS = ['6.12', '6.15', '6.17', '6.18', '6.19'] as const;
const kernelVersion = z
  .union([z.enum(KERNELS), z.number()])
  .transform((v) => (typeof v === 'number' ? v.toFixed(2) : v))
  .pipe(z.enum(KERNELS));

const vmType = z.union([z.enum(VM_TYPE_NAMES), z.number().int().min(0).max(5)]);
const backing = z.enum(['4k', '2m', '1g', 'thp']);

export const regionSchema = z
  .strictObject({
    name: z.string().min(1).describe('the name steps refer to the region by'),
    gpa: num.describe('guest physical address of the first byte (4K-aligned)'),
    size: num.describe('bytes, a non-zero multiple of 4K (also the size of its host mapping)'),
    backing: backing
      .optional()
      .describe("host pages behind the region's mapping: 4k, 2m / 1g (hugetlb) or thp (default 4k)"),
    slot: num.optional().describe('memslot id (default: the next free id, in declaration order)'),
    as: z
      .union([z.literal(0), z.literal(1)])
      .optional()
      .describe('address space: 1 is SMRAM (needs SMM, no private memory); default 0'),
    private: z
      .boolean()
      .optional()
      .describe('backed by a guest_memfd as well as the hva (KVM_MEM_GUEST_MEMFD); default false'),
    readonly: z.boolean().optional().describe('KVM_MEM_READONLY: guest writes exit to MMIO; default false'),
    logDirty: z.boolean().optional().describe('KVM_MEM_LOG_DIRTY_PAGES from the start; default false'),
    present: z
      .boolean()
      .optional()
      .describe('create the memslot when the VM is built (default true); false = a timeline step creates it'),
  })
  .describe('a named guest memory range: one memslot and its host mapping');

const vmSchema = z
  .strictObject({
    name: z.string().min(1).optional().describe("the name steps' `vm` refers to (default vm0, vm1, …)"),
    type: vmType
      .optional()
      .describe(`VM type: ${VM_TYPE_NAMES.join(', ')} or its KVM_X86_*_VM number 0–5 (default DEFAULT)`),
    vcpus: num.optional().describe('number of vCPUs, ids 0…n-1 (default 1)'),
    regions: z.array(regionSchema).describe('the memory layout'),
  })
  .describe('a VM, its vCPUs and its memory layout');

const common = {
  label: z.string().optional().describe('the name the step has in reports (default: #n and its kind)'),
  vm: z.string().optional().describe('the VM the step acts on, by name (default: the first)'),
  expect: expectErrno,
};
const pattern = {
  region: z.string().describe('the region to touch'),
  offset: num.optional().describe('first byte, from the start of the region (default 0)'),
  length: num.optional().describe('bytes from offset (default: to the end of the region)'),
  stride: num.optional().describe('bytes between touched addresses (default 4096)'),
  workingSet: num
    .optional()
    .describe('touch this many random pages of the range (seeded by `seed`) instead of every stride'),
  vcpus: z
    .union([z.literal('all'), z.array(num)])
    .optional()
    .describe('vCPU ids, or "all" (default all; each touches the whole pattern)'),
  kind: z.enum(['read', 'write', 'exec']).optional().describe('access kind (default read)'),
  private: z
    .boolean()
    .optional()
    .describe(
      "classify the access as private (SNP's C-bit); default: the gfn's attribute (TDX: the gpa's shared bit); no effect on a VM without private memory",
    ),
  passes: num.optional().describe('repeat the whole pattern this many times (default 1)'),
  eachOffset: num.optional().describe("added to offset × the enclosing repeat's iteration index"),
};

const hostEvent = z.enum(['munmap', 'mprotect', 'migrate', 'thpSplit', 'thpCollapse', 'swapOut', 'ksmMerge']);

/** One schema per step kind, keyed by the kind's distinguishing key; the parser picks by key so an
 * error names the right kind's expectations rather than a union's "invalid input". */
const regionName = (what: string) => z.string().describe(what);
export const STEP_SCHEMAS = {
  create: z
    .strictObject({ ...common, create: regionName('the region whose memslot to create') })
    .describe("KVM_SET_USER_MEMORY_REGION2: create a region's memslot"),
  delete: z
    .strictObject({
      ...common,
      delete: regionName('the region whose memslot to delete'),
      whileInvalid: z
        .strictObject(pattern)
        .optional()
        .describe("guest accesses made while the DELETE's KVM_MEMSLOT_INVALID copy is published"),
      whileLockDropped: z
        .strictObject(pattern)
        .optional()
        .describe('guest accesses made where the zap first drops mmu_lock, after an audit'),
    })
    .describe("delete a region's memslot (memory_size 0): the zap the design chooses"),
  move: z
    .strictObject({
      ...common,
      move: regionName('the region whose memslot to move'),
      to: num.describe('the new guest physical address'),
    })
    .describe('KVM_MR_MOVE: the same slot at a new gpa'),
  flags: z
    .strictObject({
      ...common,
      flags: regionName('the region whose memslot flags change'),
      logDirty: z.boolean().optional().describe('KVM_MEM_LOG_DIRTY_PAGES on or off'),
      readonly: z.boolean().optional().describe('KVM_MEM_READONLY on or off'),
      guestMemfd: z
        .boolean()
        .optional()
        .describe(
          'false: request the slot without KVM_MEM_GUEST_MEMFD (6.12–6.18 accept it: gmem-flag-clear-uaf)',
        ),
    })
    .describe("KVM_MR_FLAGS_ONLY: change a memslot's flags"),
  memslot: z
    .strictObject({
      ...common,
      memslot: z
        .strictObject({
          slot: num.describe('memslot id'),
          as: z
            .union([z.literal(0), z.literal(1)])
            .optional()
            .describe('address space (default 0)'),
          gpa: num.describe('guest_phys_addr'),
          size: num.describe('memory_size (0 deletes)'),
          flags: num.optional().describe('KVM_MEM_* flags as a number (default 0)'),
          region: z
            .string()
            .optional()
            .describe("userspace_addr = this region's mapping + offset (default: hva 0)"),
          offset: num.optional().describe('bytes into the region (default 0)'),
          each: z
            .strictObject({
              slot: num.optional().describe('added to slot per iteration'),
              gpa: num.optional().describe('added to gpa per iteration'),
              offset: num.optional().describe('added to offset per iteration'),
            })
            .optional()
            .describe(
              "added × the enclosing repeat's iteration index (0-based): sweeps slots across a repeat",
            ),
        })
        .describe('the raw struct kvm_userspace_memory_region fields'),
    })
    .describe('a raw KVM_SET_USER_MEMORY_REGION2 call'),
  access: z
    .strictObject({ ...common, access: z.strictObject(pattern).describe('what to touch, how, by whom') })
    .describe('guest accesses over a pattern of a region (vcpu.access)'),
  host: z
    .strictObject({
      ...common,
      host: z
        .strictObject({
          event: hostEvent.describe(
            'the mm event (each brackets its change with MMU-notifier invalidations)',
          ),
          region: z.string().describe('the region whose host mapping the event hits'),
          offset: num.optional().describe('bytes into the region (default 0)'),
          length: num.optional().describe('bytes (default: to the end of the region)'),
          writable: z.boolean().optional().describe('mprotect: writable after the call (default false)'),
          with: num.optional().describe('ksmMerge: the second page, as an offset into the same region'),
        })
        .describe('a VMM mm event'),
      racingFault: z
        .strictObject({
          offset: num.describe('bytes into the region: the faulting page'),
          vcpu: num.optional().describe('the vCPU (default 0)'),
          kind: z.enum(['read', 'write']).optional().describe('default read'),
        })
        .optional()
        .describe(
          'a guest fault that gets its pfn before the event and takes mmu_lock after it (vcpu.beginAccess)',
        ),
    })
    .describe("a host mm event on a region's mapping"),
  dirtyLog: z
    .strictObject({
      ...common,
      dirtyLog: regionName('the region whose dirty bitmap to fetch'),
      clear: z.boolean().optional().describe('KVM_CLEAR_DIRTY_LOG the pages fetched (default false)'),
    })
    .describe('KVM_GET_DIRTY_LOG (and KVM_CLEAR_DIRTY_LOG)'),
  attributes: z
    .strictObject({
      ...common,
      attributes: z
        .strictObject({
          region: z.string().describe('the region'),
          offset: num.optional().describe('bytes into the region (default 0)'),
          length: num.optional().describe('bytes (default: the whole region)'),
          private: z.boolean().describe('KVM_MEMORY_ATTRIBUTE_PRIVATE set (true) or cleared (false)'),
        })
        .describe('the range and the attribute'),
    })
    .describe('KVM_SET_MEMORY_ATTRIBUTES: convert a range to private or shared'),
  accept: z
    .strictObject({
      ...common,
      accept: z
        .strictObject({
          region: z.string().describe('the region'),
          offset: num.optional().describe('bytes into the region (default 0)'),
          length: num.optional().describe('bytes (default: to the end of the region)'),
          stride: num.optional().describe('bytes between accepted pages (default 4096)'),
          workingSet: num.optional().describe('accept this many random pages instead (seeded)'),
          vcpus: z
            .union([z.literal('all'), z.array(num)])
            .optional()
            .describe('vCPU ids or "all" (default all)'),
        })
        .describe('which pages'),
    })
    .describe('TDX guest: TDG.MEM.PAGE.ACCEPT of each page of a pattern (faults it in first if unmapped)'),
  punchHole: z
    .strictObject({
      ...common,
      punchHole: z
        .strictObject({
          region: z.string().describe('a private region'),
          offset: num.optional().describe('bytes into its guest_memfd (default 0)'),
          length: num.optional().describe('bytes (default: to the end)'),
        })
        .describe('the range'),
    })
    .describe(
      "fallocate(PUNCH_HOLE | KEEP_SIZE) on a private region's guest_memfd: pages freed, SPTEs zapped",
    ),
  enableCap: z
    .strictObject({
      ...common,
      enableCap: num.describe('the KVM_CAP_* number'),
      args: z.array(num).max(4).optional().describe('up to 4 u64 arguments'),
    })
    .describe('KVM_ENABLE_CAP on the VM'),
  guestPaging: z
    .strictObject({
      ...common,
      guestPaging: z
        .strictObject({
          tables: z
            .string()
            .describe('the region whose pages hold the page tables (allocated from its first page)'),
          map: z.array(z.string()).min(1).describe('regions to map, every page, gva = gpa (user, writable)'),
          vcpus: z
            .union([z.literal('all'), z.array(num)])
            .optional()
            .describe('vCPUs that load the new CR3 (default all)'),
        })
        .describe('what to map and where the tables live'),
    })
    .describe(
      'shadow paging (host tdp: false): the VMM writes identity-mapped 4-level guest page tables into a region, then the vCPUs load CR3; accesses then name guest virtual addresses (= gpa)',
    ),
  audit: z
    .strictObject({ ...common, audit: z.string().describe('the audit point name shown with violations') })
    .describe('run the invariant checker here (a named audit point)'),
  ...VFIO_STEP_SCHEMAS,
  repeat: z
    .strictObject({
      label: common.label,
      vm: common.vm,
      repeat: num.describe('how many times'),
      steps: z.array(z.unknown()).describe('the steps to repeat (any step kind, repeats nest)'),
    })
    .describe('run nested steps n times (iteration index available to each/eachOffset)'),
} as const;

export type StepKind = keyof typeof STEP_SCHEMAS;
export const STEP_KINDS = Object.keys(STEP_SCHEMAS) as StepKind[];
type Out<K extends StepKind> = z.output<(typeof STEP_SCHEMAS)[K]>;
export type RepeatStep = Omit<Out<'repeat'>, 'steps'> & { steps: Step[] };
export type Step = { [K in Exclude<StepKind, 'repeat'>]: Out<K> }[Exclude<StepKind, 'repeat'>] | RepeatStep;

export const scenarioSchema = z
  .strictObject({
    name: z.string().min(1).describe('the scenario name shown in reports'),
    description: z.string().optional().describe('one line: what the scenario shows (`list` prints it)'),
    seed: num.optional().describe('seed of the working-set generator (default 1): runs are reproducible'),
    params: z
      .record(z.string(), z.union([z.number(), z.string(), z.boolean()]))
      .optional()
      .describe('defaults for "$name" references anywhere below; `-p name=value` overrides them'),
    requires: z
      .array(z.string())
      .optional()
      .describe(
        'model features the scenario needs beyond memslots (tdx, snp, vfio, cr0-cd, mtrr, pat, memtype-audit, bugs, guest-memfd, memory-attributes); a missing one is reported',
      ),
    host: z
      .strictObject({
        profile: z
          .enum(['upstream-6.18', 'pvm-6.18'])
          .optional()
          .describe('the host and kernel build (default upstream-6.18: TDP MMU, every VM type, SMM)'),
        kernel: kernelVersion
          .optional()
          .describe(`the kernel whose behaviour is modelled where versions differ: ${KERNELS.join(', ')}`),
        tdp: z.boolean().optional().describe('tdp_enabled: EPT on (false = shadow paging)'),
        tdpMmu: z
          .boolean()
          .optional()
          .describe(
            "kvm.tdp_mmu: false on an EPT host builds EPT with the shadow MMU's direct pages (the pre-5.10 MMU)",
          ),
        honorGuestMtrrs: z
          .boolean()
          .optional()
          .describe('the v5.x–6.10 VMX memtype code: guest MTRRs and CR0.CD honoured with non-coherent DMA'),
        cdToggleZap: z
          .boolean()
          .optional()
          .describe("with honorGuestMtrrs: Yan Zhao's Nov 2024 fix, zap EPT on every CR0.CD toggle"),
        snoopScope: z
          .enum(['attached', 'system'])
          .optional()
          .describe(
            "the Intel IOMMU driver's snoop-control check: attached (v5.19+) or system (the pre-v5.19 bug)",
          ),
        iommus: z
          .array(
            z
              .strictObject({
                name: z.string().min(1).describe('the name vfioDevice.iommu refers to'),
                snoopControl: z.boolean().optional().describe('the unit can force snooping (default true)'),
              })
              .describe('a DMA-remapping unit'),
          )
          .optional()
          .describe("DMA-remapping units beyond unit 0 ('default', with snoop control)"),
        overrides: z
          .record(z.string(), z.unknown())
          .optional()
          .describe('any other KvmOptions (README "Host profiles"), passed to new Kvm()'),
        bugs: z
          .array(z.string())
          .optional()
          .describe('historical KVM bugs switched back on (KvmOptions.bugs)'),
      })
      .optional()
      .describe('the host and kernel being modelled'),
    vms: z.array(vmSchema).min(1).describe('the VMs (at least one)'),
    timeline: z
      .array(z.unknown())
      .describe('the steps, in order: each a mapping with exactly one step kind key'),
  })
  .describe('a zaplab scenario');

export type Scenario = Omit<z.output<typeof scenarioSchema>, 'timeline'> & { timeline: Step[] };
export type Region = z.output<typeof regionSchema>;
export type VmDecl = Scenario['vms'][number];
export type AccessPattern = Extract<Step, { access: unknown }>['access'];
export type HostStep = Extract<Step, { host: unknown }>['host'];
export type RacingFault = NonNullable<Extract<Step, { host: unknown }>['racingFault']>;
