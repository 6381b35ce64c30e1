/**
 * Runs the MMU differential scenarios (src/conformance/mmu_cases.ts) on the model's shadow MMU with the
 * model harness, producing the same per-step records as the real recording (mmu_runner.ts).
 */
import { Kvm } from '../../src/kvm/kvm_main.ts';
import type { KvmOptions } from '../../src/kvm/host_profile.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import {
  describeMmuStep,
  exitsOf,
  MMU_STATS,
  PAGE,
  SLOT_GEOMETRY,
  type MmuCase,
  type MmuStep,
  type SlotName,
} from '../../src/conformance/mmu_cases.ts';
import type { MmuStepRecord } from '../../src/conformance/mmu_runner.ts';
import { HARNESS, ModelHarness } from './harness.ts';

/** `opts`: the model host (a recording's or the live probe's modelOptions; default the pvm-6.18 profile). */
export function runModelMmuCase(c: MmuCase, opts: KvmOptions = { profile: 'pvm-6.18' }): MmuStepRecord[] {
  const kvm = new Kvm(opts);
  const vm = kvm.createVm(0);
  if (c.quirkDisabled)
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  const regions = new Map<
    SlotName,
    { slot: number; flags: number; guestPhysAddr: number; memorySize: number; userspaceAddr: number }
  >();
  for (const name of ['A', 'V'] as const) {
    const flags = c.slots[name];
    if (flags === undefined) continue;
    const g = SLOT_GEOMETRY[name];
    const r = {
      slot: g.slot,
      flags,
      guestPhysAddr: g.gpa,
      memorySize: g.pages * PAGE,
      userspaceAddr: kvm.host.mmap(g.pages * PAGE),
    };
    vm.setUserMemoryRegion(r);
    regions.set(name, r);
  }
  const vcpu = vm.createVcpu(0);
  const h = new ModelHarness(kvm, vm, vcpu);
  h.runAccesses([]);
  const harnessRegion = () => {
    const slot = vm.activeMemslots(0).searchMemslots(HARNESS.gpa / PAGE)!;
    return {
      slot: HARNESS.slot,
      flags: slot.flags,
      guestPhysAddr: HARNESS.gpa,
      memorySize: HARNESS.size,
      userspaceAddr: slot.userspaceAddr,
    };
  };
  const region = (n: SlotName) => (n === 'PT' ? harnessRegion() : regions.get(n)!);
  const snap = () => {
    const a = vm.getStats();
    const b = vcpu.getStats();
    return Object.fromEntries(MMU_STATS.map((k) => [k, (a[k] ?? b[k])!]));
  };
  const perform = (st: MmuStep): Partial<MmuStepRecord> => {
    switch (st.do) {
      case 'touch': {
        const base = region(st.slot).guestPhysAddr;
        const list = Array.from({ length: st.pages }, (_, i) => ({
          gpa: base + ((st.first ?? 0) + i) * PAGE,
          kind: st.kind,
        }));
        return { exits: exitsOf(h.runAccesses(list)) };
      }
      case 'write': {
        const base = region(st.slot).guestPhysAddr;
        return {
          exits: exitsOf(
            h.runAccesses(st.pages.map((i) => ({ gpa: base + i * PAGE, kind: 'write' as const }))),
          ),
        };
      }
      case 'probe':
        return { exits: exitsOf([h.access(st.gpa, 'read')], true) };
      case 'delete':
        vm.setUserMemoryRegion({ ...region(st.slot), memorySize: 0 });
        return {};
      case 'move': {
        const r = { ...region(st.slot), guestPhysAddr: st.to };
        vm.setUserMemoryRegion(r);
        if (st.slot !== 'PT') regions.set(st.slot, r);
        return {};
      }
      case 'flags': {
        const r = { ...region(st.slot), flags: st.flags };
        vm.setUserMemoryRegion(r);
        if (st.slot !== 'PT') regions.set(st.slot, r);
        return {};
      }
      case 'getDirty':
        vm.getDirtyLog(SLOT_GEOMETRY[st.slot].slot);
        return {};
    }
  };
  return c.steps.map((st) => {
    const before = snap();
    const seen = perform(st);
    const after = snap();
    const stats = Object.fromEntries(
      MMU_STATS.map((k) => [k, after[k]! - before[k]!]),
    ) as MmuStepRecord['stats'];
    return { step: describeMmuStep(st), stats, ...seen };
  });
}
