/**
 * Live: a memslot swap kicks every vCPU (x86.c#kvm_arch_memslots_updated → kvm_vcpu_kick), and for a vCPU
 * in the guest the kick's IPI is a VM exit (irq_exits). The model counts one exit per kick of a vCPU in
 * the guest (test/fidelity/memslots_updated_kick.test.ts): a CREATE kicks once, a DELETE twice (its
 * INVALID copy and the final set; nothing is mapped in the slot and SLOT_ZAP_ALL is off, so no flush
 * IPI), a rejected ioctl (EINVAL before any swap) never.
 *
 * On the host the vCPU has to be inside KVM_RUN while this thread changes memslots: RealVcpu.spinWhile
 * runs KVM_RUN on a worker thread, in a guest loop that bumps a counter. Before each ioctl the test waits
 * until the counter moves (the vCPU is in the guest now), then reads irq_exits around the ioctl. Exact
 * counts are not to be had — the host's own interrupts land in the window too, the vCPU thread can be
 * preempted, and on the development host (kvm_pvm) a CREATE sometimes shows two exits — so the test
 * compares distributions: each kind of ioctl against the rejected one. It probes, never pins: it skips
 * with a printed reason where /dev/kvm is missing, the quirk cannot be disabled, or the vCPU cannot be
 * seen in the guest.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import { IdentityMapBuilder } from '../../src/x86/mmu/guest_paging.ts';
import { HOST, REAL_KVM, announceSkip, skipUnless } from './env.ts';

announceSkip('kick_exit');

const P = 4096;
const MiB = 1 << 20;
const SPIN = 0x8000_0000; // the page the vCPU spins in
const SCRATCH = 0x4000_0000; // the slot created and deleted
const ROUNDS = 60;
type Kind = 'create' | 'delete' | 'rejected';
const KINDS: Kind[] = ['create', 'delete', 'rejected'];

/** What the model says each kind of ioctl costs a vCPU that is in the guest. */
function modelExits(): Record<Kind, number> {
  const kvm = new Kvm(HOST!.modelOptions);
  const vm = kvm.createVm(0);
  vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  const ram = kvm.host.mmap(4 * MiB);
  const scratch = kvm.host.mmap(2 * MiB);
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: ram });
  const v = vm.createVcpu(0);
  v.running = true;
  const mmu = shadowMmuOf(vm);
  if (mmu !== null && !HOST!.tdpEnabled) {
    const map = new IdentityMapBuilder(mmu.gpt, 1 * MiB, 2 * MiB);
    map.mapPage(0);
    v.setCr3(map.cr3);
  }
  expect(v.access(0, 'read').exit).toBe('none'); // in the guest from here on
  const ioctl = ioctls(vm, scratch);
  const out = {} as Record<Kind, number>;
  for (const k of KINDS) {
    const e0 = v.getStats().exits!;
    ioctl[k]();
    out[k] = v.getStats().exits! - e0;
  }
  return out;
}

function ioctls(vm: { setUserMemoryRegion(a: object): void }, scratch: number): Record<Kind, () => void> {
  const region = (size: number, gpa = SCRATCH, slot = 2) =>
    vm.setUserMemoryRegion({ slot, guestPhysAddr: gpa, memorySize: size, userspaceAddr: scratch });
  return {
    create: () => region(2 * MiB),
    delete: () => region(0),
    rejected: () => {
      try {
        region(2 * MiB, SCRATCH + 1, 3); // unaligned gpa: EINVAL before any swap
      } catch {
        return;
      }
      throw new Error('the unaligned KVM_SET_USER_MEMORY_REGION was accepted');
    },
  };
}

/** Fraction of the samples at or above n. */
const atLeast = (xs: number[], n: number) => xs.filter((x) => x >= n).length / xs.length;

