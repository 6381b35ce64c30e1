/**
 * MMU differential scenarios: small guest workloads whose per-step shadow-MMU stat deltas are recorded
 * from the real kernel (test/recorded/mmu-pvm-6.18.json); the model's shadow MMU is held to them step by
 * step (test/shadow/recorded.test.ts). The TDP MMU is not compared with them (different MMU).
 *
 * Geometry (as in test/real-kvm/guest_access.test.ts): slot A = id 1, 256 pages at 2 GiB, the slot the
 * guest keeps using; slot V = id 2, 64 pages at 1 GiB, the victim; PT = the access harness's own slot
 * (id 32763 at 63 GiB), which holds the guest's code and page tables. Each scenario runs on a fresh
 * DEFAULT VM with one vCPU, with KVM_X86_QUIRK_SLOT_ZAP_ALL left on ('zap-all') or disabled first
 * ('precise').
 */
import type { AccessResult } from '../kvm/api_types.ts';

export type SlotName = 'A' | 'V' | 'PT';
export type MmuStep =
  | { do: 'touch'; slot: 'A' | 'V'; pages: number; kind: 'read' | 'write'; first?: number }
  /** write the listed page indexes of the slot */
  | { do: 'write'; slot: 'A' | 'V'; pages: number[] }
  /** one read at the slot's first page (at its current or a given gpa): records the exit */
  | { do: 'probe'; gpa: number }
  | { do: 'delete'; slot: SlotName }
  | { do: 'move'; slot: SlotName; to: number }
  | { do: 'flags'; slot: SlotName; flags: number }
  | { do: 'getDirty'; slot: 'A' | 'V' };

export interface MmuScenario {
  id: string;
  title: string;
  /** slots created before the first step (A always; V where listed), with their flags */
  slots: { A: number; V?: number };
  steps: MmuStep[];
}

export const SLOT_GEOMETRY = {
  A: { slot: 1, gpa: 0x8000_0000, pages: 256 },
  V: { slot: 2, gpa: 0x4000_0000, pages: 64 },
} as const;
const P = 4096;
const LOG_DIRTY = 1;
const V_NEW = 0xc000_0000; // where V moves: 3 GiB, its own PD
const PT_NEW = 0xf_8000_0000; // where the harness slot moves: 62 GiB

/**
 * The stats recorded per step (real-kvm-host.md §8.4: deterministic for a single-vCPU guest).
 * remote_tlb_flush (a flush that IPI'd a vCPU in guest mode, kvm_flush_remote_tlbs) is recorded from the
 * v1272 recording on; older recordings list the stats they hold, and comparisons use those.
 */
export const MMU_STATS = [
  'pages_4k',
  'mmu_shadow_zapped',
  'mmu_cache_miss',
  'pf_fixed',
  'remote_tlb_flush_requests',
  'remote_tlb_flush',
] as const;

const touchA: MmuStep = { do: 'touch', slot: 'A', pages: 256, kind: 'write' };
const touchV: MmuStep = { do: 'touch', slot: 'V', pages: 64, kind: 'write' };

type Op = 'delete' | 'move' | 'flags';
function opOn(op: Op, slot: SlotName): MmuStep {
  if (op === 'delete') return { do: 'delete', slot };
  if (op === 'move') return { do: 'move', slot, to: slot === 'PT' ? PT_NEW : V_NEW };
  return { do: 'flags', slot, flags: LOG_DIRTY };
}

/**
 * A memslot change on a touched victim, an untouched victim, or the page-table slot, then A re-touched
 * (and V probed) to show what the change cost the rest of the guest. After a DELETE or MOVE of the
 * page-table slot the guest has no code or page tables left, so nothing runs afterwards.
 */
