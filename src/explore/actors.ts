/**
 * The explorer's actors: concurrent kernel paths cut into the atomic steps the kernel lets others in
 * between, each step declaring its footprint (what it reads and writes: memslots, the invalidation
 * sequence, SPTEs/TLBs by gfn, host mm, memory types, dirty bitmaps, SRCU) and when it can run.
 *
 *   guest access (TDP MMU)  translate (TLB, EPT walk; a hit or an MMIO exit ends here) → on an EPT
 *                           violation kvm_mmu_faultin_pfn (seq snapshot, memslot, pfn; kvm->srcu held)
 *                           → mmu_lock, is_page_fault_stale, kvm_tdp_mmu_map. A retry re-executes the
 *                           access; while an invalidation covers the gfn or its slot is INVALID the vCPU
 *                           spins, modelled as not runnable until that ends.
 *   guest access (shadow)   one step (vcpu.access): the shadow MMU has no stepwise fault in the model.
 *   memslot ioctl           slots_lock; stops inside kvm_swap_active_memslots (waiting for
 *                           mn_active_invalidate_count, synchronize_srcu after each publish) and at each
 *                           resched point of the memslot flush (contended or not: the scheduler decides).
 *   host munmap / migrate   mmu_notifier_invalidate_range_start → the PTE change and invalidate_range_end.
 *   anything else           one step through the scenario runner (other host events, dirty-log
 *                           get/clear, attributes, guest_memfd punch hole, TDX accept, CR0/MTRR/PAT, DMA).
 *
 * Model-only file (no kernel counterpart); the steps call the model's public API and stepping hooks.
 */
import { KvmError } from '../kvm/kvm_error.ts';
import type { AccessKind, AccessResult } from '../kvm/api_types.ts';
import { KVM_MEMSLOT_INVALID } from '../uapi/kvm.ts';
import { execStep } from '../scenario/steps.ts';
import type { Step } from '../scenario/schema.ts';
import type { Footprint } from './scheduler.ts';
import type { ActorDecl } from './config.ts';
import type { Execution } from './engine.ts';
import type { ActorRt } from './execution_types.ts';

/** Footprint resources. MMU (SPTEs and TLBs) and DIRTY are ranged by gfn. */
export const R_SLOTS = 1;
export const R_SEQ = 2;
export const R_MMU = 4;
export const R_HOST = 8;
export const R_MEMTYPE = 16;
export const R_GMEM = 32;
export const R_ATTRS = 64;
export const R_DIRTY = 128;
export const R_SRCU = 256;
const ALL = 511;
/** Reads and writes everything: dependent with every step. */
export const GLOBAL: Footprint = { r: ALL, w: ALL, ranged: 0, lo: 0, hi: 0 };

/** A step an actor offers: what it is, what it touches, whether it can run now. */
export interface Pending {
  fn: string;
  /** what the step does, for step records (called only when the run records its steps) */
  what: () => string;
  fp: () => Footprint;
  enabled?: (() => boolean) | undefined;
}

export type ActorBody = Generator<Pending, void, void>;

const PAGE = 4096;
const hex = (n: number): string => '0x' + n.toString(16);
/** re-executions of one access before the actor gives up on it (the vCPU would keep spinning) */
const MAX_ATTEMPTS = 6;

/** The actor's steps, one scenario step after another. */
export function* makeActor(ex: Execution, decl: ActorDecl, idx: number): ActorBody {
  const self = (): ActorRt => ex.actors[idx]!;
  for (let j = 0; j < decl.steps.length; j++) yield* stepOf(ex, self, decl, decl.steps[j]!, String(j));
}

