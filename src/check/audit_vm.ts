/**
 * Per-access and per-VM invariants (read-only): a guest access against the reference semantics
 * (INV-ACCESS-*), guest_memfd bindings against the active memslots (INV-GMEM-001), and TDX private
 * mappings that must survive everything but their own slot's deletion or conversion (INV-TDX-001).
 *
 * Kernel counterparts: arch/x86/kvm/mmu/mmu.c#kvm_mmu_faultin_pfn (the access contract, see reference.ts),
 * virt/kvm/guest_memfd.c#kvm_gmem_bind/kvm_gmem_unbind and kvm_main.c#kvm_set_memory_region's B14 check
 * (the 6.12–6.18 flag-clearing use-after-free, memslot-abi.md §2.2), arch/x86/kvm/mmu/mmu.c's TDX rule
 * that only kvm_arch_flush_shadow_memslot of the slot itself or an attribute conversion removes private
 * S-EPT pages (mmu-zap.md §5.1, §5.3).
 */
import type { VmState } from '../kvm/vm_state.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { AccessKind, AccessResult } from '../kvm/api_types.ts';
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';
import type { KvmGmemFile } from '../kvm/guest_memfd.ts';
import { KVM_MEMSLOT_INVALID } from '../uapi/kvm.ts';
import type { Report, MirrorLeaf } from './audit_mmu.ts';
import {
  classifyGpa,
  expectedMemtype,
  gmemPfn,
  isPrivateGfn,
  referenceAccessInto,
  retryAcceptable,
} from './reference.ts';

const hex = (n: number): string => '0x' + n.toString(16);

const describeAccess = (kind: AccessKind, gpa: number, vcpu: Vcpu): string =>
  `${kind} of gpa ${hex(gpa)} by vCPU ${vcpu.vcpuId}`;

/** INV-ACCESS-*: compare what the access did with what KVM should have done. */
export function checkAccess(
  vm: VmState,
  vcpu: Vcpu,
  gpa: number,
  kind: AccessKind,
  result: AccessResult,
  opts: { private?: boolean } | undefined,
  report: Report,
): void {
  // Under shadow paging the access names a guest virtual address (the reference walks the guest's
  // tables first); an emulated write to a shadowed guest table reaches no page of its own (pfn -1).
  const shadowPaging = !vm.cfg.tdp;
  if (shadowPaging && result.exit === 'none' && result.pfn < 0) return;
  const exp = referenceAccessInto(vm, vcpu, gpa, kind, opts);
  // classifyGpa's gfns, without its object where there is no shared bit
  const c = vm.arch.gfnDirectBits === 0 ? null : classifyGpa(vm, gpa, opts);
  const hwGfn = c === null ? Math.floor(gpa / 4096) : c.hwGfn;
  const gfn = c === null ? hwGfn : c.gfn;
  // Described only when something is reported (this runs for every guest access): describeAccess().
  if (result.exit === 'retry') {
    // shadow paging: a failed guest walk is a #PF for the guest, reported as 'retry'
    if (
      shadowPaging
        ? exp.kind !== 'retry' && vm.mmuInvalidateInProgress === 0
        : !retryAcceptable(vm, vcpu, gfn)
    )
      report(
        'INV-ACCESS-004',
        `${describeAccess(kind, gpa, vcpu)} ended in 'retry' (${result.reason}) with no INVALID slot and no invalidation in progress`,
        gfn,
      );
    return;
  }
  if (exp.kind === 'retry' && exp.walk !== undefined) {
    // Through a table in no memslot nothing may be reached: the pages shadowing it must be gone.
    if (result.exit === 'none' && exp.walk === 'failed')
      report(
        'INV-ACCESS-001',
        `${describeAccess(kind, gpa, vcpu)} (a guest virtual address) reached pfn ${hex(result.pfn)}, but KVM's walk of the guest's page tables fails: ${exp.why.slice(11)}`,
        gfn,
        result.pfn,
      );
    return;
  }
  if (exp.kind === 'retry') {
    // The only acceptable outcome while the slot is INVALID is to wait (or, for a race, an exit that
    // does not reach memory); reaching a page means a translation of the slot outlived the flush.
    if (result.exit === 'none')
      report(
        'INV-ACCESS-003',
        `${describeAccess(kind, gpa, vcpu)} reached pfn ${hex(result.pfn)} through ${exp.why}`,
        gfn,
        result.pfn,
      );
    return;
  }
  if (exp.kind === 'page') {
    if (result.exit !== 'none') {
      if (vm.mmuInvalidateInProgress > 0) return;
      report(
        'INV-ACCESS-002',
        `${describeAccess(kind, gpa, vcpu)} exited '${result.exit}', expected the page ${hex(exp.pfn)}`,
        gfn,
        exp.pfn,
      );
      return;
    }
    if (result.pfn !== exp.pfn) {
      report(
        'INV-ACCESS-001',
        `${describeAccess(kind, gpa, vcpu)} reached pfn ${hex(result.pfn)}, but memslot ${exp.slot.id} and the ${exp.isPrivate ? 'guest_memfd' : 'host mapping'} say pfn ${hex(exp.pfn)}`,
        gfn,
        result.pfn,
      );
      return;
    }
    if (!exp.isPrivate && !shadowPaging) {
      const span = result.level === 1 ? 1 : result.level === 2 ? 512 : 262144;
      const want = expectedMemtype(vcpu, hwGfn - (hwGfn % span));
      if (result.memtype !== want)
        report(
          'INV-ACCESS-005',
          `${describeAccess(kind, gpa, vcpu)} used memtype ${result.memtype}, KVM now computes ${want}`,
          gfn,
          result.pfn,
        );
    }
    return;
  }
  if (result.exit !== exp.kind) {
    const got = result.exit === 'none' ? `reached pfn ${hex(result.pfn)}` : `exited '${result.exit}'`;
    const want =
      exp.kind === 'memory_fault'
        ? `a memory fault (${exp.why})`
        : exp.kind === 'mmio'
          ? 'an MMIO exit'
          : 'vm_dead';
    report(
      result.exit === 'none' ? 'INV-ACCESS-001' : 'INV-ACCESS-002',
      `${describeAccess(kind, gpa, vcpu)} ${got}, expected ${want}`,
      gfn,
      result.exit === 'none' ? result.pfn : undefined,
    );
  }
}

