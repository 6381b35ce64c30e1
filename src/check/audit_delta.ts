/**
 * What changed in a VM since the checker's last whole-VM SPTE audit, so the next audit walks only the
 * page tables whose verdicts can have changed: an audit finding is a pure function of the leaf's SPTE,
 * its root, the memslots over its gfn, the host pages behind them and the memtype inputs, and the
 * checker reports each finding once (it dedupes repeats), so a table none of whose inputs moved can only
 * produce findings that were already reported.
 *
 * Tracked precisely: SPTE changes (the TDP engine's numeric recorder: gfn and level of every write),
 * memslot changes (slot objects that appeared or went away, as gfn intervals) and page fault-ins on the
 * host (hva ranges, mapped to the gfns of every slot over them). Anything else that an audit reads (the
 * roots and their roles, the memtype inputs, an invalidation in flight, freed or reused host pages, any
 * other host mapping change, private or guest_memfd memory, TDX, the shadow MMU) makes the next audit a
 * whole one.
 *
 * Kernel counterpart: none (the checker's own bookkeeping).
 */
import type { VmState } from '../kvm/vm_state.ts';
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';
import type { X86Mmu } from '../x86/mmu/mmu.ts';
import { shadowMmuOf } from '../x86/mmu/shadow_mmu.ts';

/** More changed gfn intervals than this and the audit is a whole one. */
const MAX_INTERVALS = 64;

/** Which tables an audit must walk (levels ≥ 3 always). */
export interface AuditFilter {
  /** Walk the table of `level` (1 or 2) whose first gfn is `baseGfn`? */
  scan(level: number, baseGfn: number): boolean;
}

/** Changed regions and gfn intervals: collected between two audits, then read by the second. */
class Dirty implements AuditFilter {
  /** everything below the roots is suspect (an entry at level ≥ 4 changed) */
  everything = false;
  /** 2M regions (gfn / 512) where a level-1 or level-2 entry changed */
  readonly dirty2m = new Set<number>();
  /** 1G regions (gfn / 2^18) holding such a 2M region */
  readonly holds1g = new Set<number>();
  /** 1G regions where a level-3 entry changed (all below it is suspect) */
  readonly dirty1g = new Set<number>();
  last2m = -1;
  /** changed gfn intervals, [start, end) pairs */
  readonly intervals: number[] = [];

  clear(): void {
    this.everything = false;
    this.dirty2m.clear();
    this.holds1g.clear();
    this.dirty1g.clear();
    this.last2m = -1;
    this.intervals.length = 0;
  }

  /** Gfns [start, end) changed: their 2M regions, or an interval when that is shorter to note. */
  addRange(start: number, end: number): void {
    const q0 = Math.floor(start / 512);
    const q1 = Math.ceil(end / 512);
    if (q1 - q0 > 512) {
      this.intervals.push(start, end);
      return;
    }
    for (let q = q0; q < q1; q++) {
      this.dirty2m.add(q);
      this.holds1g.add(Math.floor(q / 512));
    }
  }

  scan(level: number, baseGfn: number): boolean {
    if (level >= 3) return true;
    const r = Math.floor(baseGfn / 262144);
    if (this.dirty1g.has(r)) return true;
    if (level === 2 ? this.holds1g.has(r) : this.dirty2m.has(Math.floor(baseGfn / 512))) return true;
    const end = baseGfn + (level === 2 ? 262144 : 512);
    const iv = this.intervals;
    for (let i = 0; i < iv.length; i += 2) if (iv[i]! < end && baseGfn < iv[i + 1]!) return true;
    return false;
  }
}

export class AuditDelta {
  private valid = false;
  /** changes since the last audit */
  private pending = new Dirty();
  /** what the current audit walks (the previous `pending`) */
  private current = new Dirty();
  private fingerprint = '';
  private mmEpoch = -1;
  private poolEpoch = -1;
  private faultSeq = 0;
  private slots: KvmMemorySlot[][] = [];

  /** The next audit walks everything (the last one set findings aside that it must see again). */
  invalidate(): void {
    this.valid = false;
  }