/** Each step's first pending is a position (`at`, for state keys); the ones after it are not. */
function* stepOf(ex: Execution, self: () => ActorRt, decl: ActorDecl, s: Step, at: string): ActorBody {
  if ('access' in s) {
    const p = s.access;
    const r = ex.c.regions.get(p.region)!;
    const start = p.offset ?? 0;
    const len = p.length ?? PAGE;
    for (let off = start; off < start + len; off += p.stride ?? PAGE)
      yield* access(
        ex,
        self,
        decl.vcpu,
        r.gpa + off,
        p.kind ?? 'read',
        r.decl.backing ?? '4k',
        `${at}:${off}`,
      );
    return;
  }
  self().at = at;
  if ('delete' in s || 'move' in s || 'flags' in s || 'create' in s) return yield* memslot(ex, self, s);
  if ('host' in s && (s.host.event === 'munmap' || s.host.event === 'migrate') && s.racingFault === undefined)
    return yield* notifier(ex, self, s.host);
  // CR0/MTRR/PAT writes are the actor's vCPU's unless the step names others
  const t = withVcpu(s, decl.vcpu);
  const slots = 'dirtyLog' in t || 'attributes' in t;
  yield {
    fn: kernelFnOf(t),
    what: () => describe(t),
    fp: () => GLOBAL,
    enabled: slots ? () => ex.slotsHolder === null : undefined,
  };
  self().at = null;
  const errors = ex.x.errors.length;
  execStep(ex.x, ex.c, t as Exclude<Step, { repeat: unknown }>);
  if (ex.x.errors.length > errors && ex.recording)
    ex.note(kernelFnOf(t), `${describe(t)} → ${ex.x.errors.at(-1)!.replace(/^[^:]*: /, '')}`);
}

function withVcpu(s: Step, vcpu: number): Step {
  for (const k of ['cr0', 'mtrr', 'pat'] as const) {
    if (k in s) {
      const v = (s as Record<string, { vcpus?: unknown }>)[k]!;
      if (v.vcpus === undefined) return { ...s, [k]: { ...v, vcpus: [vcpu] } } as Step;
    }
  }
  return s;
}

const KERNEL_FN: Record<string, string> = {
  dirtyLog: 'kvm_vm_ioctl_get_dirty_log',
  attributes: 'kvm_vm_set_mem_attributes',
  punchHole: 'kvm_gmem_punch_hole',
  accept: 'tdh_mem_page_accept',
  cr0: 'kvm_set_cr0',
  mtrr: 'kvm_mtrr_set_msr',
  pat: 'kvm_set_msr_common',
  dma: 'device DMA (IOMMU)',
  host: 'mmu_notifier_invalidate_range',
};

function kernelFnOf(s: Step): string {
  const k = Object.keys(s).find((key) => key in KERNEL_FN);
  return k === undefined ? 'step' : KERNEL_FN[k]!;
}

function describe(s: Step): string {
  const k = Object.keys(s).find((key) => key !== 'label')!;
  const v = (s as Record<string, unknown>)[k];
  if (typeof v === 'string') return `${k} ${v}`;
  const o = v as Record<string, unknown>;
  const bits = Object.entries(o)
    .filter(([key]) => key !== 'vcpus')
    .map(([key, val]) => `${key}=${typeof val === 'number' && val > 9 ? hex(val) : JSON.stringify(val)}`);
  return `${k} ${bits.join(' ')}`;
}

/** The gfn footprint of touching gfn: one page with 4K backing, everything when huge leafs may form. */
function gfnFp(r: number, w: number, gfn: number, backing: string, all: boolean): Footprint {
  if (all || backing !== '4k') return { r: r | R_MMU | R_DIRTY, w, ranged: 0, lo: 0, hi: 0 };
  return { r, w, ranged: R_MMU | R_DIRTY, lo: gfn, hi: gfn + 1 };
}