/** The guest_memfd files the checker knows of for a VM: seen bound to a slot, or found in the fd table. */
const GMEM_CACHE: ReadonlySet<PropertyKey> = new Set(['probed']);

export class GmemFiles {
  private readonly files = new Set<KvmGmemFile>();
  private fdTop = 3;
  /** kvm.fdsInstalled at the last probe of the fd table */
  private probed = -1;

  /** What is a cache, not state (see AuditDelta.cacheKeys). */
  cacheKeys(into: Map<object, ReadonlySet<PropertyKey>>): void {
    into.set(this, GMEM_CACHE);
  }

  /** Learn files from the slots and the fd table (fds are never reused; probe past the last one seen). */
  refresh(vm: VmState): void {
    for (let as = 0; as < vm.nrAs; as++)
      for (const s of vm.activeMemslots(as).all())
        if (s.gmem !== null) this.files.add(s.gmem.file as KvmGmemFile);
    // no fd installed since the last probe: the table holds no file not seen then
    if (vm.kvm.fdsInstalled === this.probed) return;
    this.probed = vm.kvm.fdsInstalled;
    for (let fd = 3, misses = 0; misses < 64; fd++) {
      const f = vm.kvm.lookupFd(fd);
      if (f === undefined) {
        if (fd >= this.fdTop) misses++;
        continue;
      }
      this.fdTop = Math.max(this.fdTop, fd + 1);
      if (f.kind === 'guest_memfd' && f.vmId === vm.id) this.files.add(f);
    }
  }

  /** INV-GMEM-001: each binding names a slot that is in the active set (or its INVALID copy is). */
  audit(vm: VmState, report: Report): void {
    this.refresh(vm);
    for (const file of this.files) {
      for (const b of file.bindings) {
        const active = vm.activeMemslots(b.slot.asId).idToMemslot(b.slot.id);
        if (active === b.slot) continue;
        // kvm_invalidate_memslot publishes a copy that shares the binding while the zap runs.
        if (active !== null && active.flags & KVM_MEMSLOT_INVALID && active.gmem?.file === file) continue;
        report(
          'INV-GMEM-001',
          `guest_memfd ${file.id} pages [${hex(b.start)}, ${hex(b.end)}) are bound to a memslot ${b.slot.id} object that is no longer in the active set (use-after-free)`,
          b.slot.baseGfn,
        );
      }
    }
  }
}

interface PrivateMapping {
  pfn: number;
  slot: KvmMemorySlot;
}

/** INV-TDX-001: private (mirror-root) mappings seen at the last audit that vanished without cause. */
export class TdxTracker {
  private mapped = new Map<number, PrivateMapping>();

  audit(vm: VmState, leafs: readonly MirrorLeaf[], report: Report): void {
    const now = new Map<number, PrivateMapping>();
    for (const l of leafs) {
      const slot = vm.activeMemslots(0).peekMemslot(l.gfn);
      if (slot !== null) now.set(l.gfn, { pfn: l.pfn, slot });
    }
    if (!vm.dead) {
      for (const [gfn, was] of this.mapped) {
        const is = now.get(gfn);
        if (is !== undefined && is.pfn === was.pfn) continue;
        const slot = vm.activeMemslots(0).peekMemslot(gfn);
        // Allowed: the slot was deleted (or replaced), the gfn converted to shared, the page punched out.
        // (An INVALID copy is another object: the slot's own DELETE is under way.)
        if (slot !== was.slot) continue;
        if (!isPrivateGfn(vm, gfn) || gmemPfn(was.slot, gfn) !== was.pfn) continue;
        report(
          'INV-TDX-001',
          `private page ${hex(was.pfn)} of gfn ${hex(gfn)} (memslot ${was.slot.id}, still private) lost its S-EPT mapping: its content is gone`,
          gfn,
          was.pfn,
        );
      }
    }
    this.mapped = now;
  }
}
