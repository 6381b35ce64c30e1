/**
 * Executing one scenario step on the model, through the public API only: memslot ioctls by region
 * name or raw, guest access patterns (range, stride, seeded working set, per vCPU), host mm events,
 * dirty-log and attribute calls, enable-caps. Every guest access goes through the checker. Derived
 * counts the kernel has no stat for (SPTEs zapped under which lock, refaults by level, exits by kind)
 * are measured here around the calls that cause them. Model-only file.
 */
import { KvmError, uapi, type Kvm, type Vm, type Vcpu, type AccessResult } from '../index.ts';
import type { AccessPattern, HostStep, RacingFault, Region, Step } from './schema.ts';
import type { CheckerLike } from './checker_glue.ts';
import type { DesignSpec } from './designs.ts';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE } from '../uapi/falloc.ts';
import { execVfioStep, isVfioStep, type VfioCtx } from './steps_vfio.ts';
import { execGuestPaging } from './steps_paging.ts';
import { offsetAt, patternOffsets, type PatternOffsets } from './patterns.ts';

const PAGE = 4096;

export interface RegionState {
  decl: Region;
  slotId: number;
  hva: number;
  gmemFd: number;
  gpa: number;
  logDirty: boolean;
  readonly: boolean;
  present: boolean;
  /** KVM_MEM_GUEST_MEMFD requested (a flags step may clear it while the binding stays) */
  gmemFlag?: boolean;
}

export interface VmCtx {
  name: string;
  vm: Vm;
  vcpus: Vcpu[];
  regions: Map<string, RegionState>;
}

/** Counters the runner derives (not kernel stats, not model counters). */
export type Derived = Record<string, number>;

export interface ExecCtx {
  kvm: Kvm;
  design: DesignSpec;
  checker: CheckerLike;
  derived: Derived;
  /** a generator seeded by the scenario seed and a key */
  seeded: (key: string) => () => number;
  tdpMmu: boolean;
  errors: string[];
  label: string;
  /** the innermost enclosing repeat's iteration index (0 outside repeats) */
  iter: number;
  /** VFIO devices, containers and IOMMU units by scenario name */
  vfio: VfioCtx;
  /** the current step's `expect`: the errno its call is expected to fail with */
  expect?: string | undefined;
  /** calls of the current step that failed with the expected errno */
  expectedSeen: number;
  /** working sets drawn so far, by seed key (patterns.ts); only where `seeded` is a function of the key */
  patterns?: Map<string, PatternOffsets>;
}

/**
 * A fresh execution context at the start of a run ('setup', outside any repeat). The scenario runner and
 * the explorer differ only in `seeded` (the runner seeds by the scenario seed and a key; the explorer's
 * schedules must not depend on one) and in `patterns` (a cache of drawn working sets, kept only where
 * `seeded` is a function of the key).
 */
export function newExecCtx(
  kvm: Kvm,
  design: DesignSpec,
  checker: CheckerLike,
  vfio: VfioCtx,
  seeded: ExecCtx['seeded'],
  patterns?: Map<string, PatternOffsets>,
): ExecCtx {
  const x: ExecCtx = {
    kvm,
    design,
    checker,
    derived: {},
    seeded,
    tdpMmu: kvm.cfg.tdpMmu,
    errors: [],
    label: 'setup',
    iter: 0,
    vfio,
    expectedSeen: 0,
  };
  if (patterns !== undefined) x.patterns = patterns;
  return x;
}

/**
 * A call of the current step failed. With the errno the step `expect`s, that is the step's result;
 * otherwise it is a run error (the run's verdict becomes 'error').
 */
export function callFailed(x: ExecCtx, e: KvmError): void {
  if (x.expect === e.code) {
    x.expectedSeen++;
    bump(x.derived, 'ioctl_expected_errors');
    return;
  }
  bump(x.derived, 'ioctl_errors');
  x.errors.push(`${x.label}: ${e.code} ${e.message}${x.expect ? ` (the step expects ${x.expect})` : ''}`);
}

const bump = (d: Derived, k: string, n = 1): void => {
  d[k] = (d[k] ?? 0) + n;
};

export function regionFlags(r: RegionState, design: DesignSpec): number {
  let f = 0;
  if (r.logDirty) f |= uapi.KVM_MEM_LOG_DIRTY_PAGES;
  if (r.readonly) f |= uapi.KVM_MEM_READONLY;
  if (r.gmemFd >= 0 && r.gmemFlag !== false) f |= uapi.KVM_MEM_GUEST_MEMFD;
  if (design.leafsOnlyFlag) f |= uapi.KVM_MEM_ZAP_LEAFS_ONLY;
  return f;
}

