/**
 * What changed in a VM since the checker's last whole-VM audit, so the next audit looks only at what can
 * have changed its findings: an audit finding is a pure function of a leaf's SPTE (or a TLB entry), its
 * root, the memslots over its gfn, the host pages behind them and the memtype inputs, and the checker
 * reports each finding once (it dedupes repeats), so what none of whose inputs moved can only produce
 * findings that were already reported.
 *
 * Tracked precisely: SPTE changes (the TDP engine's numeric recorder: gfn and level of every write),
 * memslot changes (slot objects that appeared or went away, as gfn intervals), page fault-ins on the
 * host (hva ranges, mapped to the gfns of every slot over them) and vCPU TLB writes (each TLB's write
 * counter). The SPTE walk visits the tables over changed gfns; the TLB audit visits the entries over
 * gfns whose slots or host pages changed or that a changed TLB holds, in every vCPU alike (so the
 * per-audit pfn memo suppresses the same repeats as in a whole audit). Anything else that an audit reads
 * (the roots and their roles, the memtype inputs, an invalidation in flight, freed or reused host pages,
 * any other host mapping change, private or guest_memfd memory, TDX, the shadow MMU) makes the next
 * audit a whole one. Those inputs are compared value by value (Inputs), no string is built.
 *
 * Kernel counterpart: none (the checker's own bookkeeping).
 */
import type { VmState } from '../kvm/vm_state.ts';
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';
import type { KvmMemslots } from '../kvm/memslots.ts';
import type { X86Mmu } from '../x86/mmu/mmu.ts';
import { shadowMmuOf } from '../x86/mmu/shadow_mmu.ts';
import { PAGES_PER_LEVEL } from '../x86/mmu/tdp_iter.ts';
import { tlbGoesAway } from './audit_tlb.ts';
import { TlbSeen, type GfnRanges } from './tlb_seen.ts';
import { LeafCounts } from './leaf_counts.ts';
import { DIRTY_CACHE, Dirty, type AuditFilter, type TlbFilter } from './audit_dirty.ts';
import { HvaIndex } from './hva_index.ts';

export type { AuditFilter, TlbFilter } from './audit_dirty.ts';

/** More changed gfn intervals than this and the audit is a whole one. */
const MAX_INTERVALS = 64;
/** AuditDelta.cacheKeys */
const DELTA_CACHE: ReadonlySet<PropertyKey> = new Set(['tlbSeen', 'tlb', 'leafs', 'byHva']);

const FIXED_WORDS: unique symbol = Symbol('zaplab.inputsFixedWords');
const SRC: unique symbol = Symbol('zaplab.inputsFixedSource');
const SRC_WORDS: unique symbol = Symbol('zaplab.inputsFixedSourceWords');

/**
 * Audit inputs kept as values: `update` compares the VM's against the last ones recorded, one by one,
 * and records the new ones. Scalars and the variable-range MTRR lists go in one list; the fixed-range
 * MTRR bytes in their own byte array (compared in a monomorphic loop).
 */
class Inputs {
  private readonly vals: unknown[] = [];
  private readonly fixed = new Uint8Array(88);
  /** (under symbol keys, left out of state hashes: views of bytes hashed elsewhere) `fixed` as 22 words */
  private readonly [FIXED_WORDS] = new Int32Array(this.fixed.buffer, 0, 22);
  /** the last source of the fixed-range bytes, and its bytes as words (null: not 4-byte aligned) */
  private [SRC]: Uint8Array | null = null;
  private [SRC_WORDS]: Int32Array | null = null;
  private i = 0;
  private differs = false;

  private put(v: unknown): void {
    if (this.i >= this.vals.length || this.vals[this.i] !== v) {
      this.differs = true;
      this.vals[this.i] = v;
    }
    this.i++;
  }

  private putAll(a: readonly number[]): void {
    this.put(a.length);
    for (let k = 0; k < a.length; k++) this.put(a[k]);
  }

