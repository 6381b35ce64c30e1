/**
 * The cost model: per-event costs × the counts a run produced = a *modelled* time. Every constant names
 * its source (shared/reference/perf-anchors.md, published [P]/derived [D]; real-kvm-host.md, measured on
 * the development host [M]; or [U] where no number exists and the value is a labelled assumption).
 * Modelled time is never a measurement: reports print it as "modelled" and always beside the counts.
 * See docs/cost-model.md. Model-only file; reads counts, never model state.
 */

export interface CostConstant {
  ns: number;
  source: string;
}

export const DEFAULT_COSTS = {
  spteZapWriteLock: {
    ns: 50,
    source:
      'perf-anchors §1.4 [P/D]: ~52 ns per leaf SPTE (512 GiB 4K PGD zapped in ~7 s, Sean C. Feb 2022); precise zap and notifier unmaps hold mmu_lock for write',
  },
  spteZapReadLock: {
    ns: 5,
    source:
      'perf-anchors §1.4 [U]: optimistic 1–5 ns/SPTE; invalidated roots are zapped under read lock, vCPUs keep faulting meanwhile (§1.5)',
  },
  rootLoadBase: {
    ns: 1000,
    source: 'perf-anchors §1.5 [P]: <24 vCPUs, most root loads <1 µs (Sean C. Jan 2024)',
  },
  rootLoadPerVcpu: {
    ns: 1000,
    source:
      'perf-anchors §1.5 [D]: worst root load <100 µs at 100+ vCPUs → ~1 µs of mmu_lock contention per vCPU (linear fit)',
  },
  firstFault4k: {
    ns: 2500,
    source:
      'perf-anchors §1.2 [D]: ~2.5 µs per 4K fault incl. host alloc+zero (memslot_perf_test, Szmigiero Feb 2021); real-kvm-host §6.1 [M]: ~4.5 µs on the shadow-MMU host',
  },
  firstFaultHuge: {
    ns: 3000,
    source:
      'perf-anchors §1.3 [D]: a few µs of KVM work per huge leaf (host zeroing counted by the host, not here)',
  },
  refault4k: {
    ns: 1500,
    source:
      'perf-anchors §1.5 [D]: refault after zap = slow-path fault with the host page present, ~1–3 µs uncontended',
  },
  refault2m: {
    ns: 2000,
    source: 'perf-anchors §1.3 [D]: one SPTE per 2M leaf, host page present; fixed KVM cost',
  },
  refault1g: {
    ns: 2500,
    source: 'perf-anchors §1.3 [D]: one SPTE per 1G leaf, host page present; fixed KVM cost',
  },
  tlbFlushBase: {
    ns: 2000,
    source:
      'perf-anchors §1.8 [U]: suggested 2–5 µs for a remote flush with few vCPUs; charged per flush that sent IPIs (remote_tlb_flush), not per request',
  },
  tlbFlushPerVcpu: {
    ns: 500,
    source:
      'perf-anchors §1.8 [S/U]: +0.2–1.5 µs per additional receiving vCPU; charged per IPI sent (tlb_flush_ipis: vCPUs not OUTSIDE_GUEST_MODE)',
  },
  seamcall: {
    ns: 4000,
    source:
      'perf-anchors §1.10 [U]: no published per-SEAMCALL latency; an assumption (BLOCK/TRACK/REMOVE each ≥ a VM-exit round trip)',
  },
  hashWalkPerGfn: {
    ns: 20,
    source:
      'mmu-zap.md §7 [U]: precise zap with shadow pages looks up every gfn of the slot in the page hash; no published per-gfn cost',
  },
  memslotCreate: { ns: 9300, source: 'real-kvm-host §7 [M]: create 4K–2M slot, median 9.3–9.9 µs' },
  memslotDelete: {
    ns: 14400,
    source: 'real-kvm-host §7 [M]: delete 4K–2M slot, median 14.4–15.0 µs (includes two SRCU syncs)',
  },
  memslotMove: { ns: 18500, source: 'real-kvm-host §7 [M]: MOVE 4K slot, median 18.5–19.6 µs' },
  memslotFlags: { ns: 6600, source: 'real-kvm-host §7 [M]: FLAGS_ONLY LOG_DIRTY toggle, median 6.6–7.5 µs' },
  mmioExit: {
    ns: 500,
    source:
      'perf-anchors §1.1 [P]: VM-exit round trip ~1,550 cycles (~0.5 µs), userspace emulation not counted',
  },
} satisfies Record<string, CostConstant>;

