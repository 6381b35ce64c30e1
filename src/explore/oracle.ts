/**
 * What the explorer's oracle accepts from the checker (engine.ts runs the checker after every step): the
 * reports the kernel's contract allows while a DELETE/MOVE is in flight or an access spans several
 * steps, and the window of the memslot update they depend on. Everything else the checker reports ends
 * the schedule as a violation.
 *
 * Model-only file (no kernel counterpart); the contract it encodes: an access linearizes at any step
 * boundary it spanned; between publishing a DELETE/MOVE's INVALID copy and the end of its flush the
 * slot may legitimately still be mapped (kvm_invalidate_memslot, kvm_arch_flush_shadow_memslot).
 */
import type { Violation } from '../check/checker.ts';
import { expectedMemtype, type Expected } from '../check/reference.ts';
import type { AccessKind, AccessResult } from '../kvm/api_types.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { ExploreViolation } from './execution_types.ts';

/** What an in-flight DELETE/MOVE is doing, for the oracle. */
export interface SlotWindow {
  lo: number;
  hi: number;
  /**
   * 'unflushed': INVALID published, flush not started; 'zapping-all': kvm_mmu_zap_all_fast stopped at a
   * resched point with invalidated roots not yet zapped; 'dropped': the precise zap stopped at a resched
   * point (what it zapped must be flushed; a TDP walk that yielded inside its SPTE walk has not yet
   * reached [resume, hi), which stays mapped, as in the kernel); 'flushed': the flush is done; 'committing': the new set is
   * published and synchronize_srcu runs before kvm_commit_memory_region (the old slot is out of the
   * active set but not yet freed, so its guest_memfd binding still names it).
   */
  phase: 'unflushed' | 'zapping-all' | 'dropped' | 'flushed' | 'committing';
  /** with 'dropped': the first gfn the precise zap has not reached yet (hi once its walk is done) */
  resume?: number | undefined;
}

/** Findings about gfns a dropped precise zap has not reached yet: the SPTE and TLB entries it will zap. */
const NOT_YET_ZAPPED = new Set(['INV-ZAP-001', 'INV-ZAP-002', 'INV-ACCESS-003']);

/** A guest access between its first and last step, with what the reference said at each step boundary. */
export interface InFlight {
  vcpu: Vcpu;
  gpa: number;
  kind: AccessKind;
  refs: Expected[];
  /** the EPT memtype KVM computed for the gfn at each of those step boundaries */
  mts: number[];
}

/** The last access that completed, with what the reference and KVM's memtype said along its way. */
export interface Completed {
  gfn: number;
  result: AccessResult;
  refs: Expected[];
  mts: number[];
}

/** Could the access have produced `r` had it happened at once when the reference said `e`? */
function matches(e: Expected, r: AccessResult): boolean {
  if (e.kind === 'page') return r.exit === 'none' && r.pfn === e.pfn;
  if (e.kind === 'mmio') return r.exit === 'mmio';
  if (e.kind === 'retry') return r.exit !== 'none';
  // "no host page" only means the access has not allocated it yet
  if (e.kind === 'memory_fault') return r.exit === 'memory_fault' && !e.why.startsWith('no host page');
  return r.exit === 'vm_dead';
}

/**
 * Access reports the kernel's contract allows: a result the reference allowed at any step boundary the
 * access spanned (it linearizes there), and, while a DELETE/MOVE has published its INVALID copy and
 * not yet finished zapping, an access that reached the slot's old page through a live SPTE or TLB entry
 * (INV-ACCESS-003: it linearizes before the ioctl).
 */
export function transient(v: Violation, done: Completed | null, w: SlotWindow | null): boolean {
  if (done !== null && v.id.startsWith('INV-ACCESS-') && v.gfn === done.gfn) {
    // the memtype too: right if KVM computed it at one of the access's step boundaries
    if (v.id === 'INV-ACCESS-005')
      return done.result.exit === 'none' && done.mts.includes(done.result.memtype);
    if (done.refs.some((e) => matches(e, done.result))) return true;
  }
  // A stale memtype sitting in an SPTE harms nothing until an access uses it, and every access is
  // judged by its own memtype (INV-ACCESS-005 above): the 2019 VFIO failure was a guest using a memtype
  // from before its CR0.CD toggle after a memslot update, not the stale SPTE's existence (a v5.3 kernel
  // holds one from the toggle until the next zap under every design).
  if (v.id === 'INV-MEMTYPE-001') return true;
  if (w === null || (w.phase !== 'unflushed' && w.phase !== 'zapping-all'))
    return notYetZapped(w, v.id, v.gfn);
  return v.id === 'INV-ACCESS-003' && v.gfn !== undefined && v.gfn >= w.lo && v.gfn < w.hi;
}

/** A finding about a gfn the precise zap, stopped at a resched point, has not reached yet. */
export function notYetZapped(w: SlotWindow | null, id: string, gfn: number | undefined): boolean {
  if (w === null || w.phase !== 'dropped' || gfn === undefined || !NOT_YET_ZAPPED.has(id)) return false;
  return gfn >= (w.resume ?? w.hi) && gfn < w.hi;
}

export /** The EPT memtype (bits 5:3) KVM computes now for the gfn of gpa (checkAccess compares the access's). */
function memtypeNow(vcpu: Vcpu, gpa: number): number {
  return vcpu.vm.cfg.tdp ? expectedMemtype(vcpu, Math.floor(gpa / 4096)) : -1;
}

export function toExploreViolation(v: Violation, step: number): ExploreViolation {
  const out: ExploreViolation = { id: v.id, message: v.message, step, trace: v.trace };
  if (v.gfn !== undefined) out.gfn = v.gfn;
  if (v.pfn !== undefined) out.pfn = v.pfn;
  return out;
}
