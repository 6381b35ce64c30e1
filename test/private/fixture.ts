/**
 * Private-memory guests for tests: guest_memfd slots (one guest_memfd per slot, offset 0) backed by host
 * memory for their shared half, all memory PRIVATE, and vCPUs. TDX gpas of the shared alias carry the
 * shared bit (GPA bit 47 with the default MAXPHYADDR-46 profile).
 */
import { Kvm, type Vm, type Vcpu, type ZapDesign } from '../../src/index.ts';
import {
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_ZAP_LEAFS_ONLY,
  KVM_MEMORY_ATTRIBUTE_PRIVATE,
} from '../../src/uapi/kvm.ts';
import type { ModelVmCounters } from '../../src/kvm/kvm_stats.ts';

export const MiB = 1 << 20;
export const PAGE = 4096;
export const TDX_SHARED = 2 ** 47;
export const VM = { DEFAULT: 0, SW_PROTECTED: 1, SEV: 2, SEV_ES: 3, SNP: 4, TDX: 5 } as const;

export interface SlotSpec {
  slot: number;
  gpa: number;
  pages: number;
  /** KVM_MEM_ZAP_LEAFS_ONLY (the slot-flag design requires it on TDX guest_memfd slots) */
  leafsOnly?: boolean;
}

export interface PrivateGuest {
  kvm: Kvm;
  vm: Vm;
  vcpus: Vcpu[];
  /** guest_memfd fd per slot id */
  gmem: Map<number, number>;
}

export function privateGuest(
  type: number,
  slots: SlotSpec[],
  opts: { vcpus?: number; zapDesign?: ZapDesign; private?: boolean } = {},
): PrivateGuest {
  const kvm = new Kvm();
  const vm = kvm.createVm(type, { zapDesign: opts.zapDesign ?? 'quirk' });
  const gmem = new Map<number, number>();
  for (const s of slots) {
    const size = s.pages * PAGE;
    const fd = vm.createGuestMemfd({ size });
    gmem.set(s.slot, fd);
    vm.setUserMemoryRegion2({
      slot: s.slot,
      flags: KVM_MEM_GUEST_MEMFD | (s.leafsOnly ? KVM_MEM_ZAP_LEAFS_ONLY : 0),
      guestPhysAddr: s.gpa,
      memorySize: size,
      userspaceAddr: kvm.host.mmap(size),
      guestMemfd: fd,
      guestMemfdOffset: 0,
    });
    if (opts.private ?? true)
      vm.setMemoryAttributes({ address: s.gpa, size, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE });
  }
  const vcpus = Array.from({ length: opts.vcpus ?? 2 }, (_, i) => vm.createVcpu(i));
  return { kvm, vm, vcpus, gmem };
}

/** TDG.MEM.PAGE.ACCEPT of npages from gpa; returns the pfns (throws on anything but success). */
export function accept(v: Vcpu, gpa: number, npages: number): number[] {
  const pfns: number[] = [];
  for (let i = 0; i < npages; i++) {
    const r = v.tdxAccept(gpa + i * PAGE);
    if (r.exit !== 'none' || r.status !== 'success')
      throw new Error(`accept ${gpa + i * PAGE}: ${JSON.stringify(r)}`);
    pfns.push(r.pfn);
  }
  return pfns;
}

/** Access npages from gpa; returns the pfns reached (-1 for any exit). */
export function pfnsOf(v: Vcpu, gpa: number, npages: number, opts: { private?: boolean } = {}): number[] {
  const out: number[] = [];
  for (let i = 0; i < npages; i++) {
    const r = v.access(gpa + i * PAGE, 'read', opts);
    out.push(r.exit === 'none' ? r.pfn : -1);
  }
  return out;
}

export function versions(g: PrivateGuest, pfns: number[]): number[] {
  return pfns.map((p) => g.kvm.host.pfns.contentVersion(p));
}

export const model = (g: PrivateGuest) => g.vm.getModelStats() as ModelVmCounters;
export const tdx = (g: PrivateGuest) => g.vm.tdxStats();