  /** The fixed-range MTRR bytes (88 of them, as struct kvm_mtrr holds). */
  private putFixed(a: Uint8Array): void {
    const f = this.fixed;
    if (a.length !== f.length)
      throw new TypeError(`audit inputs: ${a.length} fixed-range MTRR bytes, not 88`);
    if (a !== this[SRC]) {
      this[SRC] = a;
      this[SRC_WORDS] = a.byteOffset % 4 === 0 ? new Int32Array(a.buffer, a.byteOffset, 22) : null;
    }
    let same = true;
    const w = this[SRC_WORDS];
    // (compared a word at a time where the source allows: the same answer, a quarter of the loads)
    if (w !== null) {
      const fw = this[FIXED_WORDS];
      for (let k = 0; k < 22; k++) if (w[k] !== fw[k]) same = false;
    } else for (let k = 0; k < 88; k++) if (a[k] !== f[k]) same = false;
    if (same) return;
    this.differs = true;
    f.set(a);
  }

  /**
   * The roots and their roles, the MMIO SPTE value, an invalidation in flight, the number of vCPUs, and
   * the memtype inputs (vCPU 0's CR0, PAT and MTRRs with their list order, the VM's non-coherent DMA
   * and quirks). True if any differs from the last update (or there was none).
   */
  update(vm: VmState): boolean {
    this.i = 0;
    this.differs = false;
    this.put(vm.mmuInvalidateInProgress);
    this.put(vm.vcpus.length);
    this.put(vm.arch.noncoherentDmaCount);
    this.put(vm.arch.disabledQuirks);
    const tdp = (vm.mmu as Partial<X86Mmu>).tdp;
    if (tdp !== undefined) {
      this.put(tdp.mmioValue);
      this.put(tdp.roots.length);
      for (const r of tdp.roots) {
        this.put(r);
        this.put(tdp.pool.role[r]);
      }
    }
    const v0 = vm.vcpus[0];
    // (a VM with no vCPU records -1 there: what it records for v0's bytes is then still compared)
    this.put(v0 === undefined ? -1 : 0);
    if (v0 !== undefined) {
      const m = v0.memtype;
      this.put(m.cr0);
      this.put(m.pat);
      this.put(m.deftype);
      this.putAll(m.varBase);
      this.putAll(m.varMask);
      this.putAll(m.varList);
      this.putFixed(m.fixed);
    }
    if (this.i !== this.vals.length) {
      this.differs = true;
      this.vals.length = this.i;
    }
    const differs = this.differs;
    // back to constants between updates (state hashes read this object)
    this.i = 0;
    this.differs = false;
    return differs;
  }
}

export class AuditDelta {
  private valid = false;
  /** present 4K leafs per 2M region, kept from the engine's reports (recounted by every whole walk) */
  readonly leafs = new LeafCounts();
  /** changes since the last audit */
  private pending = new Dirty(this.leafs);
  /** what the current audit walks (the previous `pending`) */
  private current = new Dirty(this.leafs);
  private readonly inputs = new Inputs();
  private mmEpoch = -1;
  private poolEpoch = -1;
  private faultSeq = 0;
  /** per address space: the active set and its generation at the last audit, and its slots then */
  private sets: (KvmMemslots | null)[] = [];
  private gens: number[] = [];
  private slots: KvmMemorySlot[][] = [];
  /** `slots` by hva (a function of them: made again whenever they change) */
  private byHva = new HvaIndex();
  /** some active slot is bound to a guest_memfd (its pages come and go without a host-mm event) */
  private gmem = false;
  /** per vCPU: its TLB as the last audit that checked its entries saw it */
  private tlbSeen: TlbSeen[] = [];
  /** the TLB filter of the current audit (null: every entry) */
  tlb: TlbFilter | null = null;

  /**
   * The changed gfn ranges of the current incremental TLB audit and each vCPU's TLB as this audit sees
   * it (null when the TLB audit is a whole one).
   */
  get tlbDelta(): { ranges: GfnRanges; seen: readonly TlbSeen[] } | null {
    return this.tlb === null ? null : { ranges: this.current.tlbRanges, seen: this.tlbSeen };
  }