export type CostName = keyof typeof DEFAULT_COSTS;
export type Costs = Record<CostName, CostConstant>;

export interface CostRow {
  item: string;
  count: number;
  unitNs: number;
  totalNs: number;
  source: string;
}

export interface Modelled {
  /** modelled nanoseconds (never a measurement) */
  totalNs: number;
  rows: CostRow[];
}

/** Apply costs to a run's totals. `vcpus` scales root-load contention. */
export function modelCost(c: Record<string, number>, vcpus: number, costs: Costs = DEFAULT_COSTS): Modelled {
  const n = (k: string): number => c[k] ?? 0;
  const rows: CostRow[] = [];
  const add = (item: string, count: number, unitNs: number, source: string): void => {
    if (count > 0) rows.push({ item, count, unitNs, totalNs: count * unitNs, source });
  };
  const k = costs;
  add(
    'SPTE zapped, mmu_lock write',
    n('sptes_zapped_write_lock'),
    k.spteZapWriteLock.ns,
    k.spteZapWriteLock.source,
  );
  add(
    'SPTE zapped, mmu_lock read',
    n('sptes_zapped_read_lock'),
    k.spteZapReadLock.ns,
    k.spteZapReadLock.source,
  );
  const rootNs = k.rootLoadBase.ns + k.rootLoadPerVcpu.ns * Math.max(0, vcpus - 1);
  add(
    `root load (${vcpus} vCPUs)`,
    n('roots_allocated'),
    rootNs,
    `${k.rootLoadBase.source}; ${k.rootLoadPerVcpu.source}`,
  );
  add('first fault 4K', n('first_faults_4k'), k.firstFault4k.ns, k.firstFault4k.source);
  add(
    'first fault 2M/1G',
    n('first_faults_2m') + n('first_faults_1g'),
    k.firstFaultHuge.ns,
    k.firstFaultHuge.source,
  );
  add('refault 4K', n('refaults_4k'), k.refault4k.ns, k.refault4k.source);
  add('refault 2M', n('refaults_2m'), k.refault2m.ns, k.refault2m.source);
  add('refault 1G', n('refaults_1g'), k.refault1g.ns, k.refault1g.source);
  add('remote TLB flush', n('remote_tlb_flush'), k.tlbFlushBase.ns, k.tlbFlushBase.source);
  add('TLB flush IPI per vCPU', n('tlb_flush_ipis'), k.tlbFlushPerVcpu.ns, k.tlbFlushPerVcpu.source);
  add('SEAMCALL', n('seamcalls'), k.seamcall.ns, k.seamcall.source);
  add('gfn hash walk', n('hash_walk_gfns'), k.hashWalkPerGfn.ns, k.hashWalkPerGfn.source);
  add('memslot CREATE', n('ioctl_create'), k.memslotCreate.ns, k.memslotCreate.source);
  add('memslot DELETE', n('ioctl_delete'), k.memslotDelete.ns, k.memslotDelete.source);
  add('memslot MOVE', n('ioctl_move'), k.memslotMove.ns, k.memslotMove.source);
  add('memslot FLAGS_ONLY', n('ioctl_flags'), k.memslotFlags.ns, k.memslotFlags.source);
  add('MMIO exit', n('exits_mmio'), k.mmioExit.ns, k.mmioExit.source);
  return { totalNs: rows.reduce((s, r) => s + r.totalNs, 0), rows };
}

/** "1.23 ms (modelled)" — the label is part of the format, so no report can drop it. */
export function fmtModelled(ns: number): string {
  if (ns < 1e3) return `${ns.toFixed(0)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}
