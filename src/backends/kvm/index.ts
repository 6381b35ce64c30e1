/**
 * The real-KVM backend: the public API of the model (Kvm/Vm/Vcpu) on the real /dev/kvm, through koffi.
 * Import this module only where /dev/kvm is wanted; koffi itself loads on the first RealKvm.
 *
 *   import { RealKvm, realKvmAvailability } from 'zaplab/src/backends/kvm/index.ts';
 *   const avail = realKvmAvailability();            // { ok } or { ok: false, reason }
 *   using kvm = new RealKvm();                      // opens /dev/kvm
 *   const vm = kvm.createVm(0);
 *   const hva = kvm.host.mmap(1 << 20);
 *   vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x8000_0000, memorySize: 1 << 20, userspaceAddr: hva });
 *   vm.createVcpu(0).runAccesses([{ gpa: 0x8000_0000, kind: 'write' }]);   // results + stat deltas
 */
export { RealKvm, type RealKvmOptions, type RealHostProfile } from './real_kvm.ts';
export { RealVm, type RealVmOptions, type TrackedSlot } from './real_vm.ts';
export { RealVcpu, type GuestAccess, type RunAccessesResult } from './real_vcpu.ts';
export { RealHost, type Backing } from './real_host.ts';
export { BinaryStatsFd, type KvmStatsDesc, type KvmStatsHeader } from './binary_stats.ts';
export { DEFAULT_HARNESS, type HarnessConfig } from './guest_harness.ts';
export { realKvmAvailability } from './libc.ts';
export { probeHost, deriveModel, formatProbe, modelKernelFor, type Derivation } from './host_probe.ts';
export { liveResourceCount } from './resources.ts';