  /** The next audit walks everything (the last one set findings aside that it must see again). */
  invalidate(): void {
    this.valid = false;
  }

  /**
   * The TDP engine changed the SPTE of `level` at gfn (any root, any address space) from one whose low
   * word is oldLo to (newLo, newHi).
   */
  noteSpte(gfn: number, level: number, oldLo: number, newLo: number, newHi: number): void {
    this.pending.noteSpte(gfn, level, oldLo, newLo, newHi);
  }

  /**
   * kvm_mmu_zap_all_fast began: the next audit is a whole one (it invalidates and zaps every root), so
   * the zap's 4K changes are noted by region only (Dirty.zapAll).
   */
  noteZapAll(): void {
    this.pending.zapAll = true;
  }

  /**
   * `count` non-present SPTEs of one table frozen (TdpTraceRecorder.sptesFrozen), the first of `level`
   * at gfn, each next one a level's span on.
   */
  noteSpteRun(gfn: number, level: number, count: number): void {
    this.pending.noteFrozenRun(gfn, level, count);
  }

  /**
   * tdp_mmu_split_huge_page linked a table of 512 leafs one level below a huge leaf at gfn (the engine
   * reports the parent's change, not the children it wrote before linking the table).
   */
  noteSplit(gfn: number, level: number): void {
    this.pending.noteSplit(gfn, level);
  }

  /**
   * Start a whole-VM audit: the filter for its SPTE walk, or null when it must walk everything (then
   * `tlb` is null too: every TLB entry is checked). Either way the changes noted so far are consumed:
   * the next audit is measured from this one.
   */
  begin(vm: VmState): AuditFilter | null {
    const d = this.pending;
    // recorded at every audit (the next one compares against it), so evaluated first
    const tracked = this.onlyTrackedChanges(vm, d);
    const whole = !this.valid || d.everything || d.zapAll || !tracked;
    this.pending = this.current;
    this.pending.clear();
    this.current = d;
    this.valid = true;
    this.tlb = whole || !this.tlbChanges(vm, d) ? null : d;
    if (whole) this.recordTlbs(vm);
    return whole ? null : d;
  }

  /** True if nothing but SPTEs, memslots and host fault-ins changed; adds their gfn intervals to d. */
  private onlyTrackedChanges(vm: VmState, d: Dirty): boolean {
    const host = vm.kvm.host;
    // Record everything even when the answer is already no: the next audit compares against it.
    let ok = !this.inputs.update(vm);
    if (host.mmEpoch !== this.mmEpoch || host.pfns.epoch !== this.poolEpoch) ok = false;
    this.mmEpoch = host.mmEpoch;
    this.poolEpoch = host.pfns.epoch;
    if (!this.slotChanges(vm, d)) ok = false;
    if (vm.info.hasPrivateMem || vm.info.hasMirroredTdp || shadowMmuOf(vm) !== null || this.gmem) ok = false;
    const from = this.faultSeq;
    this.faultSeq = host.faults.seq;
    if (!ok) return false;
    const byHva = this.byHva;
    const kept = host.faults.since(from, (start, len) => {
      // every slot over the fault, in address-space then slot order
      const over = byHva.over(start, start + len);
      for (let k = 0; k < over.length; k++) {
        const s = over[k]!;
        const a = Math.max(start, s.userspaceAddr);
        const b = Math.min(start + len, s.userspaceAddr + s.npages * 4096);
        d.addRange(
          s.baseGfn + Math.floor((a - s.userspaceAddr) / 4096),
          s.baseGfn + Math.ceil((b - s.userspaceAddr) / 4096),
        );
      }
    });
    return kept && d.intervals.length <= 2 * MAX_INTERVALS;
  }