/** One guest access: attempts until it completes, each a translate step and, on a fault, a locked step. */
function* access(
  ex: Execution,
  self: () => ActorRt,
  vcpuId: number,
  gpa: number,
  kind: AccessKind,
  backing: string,
  at: string,
): ActorBody {
  const vcpu = ex.c.vcpus[vcpuId]!;
  const gfn = Math.floor(gpa / PAGE);
  // the notes' strings are built only for a recorded run
  const rec = ex.recording;
  let wait: (() => boolean) | undefined;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    // a re-execution carries its retry count and wait condition: not a position
    self().at = attempt === 0 ? at : null;
    yield {
      fn: 'vcpu_enter_guest',
      what: () => `${kind} ${hex(gpa)}`,
      // servicing a pending TLB flush or root reload touches every translation of the vCPU
      // entering/leaving the kvm->srcu read side conflicts only with synchronize_srcu (a write)
      fp: () =>
        gfnFp(
          R_SLOTS | R_SEQ | R_HOST | R_ATTRS | R_GMEM | R_MEMTYPE | R_SRCU,
          R_MMU | R_DIRTY,
          gfn,
          backing,
          vcpu.requests !== 0,
        ),
      enabled: wait,
    };
    self().at = null;
    const f = ex.accessBegin(vcpu, gpa, kind);
    const st = vcpu.accessStep(gpa, kind);
    if (st === null) {
      // the shadow MMU: the access and its fault are one step
      const res = vcpu.access(gpa, kind);
      if (rec) ex.note('vcpu.access (shadow MMU fault path)', `${kind} ${hex(gpa)} → ${outcome(res)}`);
      ex.accessEnd(f, res);
      return;
    }
    if (st.result !== null) {
      if (rec)
        ex.note(
          st.result.exit === 'none' ? 'guest access (TLB / EPT hit)' : 'guest access',
          `${kind} ${hex(gpa)} → ${outcome(st.result)}`,
        );
      ex.accessEnd(f, st.result);
      return;
    }
    const a = self();
    ex.srcuEnter(a);
    if (rec) ex.note('kvm_mmu_faultin_pfn', `${kind} ${hex(gpa)}: EPT violation; seq snapshot, memslot, pfn`);
    yield {
      fn: 'kvm_tdp_mmu_map',
      what: () => `mmu_lock, is_page_fault_stale, install gfn ${hex(gfn)}`,
      fp: () => gfnFp(R_SLOTS | R_SEQ | R_MEMTYPE | R_HOST | R_SRCU, R_MMU | R_DIRTY, gfn, backing, false),
    };
    const fixed = vcpu.stats.pf_fixed;
    const spurious = vcpu.stats.pf_spurious;
    const res = st.finish();
    a.srcu = 0;
    if (res !== null && res.exit !== 'retry') {
      if (rec) ex.note('kvm_tdp_mmu_map', `gfn ${hex(gfn)} → ${outcome(res)}`);
      ex.accessEnd(f, res);
      return;
    }
    ex.dropAccess(f);
    if (rec) {
      const how =
        vcpu.stats.pf_fixed > fixed
          ? 'SPTE installed'
          : vcpu.stats.pf_spurious > spurious
            ? 'spurious (already mapped)'
            : 'is_page_fault_stale: retry';
      ex.note(
        'kvm_tdp_mmu_map',
        `gfn ${hex(gfn)}: ${res === null ? how : 'retry (slot INVALID)'}; the guest re-executes`,
      );
    }
    wait = () => !spinning(ex.vm, vcpu.asId(), gfn);
  }
  if (rec) ex.note('vcpu_enter_guest', `${kind} ${hex(gpa)}: still faulting after ${MAX_ATTEMPTS} attempts`);
}

/**
 * The vCPU would only spin: an invalidation covers the gfn, or its slot is INVALID. A tool-side look:
 * peekMemslot leaves the VM-wide last-used-slot cache (part of the hashed state) where the kernel's own
 * lookups left it, so asking does not make a distinct state.
 */
export function spinning(vm: Execution['vm'], asId: number, gfn: number): boolean {
  if (vm.mmuInvalidateInProgress > 0 && gfn >= vm.mmuInvalidateRangeStart && gfn < vm.mmuInvalidateRangeEnd)
    return true;
  const slot = vm.activeMemslots(asId).peekMemslot(gfn);
  return slot !== null && (slot.flags & KVM_MEMSLOT_INVALID) !== 0;
}

function outcome(r: AccessResult): string {
  return r.exit === 'none' ? `pfn ${hex(r.pfn)} (level ${r.level}, memtype ${r.memtype})` : `exit ${r.exit}`;
}

/** Host munmap/migrate: the notifier's start, then the PTE change and its end. */
function* notifier(
  ex: Execution,
  self: () => ActorRt,
  h: Extract<Step, { host: unknown }>['host'],
): ActorBody {
  const r = ex.c.regions.get(h.region)!;
  const addr = r.hva + (h.offset ?? 0);
  const len = h.length ?? r.decl.size - (h.offset ?? 0);
  yield {
    fn: 'mmu_notifier_invalidate_range_start',
    what: () => `${h.event} hva ${hex(addr)}+${hex(len)}: invalidate_begin, zap, flush`,
    fp: () => GLOBAL,
  };
  self().at = null;
  const finish =
    h.event === 'munmap'
      ? ex.kvm.host.munmap(addr, len, { stepwise: true })
      : ex.kvm.host.migrate(addr, len, { stepwise: true });
  yield {
    fn: 'mmu_notifier_invalidate_range_end',
    what: () => `${h.event}: the PTE change, then invalidate_end`,
    fp: () => GLOBAL,
  };
  finish();
}

