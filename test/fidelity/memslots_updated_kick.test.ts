/**
 * kvm_arch_memslots_updated kicks every vCPU, and a kick is a VM exit for a vCPU that is in the guest.
 * Read in linux-next (ColinIanKing/linux-next, Makefile 6.19-rc5): arch/x86/kvm/x86.c at 12c5a89e (and
 * 046408cf, the same) — kvm_arch_memslots_updated(kvm, gen) calls kvm_mmu_invalidate_mmio_sptes(kvm, gen)
 * and then kvm_vcpu_kick() on every vCPU ("Force re-initialization of steal_time cache"); it makes no
 * KVM_REQ_* request, and kvm_swap_active_memslots calls it after every swap, so a DELETE or MOVE kicks
 * twice (INVALID copy, then the final set) and a CREATE or FLAGS_ONLY once. virt/kvm/kvm_main.c at
 * 03b9d314: __kvm_vcpu_kick(vcpu, false) sends a reschedule IPI only if kvm_arch_vcpu_should_kick, which
 * on x86 is kvm_vcpu_exiting_guest_mode(vcpu) == IN_GUEST_MODE (the cmpxchg to EXITING_GUEST_MODE). The
 * IPI interrupts the guest: vcpu_enter_guest counts ++exits, vmx.c handle_external_interrupt ++irq_exits,
 * and vcpu_run enters again. A vCPU outside the guest, or one an earlier IPI already moved to
 * EXITING_GUEST_MODE, gets no IPI. The old model counted the kick (`kicks`) but not the exit.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_CAP, KVM_MEM_LOG_DIRTY_PAGES } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { EXITING_GUEST_MODE, IN_GUEST_MODE, OUTSIDE_GUEST_MODE, type Vcpu } from '../../src/kvm/vcpu.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import { IdentityMapBuilder } from '../../src/x86/mmu/guest_paging.ts';

const MiB = 1 << 20;
const BAR = 0x1000_0000;

/** A DEFAULT VM with RAM in slot 0; vCPU 0 stays in KVM_RUN between accesses, vCPU 1 does not. */
function guest(opts: { quirk: boolean; shadow?: boolean }) {
  const kvm = new Kvm(opts.shadow ? { tdp: false } : {});
  const vm = kvm.createVm(0);
  if (!opts.quirk) vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  const ram = kvm.host.mmap(4 * MiB);
  const bar = kvm.host.mmap(2 * MiB);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: ram });
  const barSlot = (size: number, flags = 0) =>
    vm.setUserMemoryRegion({ slot: 1, flags, guestPhysAddr: BAR, memorySize: size, userspaceAddr: bar });
  const running = vm.createVcpu(0);
  const idle = vm.createVcpu(1);
  running.running = true;
  if (opts.shadow) {
    const map = new IdentityMapBuilder(shadowMmuOf(vm)!.gpt, 1 * MiB, 2 * MiB);
    map.mapPage(0);
    running.setCr3(map.cr3);
    idle.setCr3(map.cr3);
  }
  // Both have run the guest once; only `running` is still in it.
  running.access(0, 'read');
  idle.access(0, 'read');
  const counts = (v: Vcpu) => {
    const s = v.getStats();
    return { kicks: v.kicks, exits: s.exits ?? NaN, irq_exits: s.irq_exits ?? NaN };
  };
  const delta = (v: Vcpu, f: () => void) => {
    const a = counts(v);
    f();
    const b = counts(v);
    return { kicks: b.kicks - a.kicks, exits: b.exits - a.exits, irq_exits: b.irq_exits - a.irq_exits };
  };
  return { vm, running, idle, barSlot, delta };
}

describe('kvm_arch_memslots_updated: the kick is a VM exit for a vCPU in the guest', () => {
  for (const shadow of [false, true]) {
    const mmu = shadow ? 'shadow paging' : 'TDP MMU';
    it(`${mmu}: a CREATE (one swap, one kick) costs the running vCPU one external-interrupt exit; the idle vCPU none`, () => {
      const { running, idle, barSlot, delta } = guest({ quirk: true, shadow });
      expect([running.mode, idle.mode]).toEqual([IN_GUEST_MODE, OUTSIDE_GUEST_MODE]);
      let idleDelta = {};
      const d = delta(running, () => {
        idleDelta = delta(idle, () => barSlot(2 * MiB));
      });
      expect(d).toEqual({ kicks: 1, exits: 1, irq_exits: 1 });
      expect(idleDelta).toEqual({ kicks: 1, exits: 0, irq_exits: 0 });
      // vcpu_run entered the guest again: the next remote flush has to IPI it.
      expect(running.mode).toBe(IN_GUEST_MODE);
      expect(idle.mode).toBe(OUTSIDE_GUEST_MODE);
    });
  }

  it('a DELETE nothing maps, precise zap: two swaps, two kicks, two exits (no flush in between)', () => {
    const { running, barSlot, delta, vm } = guest({ quirk: false });
    barSlot(2 * MiB);
    const flushes0 = vm.getStats().remote_tlb_flush_requests ?? NaN;
    expect(delta(running, () => barSlot(0))).toEqual({ kicks: 2, exits: 2, irq_exits: 2 });
    expect((vm.getStats().remote_tlb_flush_requests ?? NaN) - flushes0).toBe(0);
    expect(running.mode).toBe(IN_GUEST_MODE);
  });

  for (const shadow of [false, true]) {
    const mmu = shadow ? 'shadow paging' : 'TDP MMU';
    it(`${mmu}: a zap-all DELETE: the INVALID swap's kick is one exit, the free-obsolete-roots IPI another; it leaves the vCPU EXITING, so the second kick sends nothing`, () => {
      const { running, barSlot, delta } = guest({ quirk: true, shadow });
      barSlot(2 * MiB);
      // kvm_mmu_zap_all_fast → kvm_make_all_cpus_request(KVM_REQ_MMU_FREE_OBSOLETE_ROOTS) between the swaps:
      // a KVM_REQUEST_WAIT request, so vCPUs in the guest get an IPI (kvm_request_needs_ipi).
      expect(delta(running, () => barSlot(0))).toEqual({ kicks: 2, exits: 2, irq_exits: 2 });
      expect(running.mode).toBe(EXITING_GUEST_MODE);
      // Its next access re-enters (frees the obsolete root, loads a new one) and is back in the guest.
      running.access(0, 'read');
      expect(running.mode).toBe(IN_GUEST_MODE);
      expect(delta(running, () => barSlot(2 * MiB))).toEqual({ kicks: 1, exits: 1, irq_exits: 1 });
    });
  }

  it('FLAGS_ONLY (logging on): the swap kick is one exit, the commit flush IPI a second, which leaves it EXITING', () => {
    const { running, barSlot, delta, vm } = guest({ quirk: true });
    barSlot(2 * MiB);
    const flushes = () => {
      const s = vm.getStats();
      return [s.remote_tlb_flush_requests ?? NaN, s.remote_tlb_flush ?? NaN];
    };
    const [r0, f0] = flushes();
    expect(delta(running, () => barSlot(2 * MiB, KVM_MEM_LOG_DIRTY_PAGES))).toEqual({
      kicks: 1,
      exits: 2,
      irq_exits: 2,
    });
    // kvm_mmu_slot_apply_flags' unconditional flush ran after the kick: it found the vCPU back in the guest.
    const [r1, f1] = flushes();
    expect([r1! - r0!, f1! - f0!]).toEqual([1, 1]);
    expect(running.mode).toBe(EXITING_GUEST_MODE);
  });
});