/** One measurement on the host: irq exits per ioctl of each kind, or null when skipped (reason printed). */
async function measureHost(): Promise<Record<Kind, number[]> | null> {
  const { RealKvm } = await import('../../src/backends/kvm/real_kvm.ts');
  const kvm = new RealKvm();
  try {
    const vm = kvm.createVm(0);
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
    const hva = kvm.host.mmap(16 * P);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: SPIN, memorySize: 16 * P, userspaceAddr: hva });
    const ioctl = ioctls(vm, kvm.host.mmap(2 * MiB));
    const v = vm.createVcpu(0);
    v.runAccesses([]); // fault the harness in
    const counter = kvm.host.view(hva + 0x802, 1);
    const inGuest = () => {
      const c = counter[0];
      for (let i = 0; i < 2000; i++) if (counter[0] !== c) return true;
      return false;
    };
    const exits: Record<Kind, number[]> = { create: [], delete: [], rejected: [] };
    let unseen = 0;
    await v.spinWhile(SPIN, async () => {
      for (let round = 0; round < ROUNDS; round++)
        for (const k of KINDS) {
          let waits = 0;
          while (!inGuest() && waits++ < 50) await new Promise((r) => setTimeout(r, 1));
          // Every ioctl is made (a DELETE needs its CREATE); only those the vCPU was seen before count.
          const seenNow = waits <= 50;
          if (!seenNow) unseen++;
          const before = v.getStats().irq_exits!;
          ioctl[k]();
          if (seenNow) exits[k].push(v.getStats().irq_exits! - before);
        }
    });
    vm.close();
    const seen = Math.min(...KINDS.map((k) => exits[k].length));
    const why = `the vCPU was seen in the guest before only ${seen} of ${ROUNDS} ioctls of a kind (${unseen} waits gave up): host too loaded`;
    return skipUnless(seen >= ROUNDS / 2, 'kick_exit', why) ? null : exits;
  } finally {
    kvm.close();
  }
}

describe.skipIf(!REAL_KVM.ok)('real /dev/kvm: the memslot kick of a vCPU in the guest', () => {
  it('a CREATE costs the spinning vCPU an exit, a DELETE two, a rejected ioctl none: as the model counts', async () => {
    if (
      skipUnless(
        ((HOST!.supportedQuirks >>> 0) & KVM_X86_QUIRK_SLOT_ZAP_ALL) !== 0,
        'kick_exit',
        'needs KVM_X86_QUIRK_SLOT_ZAP_ALL (6.12+) to keep DELETE from zapping (and IPIing) everything',
      )
    )
      return;
    expect(modelExits()).toEqual({ create: 1, delete: 2, rejected: 0 });

    // The host is measured in attempts until one shows the model's pattern, for up to 60 s: on a loaded
    // 2-CPU machine (CI runs test files in parallel) the vCPU thread, seen in the guest, can still be
    // descheduled before the kick lands, and then the kick sends no IPI; such a stretch lasted longer than
    // three back-to-back attempts (~0.5 s) in a full run on 6.18.44-fc-v1300 (create 0–0.02 against
    // 0.38–1 alone). One attempt that shows the pattern is the agreement; none in 60 s is a
    // disagreement (a host that never kicked fails every attempt).
    const attempts: string[] = [];
    const deadline = performance.now() + 60_000;
    while (attempts.length < 3 || performance.now() < deadline) {
      const m = await measureHost();
      if (m === null) return; // skipped, with its reason printed
      const s = Object.fromEntries(KINDS.map((k) => [k, [atLeast(m[k], 1), atLeast(m[k], 2)]])) as Record<
        Kind,
        [number, number]
      >;
      attempts.push(JSON.stringify(s));
      // One kick, one exit: a CREATE shows ≥ 1 clearly more often than the rejected ioctl does (on the
      // development host 0.37–1 against 0–0.05), and a DELETE, two kicks, shows ≥ 2 clearly more often
      // (0.38–0.98 against 0). A CREATE also shows 2 exits in 0–42% of rounds there: an excess the model
      // does not have (docs/fidelity.md), so CREATE and DELETE are not compared with each other.
      if (s.create[0] - s.rejected[0] > 0.2 && s.delete[1] - s.rejected[1] > 0.2) {
        console.log(
          `[kick_exit] attempt ${attempts.length}: fraction of ioctls with ≥1 / ≥2 irq exits: ${attempts.at(-1)}`,
        );
        return;
      }
      await new Promise((r) => setTimeout(r, 250)); // let a burst of other work pass
    }
    expect.fail(
      `the host's kick exits do not show the model's pattern in ${attempts.length} attempts over 60 s: ` +
        `${attempts.slice(0, 3).join(' ')} … ${attempts.at(-1)}`,
    );
  }, 120_000);
});