/** A memslot ioctl: one step that stops inside the model's stepping hooks. */
function* memslot(ex: Execution, self: () => ActorRt, s: Step): ActorBody {
  const kind = 'delete' in s ? 'DELETE' : 'move' in s ? 'MOVE' : 'flags' in s ? 'FLAGS_ONLY' : 'CREATE';
  const name =
    'delete' in s
      ? s.delete
      : 'move' in s
        ? s.move
        : 'flags' in s
          ? s.flags
          : (s as { create: string }).create;
  yield {
    fn: 'kvm_set_memory_region',
    what: () => `${kind} ${name}`,
    fp: () => GLOBAL,
    enabled: () => ex.slotsHolder === null,
  };
  self().at = null;
  const r = ex.c.regions.get(name)!;
  const lo = Math.floor(r.gpa / PAGE);
  const op = { kind, lo, hi: lo + r.decl.size / PAGE, swaps: 0 };
  ex.slotsHolder = self();
  installHooks(ex, op);
  const errors = ex.x.errors.length;
  try {
    execStep(ex.x, ex.c, s as Exclude<Step, { repeat: unknown }>);
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
  } finally {
    ex.slotsHolder = null;
    ex.window = null;
    const vm = ex.vm;
    vm.onMemslotsWait = undefined;
    vm.mmuLockContended = undefined;
    vm.onMmuLockDrop = undefined;
    vm.onInvalidWindow = undefined;
  }
  if (ex.x.errors.length > errors && ex.recording)
    ex.note('kvm_set_memory_region', `${kind} ${name} → ${ex.x.errors.at(-1)!.replace(/^[^:]*: /, '')}`);
}

/** The stepping hooks, for the duration of one memslot ioctl. */
function installHooks(ex: Execution, op: { kind: string; lo: number; hi: number; swaps: number }): void {
  const vm = ex.vm;
  vm.onMemslotsWait = (what) => {
    if (what === 'mn-invalidate') {
      if (vm.mnActiveInvalidateCount === 0) return;
      ex.suspend({
        fn: 'kvm_swap_active_memslots',
        what: () => 'waits for mn_active_invalidate_count to drop',
        fp: () => GLOBAL,
        enabled: () => vm.mnActiveInvalidateCount === 0,
      });
      return;
    }
    op.swaps++;
    const invalid = op.kind === 'DELETE' || op.kind === 'MOVE';
    if (op.swaps === 1 && invalid) ex.window = { lo: op.lo, hi: op.hi, phase: 'unflushed' };
    else ex.window = { lo: op.lo, hi: op.hi, phase: 'committing' };
    const readers = ex.actors.filter((a) => a.srcu !== 0).map((a) => [a, a.srcu] as const);
    ex.suspend({
      fn: 'synchronize_srcu_expedited',
      what: () =>
        `${op.swaps === 1 && op.kind !== 'CREATE' && op.kind !== 'FLAGS_ONLY' ? 'INVALID slot published' : 'new memslots published'}; waits for kvm->srcu readers`,
      fp: () => GLOBAL,
      enabled: () => readers.every(([a, id]) => a.srcu !== id),
    });
  };
  const zapAll0 = ex.vm.model.memslot_zap_all_fast;
  // name the flush the design chose, so a diagram says which zap ran
  vm.mmuLockContended = () =>
    ex.contended(ex.vm.model.memslot_zap_all_fast > zapAll0 ? 'kvm_mmu_zap_all_fast' : 'precise memslot zap');
  const party = (resumeGfn?: number): void => {
    if (ex.window !== null) {
      ex.window.phase = ex.vm.model.memslot_zap_all_fast > zapAll0 ? 'zapping-all' : 'dropped';
      ex.window.resume = resumeGfn;
    }
    ex.suspend({
      fn: 'cond_resched_rwlock_write',
      what: () => 'retakes mmu_lock, continues the zap',
      fp: () => GLOBAL,
    });
    vm.onMmuLockDrop = party;
  };
  vm.onMmuLockDrop = party;
  vm.onInvalidWindow = () => {
    if (ex.window !== null) ex.window.phase = 'flushed';
  };
}
