/** A small guest for MMU tests: RAM plus a 2 MiB "BAR" slot, vCPUs, and helpers to touch ranges. */
import { Kvm, type Vm, type Vcpu, type KvmOptions, type ZapDesign } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';

export const MiB = 1 << 20;
export const RAM_GPA = 0;
export const RAM_SIZE = 64 * MiB;
export const BAR_GPA = 0x10000000;
export const BAR_SIZE = 2 * MiB;

export interface Guest {
  kvm: Kvm;
  vm: Vm;
  vcpus: Vcpu[];
}

export function guest(
  opts: {
    quirk?: boolean;
    type?: number;
    backing?: '4k' | 'thp' | '2m';
    vcpus?: number;
    kvm?: KvmOptions;
    zapDesign?: ZapDesign;
  } = {},
): Guest {
  const kvm = new Kvm(opts.kvm ?? {});
  const vm = kvm.createVm(opts.type ?? 0, { zapDesign: opts.zapDesign ?? 'quirk' });
  if (opts.quirk === false)
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  const ram = kvm.host.mmap(RAM_SIZE, { backing: opts.backing ?? '4k' });
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: RAM_GPA, memorySize: RAM_SIZE, userspaceAddr: ram });
  const bar = kvm.host.mmap(BAR_SIZE);
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: BAR_SIZE, userspaceAddr: bar });
  const vcpus = Array.from({ length: opts.vcpus ?? 2 }, (_, i) => vm.createVcpu(i));
  return { kvm, vm, vcpus };
}

/** Touch npages pages from gpa; returns how many accesses reached RAM (exit 'none'). */
export function touch(v: Vcpu, gpa: number, npages: number, kind: 'read' | 'write' = 'read'): number {
  let ok = 0;
  for (let i = 0; i < npages; i++) if (v.access(gpa + i * 4096, kind).exit === 'none') ok++;
  return ok;
}

export function stat(v: Vcpu, name: string): number {
  return v.getStats()[name]!;
}