  /** The TDP engine changed the SPTE of `level` at gfn (any root, any address space). */
  noteSpte(gfn: number, level: number): void {
    const d = this.pending;
    if (level >= 4) {
      d.everything = true;
      return;
    }
    if (level === 3) {
      d.dirty1g.add(Math.floor(gfn / 262144));
      return;
    }
    const q = Math.floor(gfn / 512);
    if (q === d.last2m) return;
    d.last2m = q;
    d.dirty2m.add(q);
    d.holds1g.add(Math.floor(q / 512));
  }

  /**
   * Start a whole-VM audit: the filter for its SPTE walk, or null when it must walk everything. Either way
   * the changes noted so far are consumed: the next audit is measured from this one.
   */
  begin(vm: VmState): AuditFilter | null {
    const d = this.pending;
    const whole = !this.valid || d.everything || !this.onlyTrackedChanges(vm, d);
    this.pending = this.current;
    this.pending.clear();
    this.current = d;
    this.snapshot(vm);
    return whole ? null : d;
  }

  /** True if nothing but SPTEs, memslots and host fault-ins changed; adds their gfn intervals to d. */
  private onlyTrackedChanges(vm: VmState, d: Dirty): boolean {
    const host = vm.kvm.host;
    if (vm.info.hasPrivateMem || vm.info.hasMirroredTdp || shadowMmuOf(vm) !== null) return false;
    if (fingerprint(vm) !== this.fingerprint) return false;
    if (host.mmEpoch !== this.mmEpoch || host.pfns.epoch !== this.poolEpoch) return false;
    const now: KvmMemorySlot[][] = [];
    for (let as = 0; as < vm.nrAs; as++) {
      const all = vm.activeMemslots(as).all();
      // guest_memfd pages come and go without a host-mm event
      if (all.some((s) => s.gmem !== null)) return false;
      now.push(all);
      const before = new Set(this.slots[as] ?? []);
      const after = new Set(all);
      for (const s of all) if (!before.has(s)) d.addRange(s.baseGfn, s.baseGfn + s.npages);
      for (const s of before) if (!after.has(s)) d.addRange(s.baseGfn, s.baseGfn + s.npages);
    }
    const ok = host.faults.since(this.faultSeq, (start, len) => {
      for (const set of now)
        for (const s of set) {
          const a = Math.max(start, s.userspaceAddr);
          const b = Math.min(start + len, s.userspaceAddr + s.npages * 4096);
          if (a < b) d.addRange(s.baseGfn + Math.floor((a - s.userspaceAddr) / 4096), s.baseGfn + Math.ceil((b - s.userspaceAddr) / 4096));
        }
    });
    return ok && d.intervals.length <= 2 * MAX_INTERVALS;
  }

  private snapshot(vm: VmState): void {
    this.valid = true;
    this.fingerprint = fingerprint(vm);
    this.mmEpoch = vm.kvm.host.mmEpoch;
    this.poolEpoch = vm.kvm.host.pfns.epoch;
    this.faultSeq = vm.kvm.host.faults.seq;
    this.slots = [];
    for (let as = 0; as < vm.nrAs; as++) this.slots.push(vm.activeMemslots(as).all());
  }
}

/**
 * Everything else a leaf's verdict reads, as one string: the roots and their roles, the MMIO SPTE value,
 * an invalidation in flight, the vCPUs, and the memtype inputs (vCPU 0's CR0, PAT and MTRRs, the VM's
 * non-coherent DMA and quirks).
 */
function fingerprint(vm: VmState): string {
  const tdp = (vm.mmu as Partial<X86Mmu>).tdp;
  let s = `${vm.mmuInvalidateInProgress}|${vm.vcpus.length}|${vm.arch.noncoherentDmaCount}|${vm.arch.disabledQuirks}|`;
  if (tdp !== undefined) {
    s += `${tdp.mmioValue}|`;
    for (const r of tdp.roots) s += `${r}:${tdp.pool.role[r]},`;
  }
  const v0 = vm.vcpus[0];
  if (v0 !== undefined) {
    const m = v0.memtype;
    s += `|${m.cr0}|${m.pat}|${m.deftype}|${m.varBase.join(',')}|${m.varMask.join(',')}|${m.varList.join(',')}|${m.fixed.join(',')}`;
  }
  return s;
}
