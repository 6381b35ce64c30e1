/**
 * Runs the MMU differential scenarios (mmu_cases.ts) on the real kernel through the CPL3 access harness
 * and records, per step, the deltas of the five deterministic shadow-MMU stats and the exits the guest
 * saw. Not compared with the model: the model's TDP MMU and this host's shadow MMU count differently;
 * the recording is the target for the model's shadow-MMU work.
 */
import type { RealKvm } from '../backends/kvm/real_kvm.ts';
import type { RealVm } from '../backends/kvm/real_vm.ts';
import type { RealVcpu } from '../backends/kvm/real_vcpu.ts';
import { KVM_CAP } from '../uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../uapi/kvm_x86.ts';
import { describeBitmap } from './abi_runner.ts';
import {
  describeMmuStep,
  exitsOf,
  MMU_CASES,
  MMU_STATS,
  type MmuCase,
  type MmuStep,
  PAGE,
  SLOT_GEOMETRY,
  type SlotName,
} from './mmu_cases.ts';
import type { RecordedHost } from './recording.ts';
import { recordedHost } from './live.ts';

export const MMU_RECORDING_FORMAT = 'zaplab-mmu-recording/1';

export interface MmuStepRecord {
  step: string;
  /** deltas of MMU_STATS over the step (all five, zeros included) */
  stats: Record<(typeof MMU_STATS)[number], number>;
  /** guest accesses' exits by kind, e.g. { none: 256 }; 'mmio@0x40000000' style for a probe */
  exits?: Record<string, number>;
  /** GET_DIRTY_LOG's bitmap ('OK 32B [0,5]') */
  dirty?: string;
}
export interface MmuRecording {
  format: typeof MMU_RECORDING_FORMAT;
  recordedAt: string;
  host: RecordedHost;
  stats: readonly string[];
  scenarios: { id: string; title: string; quirkDisabled: boolean; steps: MmuStepRecord[] }[];
}

interface Live {
  vm: RealVm;
  vcpu: RealVcpu;
}

function snapshot(l: Live): Record<string, number> {
  const vm = l.vm.getStats();
  const vc = l.vcpu.getStats();
  return Object.fromEntries(MMU_STATS.map((k) => [k, (vm[k] ?? vc[k])!]));
}

function region(l: Live, name: SlotName) {
  if (name === 'PT') {
    const s = l.vm.slots().get(l.vm.harnessConfig.slot);
    if (!s) throw new Error('the access harness slot is not installed yet');
    return {
      slot: s.slot,
      guestPhysAddr: s.guestPhysAddr,
      memorySize: s.memorySize,
      userspaceAddr: s.userspaceAddr,
      flags: s.flags,
    };
  }
  const s = l.vm.slots().get(SLOT_GEOMETRY[name].slot)!;
  return {
    slot: s.slot,
    guestPhysAddr: s.guestPhysAddr,
    memorySize: s.memorySize,
    userspaceAddr: s.userspaceAddr,
    flags: s.flags,
  };
}

/** Perform one step; returns what it observed besides the stats. */
function perform(l: Live, s: MmuStep): Partial<MmuStepRecord> {
  switch (s.do) {
    case 'touch': {
      const base = l.vm.slots().get(SLOT_GEOMETRY[s.slot].slot)!.guestPhysAddr;
      const list = Array.from({ length: s.pages }, (_, i) => ({
        gpa: base + ((s.first ?? 0) + i) * PAGE,
        kind: s.kind,
      }));
      return { exits: exitsOf(l.vcpu.runAccesses(list).results) };
    }
    case 'write': {
      const base = l.vm.slots().get(SLOT_GEOMETRY[s.slot].slot)!.guestPhysAddr;
      const list = s.pages.map((i) => ({ gpa: base + i * PAGE, kind: 'write' as const }));
      return { exits: exitsOf(l.vcpu.runAccesses(list).results) };
    }
    case 'probe':
      return { exits: exitsOf([l.vcpu.access(s.gpa, 'read')], true) };
    case 'delete':
      l.vm.setUserMemoryRegion({ ...region(l, s.slot), memorySize: 0 });
      return {};
    case 'move':
      l.vm.setUserMemoryRegion({ ...region(l, s.slot), guestPhysAddr: s.to });
      return {};
    case 'flags':
      l.vm.setUserMemoryRegion({ ...region(l, s.slot), flags: s.flags });
      return {};
    case 'getDirty':
      return { dirty: describeBitmap(l.vm.getDirtyLog(SLOT_GEOMETRY[s.slot].slot)) };
  }
}

/** Run one scenario on a fresh VM of `real`; the VM and its memory are released afterwards. */
export function runMmuCase(real: RealKvm, c: MmuCase): MmuStepRecord[] {
  const vm = real.createVm(0);
  const maps: number[] = [];
  try {
    if (c.quirkDisabled)
      vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
    for (const name of ['A', 'V'] as const) {
      const flags = c.slots[name];
      if (flags === undefined) continue;
      const g = SLOT_GEOMETRY[name];
      const hva = real.host.mmap(g.pages * PAGE);
      maps.push(hva);
      vm.setUserMemoryRegion({
        slot: g.slot,
        flags,
        guestPhysAddr: g.gpa,
        memorySize: g.pages * PAGE,
        userspaceAddr: hva,
      });
    }
    const l: Live = { vm, vcpu: vm.createVcpu(0) };
    // Install the harness (its slot, code and page tables) before the first measured step, so a step's
    // deltas are the step's own and the page-table slot exists for the PT scenarios.
    l.vcpu.runAccesses([]);
    return c.steps.map((s) => {
      const before = snapshot(l);
      const seen = perform(l, s);
      const after = snapshot(l);
      const stats = Object.fromEntries(
        MMU_STATS.map((k) => [k, after[k]! - before[k]!]),
      ) as MmuStepRecord['stats'];
      return { step: describeMmuStep(s), stats, ...seen };
    });
  } finally {
    vm.close();
    for (const m of maps) real.host.munmap(m);
  }
}

export function recordMmu(real: RealKvm, cases: readonly MmuCase[] = MMU_CASES): MmuRecording {
  return {
    format: MMU_RECORDING_FORMAT,
    recordedAt: new Date().toISOString(),
    host: recordedHost(real),
    stats: MMU_STATS,
    scenarios: cases.map((c) => ({
      id: c.id,
      title: c.title,
      quirkDisabled: c.quirkDisabled,
      steps: runMmuCase(real, c),
    })),
  };
}
