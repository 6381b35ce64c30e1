/**
 * Issue #12 finding 3: remote_tlb_flush counts a flush that reached a vCPU in the guest.
 * virt/kvm/kvm_main.c#kvm_flush_remote_tlbs (6.18; same in linux-next 6.19-rc5) bumps
 * remote_tlb_flush_requests always, but remote_tlb_flush only if kvm_arch_flush_remote_tlbs flushed (a
 * Hyper-V hook, absent here) or kvm_make_all_cpus_request(KVM_REQ_TLB_FLUSH) IPI'd some vCPU. Which
 * vCPUs get one is kvm_request_needs_ipi: KVM_REQ_TLB_FLUSH is a KVM_REQUEST_WAIT request, so every vCPU
 * whose mode is not OUTSIDE_GUEST_MODE (kvm_vcpu_exiting_guest_mode also moves IN → EXITING). A vCPU
 * handling its own VM exit is OUTSIDE_GUEST_MODE. The real kernel on the development host shows
 * requests +1, remote_tlb_flush +0 for a DELETE with no vCPU in KVM_RUN.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { EXITING_GUEST_MODE, IN_GUEST_MODE, OUTSIDE_GUEST_MODE } from '../../src/kvm/vcpu.ts';
import { modelCost } from '../../src/metrics/cost.ts';

const MiB = 1 << 20;
const BAR = 0x1000_0000;

function twoVcpus() {
  const kvm = new Kvm();
  const vm = kvm.createVm(0);
  vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  const ram = kvm.host.mmap(4 * MiB);
  const bar = kvm.host.mmap(2 * MiB);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: ram });
  const barSlot = (size: number) =>
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR, memorySize: size, userspaceAddr: bar });
  barSlot(2 * MiB);
  const v0 = vm.createVcpu(0);
  const v1 = vm.createVcpu(1);
  const flushes = () => {
    const s = vm.getStats();
    return [s.remote_tlb_flush_requests, s.remote_tlb_flush, vm.getModelStats().tlb_flush_ipis];
  };
  return { kvm, vm, v0, v1, barSlot, flushes, bar };
}

describe('kvm_flush_remote_tlbs: remote_tlb_flush only when an IPI went out', () => {
  it('a precise DELETE with no vCPU in the guest: requests +1, remote_tlb_flush +0, no IPI', () => {
    const { v0, v1, barSlot, flushes } = twoVcpus();
    v0.access(BAR, 'write');
    v1.access(0, 'read');
    expect([v0.mode, v1.mode]).toEqual([OUTSIDE_GUEST_MODE, OUTSIDE_GUEST_MODE]);
    barSlot(0);
    expect(flushes()).toEqual([1, 0, 0]);
    // The request is still made of every vCPU: each flushes its TLB at its next entry.
    expect([v0.requests & 1, v1.requests & 1]).toEqual([1, 1]);
    v0.access(0, 'read');
    expect(v0.getStats().tlb_flush).toBe(1);
  });

  it('a vCPU still in the guest gets the IPI (and is moved to EXITING_GUEST_MODE); one outside does not', () => {
    const { v0, v1, barSlot, flushes } = twoVcpus();
    v1.running = true; // its thread stays in KVM_RUN between accesses
    v0.access(BAR, 'write');
    v1.access(0, 'read');
    expect([v0.mode, v1.mode]).toEqual([OUTSIDE_GUEST_MODE, IN_GUEST_MODE]);
    barSlot(0);
    expect(flushes()).toEqual([1, 1, 1]);
    expect(v1.mode).toBe(EXITING_GUEST_MODE);
    // Still not OUTSIDE: a second flush before it re-enters waits for it again (KVM_REQUEST_WAIT).
    barSlot(2 * MiB);
    v0.access(BAR, 'write');
    barSlot(0);
    expect(flushes()).toEqual([2, 2, 2]);
    // An access that exits to userspace (MMIO: the slot is gone) leaves KVM_RUN: no IPI next time.
    expect(v1.access(BAR, 'read').exit).toBe('mmio');
    expect(v1.mode).toBe(OUTSIDE_GUEST_MODE);
  });

  it('a vCPU in the middle of its own EPT violation is OUTSIDE_GUEST_MODE: a notifier flush does not IPI it', () => {
    const { kvm, v0, v1, flushes, bar } = twoVcpus();
    v0.running = true;
    v1.running = true;
    v0.access(BAR, 'write');
    const step = v0.beginAccess(BAR + 4096, 'write'); // v0 re-entered, then exited on the EPT violation
    expect(v0.mode).toBe(OUTSIDE_GUEST_MODE);
    kvm.host.migrate(bar, 4096); // the notifier zaps BAR's first page and flushes
    expect(flushes()).toEqual([1, 0, 0]);
    expect(step.finish().exit).toBe('none');
    expect(v0.mode).toBe(IN_GUEST_MODE);
    v1.access(0, 'read'); // now v1 is in the guest too
    kvm.host.migrate(bar + 4096, 4096);
    expect(flushes()).toEqual([2, 1, 2]);
  });

  it('the cost model charges flushes and IPIs by what was sent, not by requests', () => {
    const { vm, v0, v1, barSlot } = twoVcpus();
    v0.access(BAR, 'write');
    barSlot(0); // no vCPU in the guest: a request, nothing sent
    barSlot(2 * MiB);
    v1.running = true;
    v1.access(0, 'read');
    v0.access(BAR, 'write');
    barSlot(0); // v1 in the guest: one flush that IPI'd one vCPU
    const counts = { ...vm.getStats(), ...vm.getModelStats() };
    expect(counts.remote_tlb_flush_requests).toBe(2);
    const rows = Object.fromEntries(modelCost(counts, 2).rows.map((r) => [r.item, r.count]));
    expect([rows['remote TLB flush'], rows['TLB flush IPI per vCPU']]).toEqual([1, 1]);
  });
});

describe('the batched accesses leave the vCPU where vcpu.access would', () => {
  for (const running of [false, true]) {
    it(`running = ${running}: accessRange / accessList end OUTSIDE unless running and completed`, () => {
      const { v0, v1, barSlot, flushes } = twoVcpus();
      v0.running = running;
      v0.accessRange(0, 8, 'read');
      expect(v0.mode).toBe(running ? IN_GUEST_MODE : OUTSIDE_GUEST_MODE);
      v1.access(BAR, 'write');
      barSlot(0); // precise zap of a touched slot: one flush request, an IPI only to a running v0
      expect(flushes()).toEqual(running ? [1, 1, 1] : [1, 0, 0]);
      v0.accessList([0, BAR], 'read'); // the last access exits (MMIO): out of KVM_RUN
      expect(v0.mode).toBe(OUTSIDE_GUEST_MODE);
    });
  }
});
