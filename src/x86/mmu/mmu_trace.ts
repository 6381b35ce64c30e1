/**
 * MMU trace events under the kernel's tracepoint names, delivered to an optional sink. When no sink is
 * installed a tracepoint costs one `if (sink)` branch; event objects (and the bigint SPTE values in them)
 * are only built when a sink is listening.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmutrace.h (TRACE_SYSTEM kvmmmu).
 *
 * Simplifies: for TDP MMU pages the kernel's mmu_valid_gen and root_count fields alias
 * tdp_mmu_scheduled_root_to_zap and the root refcount; the model reports those values under the
 * kernel's field names, as a trace-cmd capture would show them.
 */

/** KVM_MMU_PAGE_FIELDS */
export interface KvmMmuPageTraceFields {
  mmuValidGen: number;
  gfn: number;
  role: number;
  rootCount: number;
  unsync: boolean;
}

export type MmuTraceEvent =
  | ({ name: 'kvm_mmu_get_page'; created: boolean } & KvmMmuPageTraceFields)
  | ({ name: 'kvm_mmu_prepare_zap_page' } & KvmMmuPageTraceFields)
  | {
      name: 'kvm_tdp_mmu_spte_changed';
      asId: number;
      gfn: number;
      level: number;
      oldSpte: bigint;
      newSpte: bigint;
    }
  | { name: 'kvm_mmu_split_huge_page'; gfn: number; spte: bigint; level: number; errno: number };

export type MmuTraceEventName = MmuTraceEvent['name'];

/**
 * The two tracepoints every guest fault fires (kvm_page_fault, kvm_mmu_spte_requested), as numbers: an MMU
 * sink (X86Mmu.trace) that carries this as its `faultNumbers` property gets them from vcpu.access's fast
 * path this way instead of as event objects (a fault per access, and two objects per fault, were most of
 * what tracing a replay's faults cost); it treats them as it treats those objects.
 */
export interface FaultTraceNumbers {
  pageFault(vcpuId: number, gpa: number, errorCode: number): void;
  spteRequested(gfn: number, pfn: number, level: number): void;
}

/** Receives every event while installed. */
export type TraceSink = (ev: MmuTraceEvent) => void;

/**
 * A listener that takes the TDP engine's tracepoints with kvm_tdp_mmu_spte_changed as plain numbers: no
 * event object, no bigint SPTE values, nothing formatted, so a recorder (the invariant checker's ring of
 * recent events) can watch a zap of millions of SPTEs at the cost of a few stores each. Independent of
 * the object sink `trace`; both may be installed.
 */
export interface TdpTraceRecorder {
  spteChanged(
    asId: number,
    gfn: number,
    level: number,
    oldLo: number,
    oldHi: number,
    newLo: number,
    newHi: number,
  ): void;
  /**
   * kvm_tdp_mmu_spte_changed for `count` consecutive entries of one table, the first at `gfn` and each
   * next one PAGES_PER_LEVEL[level] gfns on, every one going from the same non-present value
   * (oldLo, oldHi) to FROZEN_SPTE: what a shared teardown (handle_removed_pt) emits for the empty entries
   * of a removed table. The kernel fires the tracepoint once per entry (handle_changed_spte traces before
   * its early return for non-present to non-present changes); this hands the run over in one call, so a
   * recorder can store it as one record and expand it when it prints.
   */
  sptesFrozen(asId: number, gfn: number, level: number, count: number, oldLo: number, oldHi: number): void;
  /** every other TDP engine tracepoint (kvm_mmu_get_page, kvm_mmu_prepare_zap_page, kvm_mmu_split_huge_page) */
  event(ev: MmuTraceEvent): void;
  /**
   * Optional: kvm_mmu_get_page (a table created: `get` true, the event's `created` true) or
   * kvm_mmu_prepare_zap_page of a TDP table as numbers, the KVM_MMU_PAGE_FIELDS in their order (`unsync`
   * is false for every TDP table). A recorder that has it gets these two tracepoints here instead of as
   * `event` objects whenever no object sink is installed on the engine: a zap-all tears down and a
   * refault builds hundreds of tables, and an object per table was most of what tracing them cost.
   */
  spPage?(get: boolean, mmuValidGen: number, gfn: number, role: number, rootCount: number): void;
}