/**
 * One KVM_SET_USER_MEMORY_REGION2 call, with the SPTEs it zapped attributed to the lock the kernel
 * holds: zap-all-fast zaps invalidated roots under mmu_lock read; the precise paths hold it for write.
 */
function memslotCall(
  x: ExecCtx,
  c: VmCtx,
  change: string,
  arg: Parameters<Vm['setUserMemoryRegion2']>[0],
  npages: number,
): boolean {
  const m = c.vm.model;
  const zapped0 = m.sptes_zapped_4k + m.sptes_zapped_2m + m.sptes_zapped_1g + m.sptes_zapped_nonleaf;
  const all0 = m.memslot_zap_all_fast;
  const precise0 = m.memslot_zap_precise;
  try {
    c.vm.setUserMemoryRegion2(arg);
    bump(x.derived, `ioctl_${change}`);
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    callFailed(x, e);
    return false;
  }
  const zapped = m.sptes_zapped_4k + m.sptes_zapped_2m + m.sptes_zapped_1g + m.sptes_zapped_nonleaf - zapped0;
  bump(
    x.derived,
    m.memslot_zap_all_fast > all0 ? 'sptes_zapped_read_lock' : 'sptes_zapped_write_lock',
    zapped,
  );
  // Without the TDP MMU, the precise path looks every gfn of the slot up in the shadow-page hash.
  if (m.memslot_zap_precise > precise0 && !x.tdpMmu) bump(x.derived, 'hash_walk_gfns', npages);
  x.checker.auditPoint('memslot');
  return true;
}

function slotArg(
  r: RegionState,
  design: DesignSpec,
  size: number,
): Parameters<Vm['setUserMemoryRegion2']>[0] {
  const gmem = r.gmemFd >= 0;
  return {
    slot: ((r.decl.as ?? 0) << 16) | r.slotId,
    flags: size === 0 ? 0 : regionFlags(r, design),
    guestPhysAddr: r.gpa,
    memorySize: size,
    userspaceAddr: size === 0 ? 0 : r.hva,
    guestMemfd: gmem && size !== 0 ? r.gmemFd : 0,
    guestMemfdOffset: 0,
  };
}

export function createRegion(x: ExecCtx, c: VmCtx, r: RegionState): void {
  if (memslotCall(x, c, 'create', slotArg(r, x.design, r.decl.size), r.decl.size / PAGE)) r.present = true;
}