  /** Note the slots that appeared or went away since the last audit (a set's generation says whether any did). */
  private slotChanges(vm: VmState, d: Dirty): boolean {
    let same = this.sets.length === vm.nrAs;
    for (let as = 0; as < vm.nrAs && same; as++) {
      const set = vm.activeMemslots(as);
      same = set === this.sets[as] && set.generation === this.gens[as];
    }
    if (same) return true;
    let gmem = false;
    for (let as = 0; as < vm.nrAs; as++) {
      const set = vm.activeMemslots(as);
      const all = set.all();
      for (let k = 0; k < all.length && !gmem; k++) if (all[k]!.gmem !== null) gmem = true;
      const gone = slotDiff(this.slots[as] ?? [], all, d);
      for (const s of gone) d.addRange(s.baseGfn, s.baseGfn + s.npages);
      this.sets[as] = set;
      this.gens[as] = set.generation;
      this.slots[as] = all;
    }
    this.sets.length = this.gens.length = this.slots.length = vm.nrAs;
    this.byHva.build(this.slots);
    this.gmem = gmem;
    return !gmem;
  }

  /**
   * Add to d's TLB ranges the gfns of every TLB entry that changed, appeared or went away since the last
   * audit (all a TLB holds where its entries were not audited then); false when the TLB audit must be a
   * whole one (the vCPUs changed).
   */
  private tlbChanges(vm: VmState, d: Dirty): boolean {
    if (this.tlbSeen.length !== vm.vcpus.length) {
      this.recordTlbs(vm);
      return false;
    }
    for (let i = 0; i < vm.vcpus.length; i++) {
      const v = vm.vcpus[i]!;
      if (tlbGoesAway(v)) this.tlbSeen[i]!.forget();
      else this.tlbSeen[i]!.update(v.tlb, v.asId(), d.tlbRanges);
    }
    d.tlbRanges.seal();
    return true;
  }

  /**
   * What only says how much the next audit may skip (which TLBs were written, the current TLB filter),
   * not what the VM or the findings are: left out of state hashes (explore/engine.ts), which would
   * otherwise tell apart states that differ only in their history.
   */
  cacheKeys(into: Map<object, ReadonlySet<PropertyKey>>): void {
    into.set(this, DELTA_CACHE);
    into.set(this.pending, DIRTY_CACHE);
    into.set(this.current, DIRTY_CACHE);
  }

  /** A whole TLB audit: every vCPU's TLB as it checks it (or not at all, where a flush is pending). */
  private recordTlbs(vm: VmState): void {
    const seen = this.tlbSeen;
    if (seen.length !== vm.vcpus.length) this.tlbSeen = vm.vcpus.map(() => new TlbSeen());
    for (let i = 0; i < vm.vcpus.length; i++) {
      const v = vm.vcpus[i]!;
      if (tlbGoesAway(v)) this.tlbSeen[i]!.forget();
      else this.tlbSeen[i]!.update(v.tlb, v.asId(), null);
    }
  }
}

/**
 * The slots of `after` not in `before` go to d's ranges (in `after`'s order); returns those of `before`
 * not in `after` (in its order). Both lists are a memslot set's slots in base gfn order, where no two
 * slots share a base gfn: one merge, no hashing.
 */
function slotDiff(
  before: readonly KvmMemorySlot[],
  after: readonly KvmMemorySlot[],
  d: Dirty,
): KvmMemorySlot[] {
  const gone: KvmMemorySlot[] = [];
  let i = 0;
  let j = 0;
  while (i < before.length || j < after.length) {
    const b = before[i];
    const a = after[j];
    if (b !== undefined && a !== undefined && b === a) {
      i++;
      j++;
    } else if (a === undefined || (b !== undefined && b.baseGfn < a.baseGfn)) {
      gone.push(b!);
      i++;
    } else if (b === undefined || a.baseGfn < b.baseGfn) {
      d.addRange(a.baseGfn, a.baseGfn + a.npages);
      j++;
    } else {
      // the same base gfn, another slot object: one went, one came
      gone.push(b);
      d.addRange(a.baseGfn, a.baseGfn + a.npages);
      i++;
      j++;
    }
  }
  return gone;
}
