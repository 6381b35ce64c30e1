/**
 * Helpers for the conformance tables: the selftests' R1/R2 notation on a model VM, returning 'OK' or the
 * errno name, so a table row reads like the reference (memslot-abi.md §7–8).
 */
import { Kvm, KvmError, type KvmOptions, type Vm } from '../../src/index.ts';

export type Outcome = 'OK' | string;

export function outcome(f: () => unknown): Outcome {
  try {
    f();
    return 'OK';
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    throw e;
  }
}

export const P = 4096;
export const S = 0x200000;
export const G = 0xc0000000;

export function R1(
  vm: Vm,
  slot: number,
  flags: number,
  gpa: number | bigint,
  size: number | bigint,
  hva: number | bigint,
): Outcome {
  return outcome(() =>
    vm.setUserMemoryRegion({ slot, flags, guestPhysAddr: gpa, memorySize: size, userspaceAddr: hva }),
  );
}

export function R2(
  vm: Vm,
  slot: number,
  flags: number,
  gpa: number | bigint,
  size: number | bigint,
  hva: number | bigint,
  fd: number,
  off: number | bigint,
): Outcome {
  return outcome(() =>
    vm.setUserMemoryRegion2({
      slot,
      flags,
      guestPhysAddr: gpa,
      memorySize: size,
      userspaceAddr: hva,
      guestMemfd: fd,
      guestMemfdOffset: off,
    }),
  );
}

/** A fresh model /dev/kvm and VM. */
export function fresh(type = 0, opts: KvmOptions = {}): { kvm: Kvm; vm: Vm } {
  const kvm = new Kvm(opts);
  return { kvm, vm: kvm.createVm(type) };
}

/** The active layout of an address space as [id, baseGfn, npages, flags] rows. */
export function layout(vm: Vm, as = 0): [number, number, number, number][] {
  return vm.memslots(as).map((s) => [s.id, s.baseGfn, s.npages, s.flags]);
}