/** Execute one leaf step (repeats are unrolled by the runner). */
export function execStep(x: ExecCtx, c: VmCtx, s: Exclude<Step, { repeat: unknown }>): void {
  const reg = (name: string): RegionState => c.regions.get(name)!;
  if ('create' in s) return createRegion(x, c, reg(s.create));
  if ('delete' in s) {
    const r = reg(s.delete);
    const during = s.whileInvalid;
    if (during) {
      // A vCPU racing with the DELETE: runs once, while the INVALID slot is published (the label says so).
      const label = x.label;
      c.vm.onInvalidWindow = () => {
        c.vm.onInvalidWindow = undefined;
        x.label = `${label} (INVALID window)`;
        x.checker.setStep(x.label);
        accessPattern(x, c, during);
        x.label = label;
        x.checker.setStep(label);
      };
    }
    const dropped = s.whileLockDropped;
    let droppedRan = false;
    if (dropped) {
      // A vCPU that runs while the zap has mmu_lock dropped: audits first (what can it still reach?).
      const label = x.label;
      c.vm.onMmuLockDrop = () => {
        droppedRan = true;
        x.label = `${label} (mmu_lock dropped)`;
        x.checker.setStep(x.label);
        x.checker.auditPoint('mmu-lock-drop');
        accessPattern(x, c, dropped);
        x.label = label;
        x.checker.setStep(label);
      };
    }
    try {
      memslotCall(x, c, 'delete', slotArg(r, x.design, 0), r.decl.size / PAGE);
    } finally {
      c.vm.onInvalidWindow = undefined;
      c.vm.onMmuLockDrop = undefined;
    }
    if (dropped && !droppedRan)
      x.errors.push(`${x.label}: whileLockDropped did not run: the DELETE never dropped mmu_lock`);
    r.present = false;
    return;
  }
  if ('move' in s) {
    const r = reg(s.move);
    const from = r.gpa;
    r.gpa = s.to;
    if (!memslotCall(x, c, 'move', slotArg(r, x.design, r.decl.size), r.decl.size / PAGE)) r.gpa = from;
    return;
  }
  if ('flags' in s) {
    const r = reg(s.flags);
    if (s.logDirty !== undefined) r.logDirty = s.logDirty;
    if (s.readonly !== undefined) r.readonly = s.readonly;
    if (s.guestMemfd !== undefined) r.gmemFlag = s.guestMemfd;
    memslotCall(x, c, 'flags', slotArg(r, x.design, r.decl.size), r.decl.size / PAGE);
    return;
  }
  if ('memslot' in s) {
    const m = s.memslot;
    const k = x.iter;
    const off = (m.offset ?? 0) + (m.each?.offset ?? 0) * k;
    const base = m.region ? reg(m.region).hva + off : 0;
    let flags = m.flags ?? 0;
    // (>>> 0: `|` gives a signed int32, and flags with bit 31 set must reach the ioctl as the u32 they are)
    if (x.design.leafsOnlyFlag && m.size > 0) flags = (flags | uapi.KVM_MEM_ZAP_LEAFS_ONLY) >>> 0;
    const slot = ((m.as ?? 0) << 16) | (m.slot + (m.each?.slot ?? 0) * k);
    const gpa = m.gpa + (m.each?.gpa ?? 0) * k;
    const arg = { slot, flags, guestPhysAddr: gpa, memorySize: m.size, userspaceAddr: m.size ? base : 0 };
    memslotCall(x, c, m.size === 0 ? 'delete' : 'create', arg, m.size / PAGE);
    return;
  }
  if ('access' in s) return accessPattern(x, c, s.access);
  if ('host' in s) return hostEvent(x, c, s.host, s.racingFault);
  if ('dirtyLog' in s) return dirtyLog(x, c, reg(s.dirtyLog), s.clear ?? false);
  if ('attributes' in s) {
    const a = s.attributes;
    const r = reg(a.region);
    const attrs = a.private ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
    return guard(x, () =>
      c.vm.setMemoryAttributes({
        address: r.gpa + (a.offset ?? 0),
        size: a.length ?? r.decl.size,
        attributes: attrs,
      }),
    );
  }
  if ('accept' in s) return acceptPattern(x, c, s.accept);
  if ('punchHole' in s) {
    const r = reg(s.punchHole.region);
    const off = s.punchHole.offset ?? 0;
    const len = s.punchHole.length ?? r.decl.size - off;
    // gmem offset 0 backs the region's first byte (slotArg binds guestMemfdOffset 0)
    return guard(x, () => {
      x.kvm.fallocate(r.gmemFd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
      bump(x.derived, 'gmem_punch_hole');
    });
  }
  if ('enableCap' in s) return guard(x, () => c.vm.enableCap({ cap: s.enableCap, args: s.args ?? [] }));
  if ('audit' in s) return x.checker.auditPoint(s.audit);
  if ('guestPaging' in s) return execGuestPaging(x, c, s);
  if (isVfioStep(s)) return execVfioStep(x, c, s);
}

function guard(x: ExecCtx, f: () => void): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    callFailed(x, e);
  }
}

function dirtyLog(x: ExecCtx, c: VmCtx, r: RegionState, clear: boolean): void {
  const slot = ((r.decl.as ?? 0) << 16) | r.slotId;
  guard(x, () => {
    const bitmap = c.vm.getDirtyLog(slot);
    let dirty = 0;
    for (const b of bitmap) for (let v = b; v; v &= v - 1) dirty++;
    bump(x.derived, 'dirty_pages_reported', dirty);
    if (clear) c.vm.clearDirtyLog({ slot, firstPage: 0, numPages: r.decl.size / PAGE, bitmap });
  });
}

type AcceptPattern = Extract<Step, { accept: unknown }>['accept'];

/** TDG.MEM.PAGE.ACCEPT over a pattern, per vCPU; each result is counted by kind. */
function acceptPattern(x: ExecCtx, c: VmCtx, p: AcceptPattern): void {
  const r = c.regions.get(p.region)!;
  const offs = patternOffsets(x, r, { ...p, kind: 'write' } as AccessPattern);
  const vcpus = p.vcpus === undefined || p.vcpus === 'all' ? c.vcpus : p.vcpus.map((i) => c.vcpus[i]!);
  for (const v of vcpus) {
    for (let i = 0; i < offs.n; i++) {
      const res = v.tdxAccept(r.gpa + offsetAt(offs, i)) as { status?: string; exit?: string };
      bump(x.derived, `tdx_accept_${String(res.status ?? res.exit ?? 'done')}`);
    }
  }
}

// Counter names by leaf level and exit kind, built once (no string building per access).
const FIRST_FAULT_KEYS = ['', 'first_faults_4k', 'first_faults_2m', 'first_faults_1g'];
const REFAULT_KEYS = ['', 'refaults_4k', 'refaults_2m', 'refaults_1g'];
const EXIT_KEYS: Record<string, string> = Object.fromEntries(
  ['mmio', 'memory_fault', 'retry', 'internal_error', 'vm_dead'].map((e) => [e, `exits_${e}`]),
);