function slotChange(op: Op, target: 'touched' | 'untouched' | 'pagetables'): MmuScenario {
  const slot: SlotName = target === 'pagetables' ? 'PT' : 'V';
  const steps: MmuStep[] = [touchA];
  if (target === 'touched') steps.push(touchV);
  steps.push(opOn(op, slot));
  if (slot === 'V' || op === 'flags') {
    steps.push(touchA);
    if (slot === 'V') steps.push({ do: 'probe', gpa: SLOT_GEOMETRY.V.gpa });
    if (slot === 'V' && op === 'move') steps.push({ do: 'probe', gpa: V_NEW });
  }
  return {
    id: `${op} ${target}`,
    title: `${op === 'flags' ? 'FLAGS_ONLY (LOG_DIRTY on)' : op.toUpperCase()} of ${
      target === 'pagetables'
        ? 'the slot holding the guest page tables'
        : `a${target === 'touched' ? ' touched' : 'n untouched'} slot`
    }`,
    slots: { A: 0, V: 0 },
    steps,
  };
}

const BASE: MmuScenario[] = [
  {
    id: 'touch',
    title: 'touch the 256 pages of A (first-touch faults), then read them again (no new faults)',
    slots: { A: 0 },
    steps: [touchA, { do: 'touch', slot: 'A', pages: 256, kind: 'read' }],
  },
  ...(['delete', 'move', 'flags'] as const).flatMap((op) =>
    (['touched', 'untouched', 'pagetables'] as const).map((t) => slotChange(op, t)),
  ),
  {
    id: 'dirty log',
    title: 'A with LOG_DIRTY: read all, write 6 pages, GET_DIRTY_LOG, write 2 more, GET twice',
    slots: { A: LOG_DIRTY },
    steps: [
      { do: 'touch', slot: 'A', pages: 256, kind: 'read' },
      { do: 'write', slot: 'A', pages: [0, 5, 9, 64, 127, 255] },
      { do: 'getDirty', slot: 'A' },
      { do: 'write', slot: 'A', pages: [1, 5] },
      { do: 'getDirty', slot: 'A' },
      { do: 'getDirty', slot: 'A' },
    ],
  },
  {
    id: 'dirty log off',
    title:
      'A with LOG_DIRTY: write all, LOG_DIRTY off (kvm_mmu_recover_huge_pages: on the shadow MMU, zap collapsible SPTEs), write all again',
    slots: { A: LOG_DIRTY },
    steps: [
      { do: 'touch', slot: 'A', pages: 256, kind: 'write' },
      { do: 'flags', slot: 'A', flags: 0 },
      { do: 'touch', slot: 'A', pages: 256, kind: 'write' },
    ],
  },
];

export interface MmuCase extends MmuScenario {
  /** KVM_X86_QUIRK_SLOT_ZAP_ALL disabled before anything else */
  quirkDisabled: boolean;
}

/** Every scenario with the quirk on and off. */
export const MMU_CASES: readonly MmuCase[] = BASE.flatMap((s) => [
  { ...s, id: `${s.id} / zap-all`, quirkDisabled: false },
  { ...s, id: `${s.id} / precise`, quirkDisabled: true },
]);

export function describeMmuStep(s: MmuStep): string {
  const h = (n: number) => `0x${n.toString(16)}`;
  switch (s.do) {
    case 'touch':
      return `${s.kind} ${s.pages} pages of ${s.slot}`;
    case 'write':
      return `write pages [${s.pages.join(',')}] of ${s.slot}`;
    case 'probe':
      return `read ${h(s.gpa)}`;
    case 'delete':
      return `DELETE ${s.slot}`;
    case 'move':
      return `MOVE ${s.slot} to ${h(s.to)}`;
    case 'flags':
      return `FLAGS_ONLY ${s.slot} flags ${s.flags}`;
    case 'getDirty':
      return `GET_DIRTY_LOG ${s.slot}`;
  }
}

export const PAGE = P;

/** A step's exits by kind (with the gpa of each non-`none` exit if asked), as recordings store them. */
export function exitsOf(results: readonly AccessResult[], withGpa = false): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of results) {
    const k = withGpa && r.exit !== 'none' ? `${r.exit}@0x${r.gpa.toString(16)}` : r.exit;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}