function accessPattern(x: ExecCtx, c: VmCtx, p: AccessPattern): void {
  const r = c.regions.get(p.region)!;
  const offs = patternOffsets(x, r, p);
  const vcpus = p.vcpus === undefined || p.vcpus === 'all' ? c.vcpus : p.vcpus.map((i) => c.vcpus[i]!);
  const kind = p.kind ?? 'read';
  const opts = p.private === undefined ? {} : { private: p.private };
  const m = c.vm.model;
  const d = x.derived;
  // One batched call per vCPU and pass (the same accesses, in order, as a loop of vcpu.access); the
  // callback runs after each access, before the next, so the checker sees the state each access left.
  const gpas = offs.picked === null ? null : offs.picked.map((o) => r.gpa + o);
  const base = r.gpa + offs.start;
  for (let pass = 0; pass < (p.passes ?? 1); pass++) {
    for (const v of vcpus) {
      let fixed0 = v.stats.pf_fixed;
      let refault0 = m.refaults;
      const onResult = (i: number, res: AccessResult): void => {
        x.checker.onAccess(v, gpas === null ? base + i * offs.stride : gpas[i]!, kind, res, opts);
        d['accesses'] = (d['accesses'] ?? 0) + 1;
        if (res.exit !== 'none') bump(d, EXIT_KEYS[res.exit] ?? `exits_${res.exit}`);
        else if (v.stats.pf_fixed !== fixed0)
          bump(d, (m.refaults > refault0 ? REFAULT_KEYS : FIRST_FAULT_KEYS)[res.level]!);
        fixed0 = v.stats.pf_fixed;
        refault0 = m.refaults;
      };
      const batch = { ...opts, onResult };
      if (gpas === null) v.accessRange(base, offs.n, kind, { ...batch, stride: offs.stride });
      else v.accessList(gpas, kind, batch);
    }
  }
}

function hostEvent(x: ExecCtx, c: VmCtx, h: HostStep, race?: RacingFault): void {
  const r = c.regions.get(h.region)!;
  // A fault that looked up its pfn before the event and installs it after (see vcpu.beginAccess).
  const racer = race === undefined ? undefined : c.vm.vcpus[race.vcpu ?? 0]!;
  const racing = racer?.beginAccess(r.decl.gpa + race!.offset, race!.kind ?? 'read');
  const addr = r.hva + (h.offset ?? 0);
  const len = h.length ?? r.decl.size - (h.offset ?? 0);
  const m = c.vm.model;
  const zapped0 = m.sptes_zapped_4k + m.sptes_zapped_2m + m.sptes_zapped_1g + m.sptes_zapped_nonleaf;
  let done = true;
  try {
    hostCall(x, h, r, addr, len);
  } catch (e) {
    // The host refuses an event the run's own state makes impossible (ksmMerge or thpCollapse after the
    // region was munmap'd): it checks before it changes anything, so the step failed and the run is an
    // error, as a failed ioctl is, not zaplab's internal error. (The parser rules out what it can see.)
    if (!(e instanceof RangeError)) throw e;
    x.errors.push(`${x.label}: ${e.message}`);
    done = false;
  }
  // kvm_unmap_gfn_range runs under mmu_lock for write
  const zapped = m.sptes_zapped_4k + m.sptes_zapped_2m + m.sptes_zapped_1g + m.sptes_zapped_nonleaf - zapped0;
  bump(x.derived, 'sptes_zapped_write_lock', zapped);
  if (done) bump(x.derived, `host_${h.event}`);
  if (racing !== undefined) {
    const gpa = r.decl.gpa + race!.offset;
    const kind = race!.kind ?? 'read';
    x.checker.onAccess(racer!, gpa, kind, racing.finish());
  }
  x.checker.auditPoint('host-event');
}

/** The host-side call of a host step (mm/: munmap, mprotect, migration, THP, swap, KSM). */
function hostCall(x: ExecCtx, h: HostStep, r: RegionState, addr: number, len: number): void {
  const host = x.kvm.host;
  switch (h.event) {
    case 'munmap':
      host.munmap(addr, len);
      break;
    case 'mprotect':
      host.mprotect(addr, len, h.writable ?? false);
      break;
    case 'migrate':
      host.migrate(addr, len);
      break;
    case 'thpSplit':
      host.thpSplit(addr);
      break;
    case 'thpCollapse':
      host.thpCollapse(addr);
      break;
    case 'swapOut':
      host.swapOut(addr, len);
      break;
    case 'ksmMerge':
      host.ksmMerge(addr, r.hva + (h.with ?? 0));
      break;
  }
}
