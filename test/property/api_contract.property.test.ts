/**
 * Property: the error contract of every public entry point (DESIGN.md § Public API), under arbitrary
 * argument values.
 *
 * Each entry point is called on a fresh fixture with each argument either a valid value, a valid struct
 * with one field replaced, or an arbitrary value (fast-check's `anything` with boxed values, bigints,
 * null-prototype objects, typed arrays, plus the values that broke the model before: Symbol(),
 * Object.create(null), Object(4096n), NaN, -4096, 2^64). The call must
 *   * return, or throw a KvmError whose errno is a Linux errno and whose code names it, or throw the
 *     model's own TypeError/RangeError whose message starts with "<entry point>: " (it names the
 *     argument); never an engine error ("Cannot convert a Symbol value to a number", …);
 *   * leave the observable state (memslots, generations, stats, fds, host mappings, vCPU registers,
 *     VFIO state) unchanged when it throws;
 *   * finish (vitest's timeout: no entry point loops over an argument's magnitude).
 * The raw `ioctlSetUserMemoryRegion` must never throw, only return 0 or -errno.
 *
 * A table below lists each class's public methods; a test fails when a method is added to a public
 * class without an entry here, so new entry points join the property.
 *
 * Replay: fast-check prints seed and path; ZAPLAB_FC_SEED=<seed> npx vitest run test/property/api_contract
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  Kvm,
  KvmError,
  Vcpu,
  Vm,
  Vfio,
  VfioContainer,
  VfioDevice,
  VfioGroup,
  KvmVfioDevice,
  ERRNO,
  auditSpteMemtypes,
  decodeMtMask,
  effectiveMemtype,
  guestPatType,
  uapi,
  uapiVfio,
} from '../../src/index.ts';
import { HostMm } from '../../src/host/host_mm.ts';

const MiB = 1 << 20;

interface Fx {
  kvm: Kvm;
  vm: Vm;
  vcpu: Vcpu;
  hva: number;
  gmemFd: number;
  snp: Vm;
  snpVcpu: Vcpu;
  td: Vm;
  tdVcpu: Vcpu;
  vfio: Vfio;
  dev: VfioDevice;
  group: VfioGroup;
  container: VfioContainer;
  kvmVfio: KvmVfioDevice;
  /** a group in no container */
  spareGroup: VfioGroup;
}

function fixture(): Fx {
  const kvm = new Kvm();
  const hva = kvm.host.mmap(4 * MiB, { backing: 'thp' });
  const vm = kvm.createVm(0);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva });
  const vcpu = vm.createVcpu(0);
  vcpu.access(0x1000, 'write');
  const gmemFd = vm.createGuestMemfd({ size: 2 * MiB });
  const snp = kvm.createVm(4);
  const sfd = snp.createGuestMemfd({ size: 2 * MiB });
  snp.setUserMemoryRegion2({
    slot: 0,
    flags: uapi.KVM_MEM_GUEST_MEMFD,
    memorySize: 2 * MiB,
    userspaceAddr: hva + 2 * MiB,
    guestMemfd: sfd,
  });
  snp.setMemoryAttributes({ address: 0, size: 2 * MiB, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
  const snpVcpu = snp.createVcpu(0);
  const td = kvm.createVm(5);
  const tfd = td.createGuestMemfd({ size: 2 * MiB });
  td.setUserMemoryRegion2({
    slot: 0,
    flags: uapi.KVM_MEM_GUEST_MEMFD,
    memorySize: 2 * MiB,
    userspaceAddr: hva,
    guestMemfd: tfd,
  });
  td.setMemoryAttributes({ address: 0, size: 2 * MiB, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
  const tdVcpu = td.createVcpu(0);
  const vfio = kvm.vfio;
  const dev = vfio.addDevice({ name: 'nic' });
  const container = vfio.openContainer();
  dev.group.setContainer(container.fd);
  container.setIommu(uapiVfio.VFIO_TYPE1v2_IOMMU);
  container.mapDma({ iova: 0, vaddr: hva, size: MiB, flags: 3 });
  const kvmVfio = vm.createDevice({ type: uapiVfio.KVM_DEV_TYPE_VFIO });
  const spareGroup = vfio.addDevice({ name: 'spare' }).group;
  return {
    kvm,
    vm,
    vcpu,
    hva,
    gmemFd,
    snp,
    snpVcpu,
    td,
    tdVcpu,
    vfio,
    dev,
    group: dev.group,
    container,
    kvmVfio,
    spareGroup,
  };
}

/** Everything a caller can observe, as one string (bigints spelled out). */
function snapshot(f: Fx): string {
  const vmState = (vm: Vm) => ({
    slots: [0, 1].map((as) =>
      as < vm.nrAs ? vm.memslots(as).map((s) => ({ ...s, gmem: null, arch: null, dirtyBitmap: null })) : [],
    ),
    gens: [0, 1].map((as) => (as < vm.nrAs ? vm.memslotsGeneration(as) : 0)),
    stats: vm.getStats(),
    model: vm.getModelStats(),
    tdx: vm.tdxStats(),
    dead: vm.dead,
    vcpus: vm.vcpus.map((v) => ({ id: v.vcpuId, stats: v.getStats(), memtype: v.memtype, cr3: v.cr3 })),
    devices: vm.devices.length,
    noncoherent: vm.arch.noncoherentDmaCount,
  });
  const fds: string[] = [];
  for (let fd = 0; fd < 64; fd++) {
    const file = f.kvm.lookupFd(fd);
    if (file !== undefined) fds.push(`${fd}:${file.kind}`);
  }
  const state = {
    vms: [f.vm, f.snp, f.td].map(vmState),
    fds,
    maps: f.kvm.host.mappings().map((v) => [v.start, v.length, v.backing, v.writable]),
    pages: f.kvm.host.pfns.allocated,
    vfio: {
      units: f.vfio.units.length,
      groups: f.vfio.groups.map((g) => [g.devices.length, g.container?.fd ?? -1]),
      pinned: f.container.iommu?.pagesPinned ?? -1,
      snoopScope: f.vfio.snoopScope,
    },
  };
  return JSON.stringify(state, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Map ? [...v] : v));
}

/** Engine messages that must never reach a caller. */
const ENGINE =
  /Cannot convert|Cannot read prop|Cannot set prop|is not a function|is not iterable|is not a constructor|Invalid (typed )?array length|Array buffer allocation|Maximum call stack|Cannot mix BigInt|to a BigInt|not a valid BigInt|Do not know how to serialize|object null prototype|Symbol\(\)|cannot be converted/;

type Call = (f: Fx, args: unknown[]) => unknown;
interface EntryPoint {
  /** the name its TypeError/RangeError messages start with */
  fn: string;
  call: Call;
  /** valid arguments, built from the fixture */
  valid: (f: Fx) => unknown[];
  /** never throws (the raw ioctl) */
  raw?: boolean;
  /**
   * A failure may leave earlier work done, as the kernel's does: KVM_TDX_INIT_MEM_REGION adds pages one
   * by one and reports its progress in the argument (tdx_vcpu_init_mem_region), so pages before a
   * failing one stay added.
   */
  partial?: boolean;
}

const region = (f: Fx) => ({ slot: 1, guestPhysAddr: 0x40000000, memorySize: MiB, userspaceAddr: f.hva });

const ENTRY_POINTS: Record<string, EntryPoint> = {
  'new Kvm': { fn: 'Kvm', call: (_f, a) => new Kvm(a[0] as never), valid: () => [{ profile: 'pvm-6.18' }] },
  'Kvm.apiVersion': { fn: 'apiVersion', call: (f) => f.kvm.apiVersion(), valid: () => [] },
  'Kvm.checkExtension': {
    fn: 'checkExtension',
    call: (f, a) => f.kvm.checkExtension(a[0] as never),
    valid: () => [1],
  },
  'Kvm.createVm': {
    fn: 'createVm',
    call: (f, a) => f.kvm.createVm(a[0] as never, a[1] as never),
    valid: () => [0, { zapDesign: 'vm-type' }],
  },
  'Kvm.memfdCreate': {
    fn: 'memfdCreate',
    call: (f, a) => f.kvm.memfdCreate(a[0] as never),
    valid: () => [4096],
  },
  'Kvm.fallocate': {
    fn: 'fallocate',
    call: (f, a) => f.kvm.fallocate(a[0] as never, a[1] as never, a[2] as never, a[3] as never),
    valid: (f) => [f.gmemFd, 3, 0, 4096],
  },
  'Kvm.close': { fn: 'close', call: (f, a) => f.kvm.close(a[0] as never), valid: (f) => [f.gmemFd] },
  'Kvm.lookupFd': { fn: 'lookupFd', call: (f, a) => f.kvm.lookupFd(a[0] as never), valid: (f) => [f.vm.fd] },
  'HostMm.mmap': {
    fn: 'mmap',
    call: (f, a) => f.kvm.host.mmap(a[0] as never, a[1] as never),
    valid: () => [2 * MiB, { backing: '2m' }],
  },
  'HostMm.munmap': {
    fn: 'munmap',
    call: (f, a) => f.kvm.host.munmap(a[0] as never, a[1] as never, a[2] as never),
    valid: (f) => [f.hva, 4096, { stepwise: false }],
  },
  'HostMm.mprotect': {
    fn: 'mprotect',
    call: (f, a) => f.kvm.host.mprotect(a[0] as never, a[1] as never, a[2] as never),
    valid: (f) => [f.hva, 4096, false],
  },
  'HostMm.migrate': {
    fn: 'migrate',
    call: (f, a) => f.kvm.host.migrate(a[0] as never, a[1] as never, a[2] as never),
    valid: (f) => [f.hva, 4096, { stepwise: false }],
  },
  'HostMm.thpSplit': {
    fn: 'thpSplit',
    call: (f, a) => f.kvm.host.thpSplit(a[0] as never),
    valid: (f) => [f.hva],
  },
  'HostMm.thpCollapse': {
    fn: 'thpCollapse',
    call: (f, a) => f.kvm.host.thpCollapse(a[0] as never),
    valid: (f) => [f.hva],
  },
  'HostMm.swapOut': {
    fn: 'swapOut',
    call: (f, a) => f.kvm.host.swapOut(a[0] as never, a[1] as never),
    valid: (f) => [f.hva, 4096],
  },
  'HostMm.ksmMerge': {
    fn: 'ksmMerge',
    call: (f, a) => f.kvm.host.ksmMerge(a[0] as never, a[1] as never),
    valid: (f) => [f.hva, f.hva + 4096],
  },
  'HostMm.exitMm': { fn: 'exitMm', call: (f) => f.kvm.host.exitMm(), valid: () => [] },
  'HostMm.mappings': { fn: 'mappings', call: (f) => f.kvm.host.mappings(), valid: () => [] },
  'HostMm.inFlight': { fn: 'inFlight', call: (f) => f.kvm.host.inFlight(), valid: () => [] },
  'Vm.checkExtension': {
    fn: 'checkExtension',
    call: (f, a) => f.vm.checkExtension(a[0] as never),
    valid: () => [1],
  },
  'Vm.setUserMemoryRegion': {
    fn: 'setUserMemoryRegion',
    call: (f, a) => f.vm.setUserMemoryRegion(a[0] as never),
    valid: (f) => [region(f)],
  },
  'Vm.setUserMemoryRegion2': {
    fn: 'setUserMemoryRegion2',
    call: (f, a) => f.vm.setUserMemoryRegion2(a[0] as never),
    valid: (f) => [region(f)],
  },
  'Vm.ioctlSetUserMemoryRegion': {
    fn: 'ioctlSetUserMemoryRegion',
    call: (f, a) => f.vm.ioctlSetUserMemoryRegion(a[0] as never, a[1] as never),
    valid: (f) => [region(f), true],
    raw: true,
  },
  'Vm.createGuestMemfd': {
    fn: 'createGuestMemfd',
    call: (f, a) => f.vm.createGuestMemfd(a[0] as never),
    valid: () => [{ size: MiB }],
  },
  'Vm.tdxInitMemRegion': {
    fn: 'tdxInitMemRegion',
    call: (f, a) => f.td.tdxInitMemRegion(a[0] as never, a[1] as never, a[2] as never),
    valid: () => [0x1000, 2, { measure: true }],
    partial: true,
  },
  'Vm.tdxFinalizeVm': { fn: 'tdxFinalizeVm', call: (f) => f.td.tdxFinalizeVm(), valid: () => [] },
  'Vm.tdxStats': { fn: 'tdxStats', call: (f) => f.td.tdxStats(), valid: () => [] },
  'Vm.snpRmpEntry': { fn: 'snpRmpEntry', call: (f, a) => f.snp.snpRmpEntry(a[0] as never), valid: () => [1] },
  'Vm.setMemoryAttributes': {
    fn: 'setMemoryAttributes',
    call: (f, a) => f.snp.setMemoryAttributes(a[0] as never),
    valid: () => [{ address: 0, size: 4096, attributes: 0 }],
  },
  'Vm.enableCap': {
    fn: 'enableCap',
    call: (f, a) => f.vm.enableCap(a[0] as never),
    valid: () => [{ cap: 213, args: [0x80] }],
  },
  'Vm.getDirtyLog': { fn: 'getDirtyLog', call: (f, a) => f.vm.getDirtyLog(a[0] as never), valid: () => [0] },
  'Vm.clearDirtyLog': {
    fn: 'clearDirtyLog',
    call: (f, a) => f.vm.clearDirtyLog(a[0] as never),
    valid: () => [{ slot: 0, firstPage: 0, numPages: 64, bitmap: new Uint8Array(8) }],
  },
  'Vm.getStats': { fn: 'getStats', call: (f) => f.vm.getStats(), valid: () => [] },
  'Vm.getModelStats': { fn: 'getModelStats', call: (f) => f.vm.getModelStats(), valid: () => [] },
  'Vm.createDevice': {
    fn: 'createDevice',
    call: (f, a) => f.snp.createDevice(a[0] as never),
    valid: () => [{ type: uapiVfio.KVM_DEV_TYPE_VFIO }],
  },
  'Vm.createVcpu': { fn: 'createVcpu', call: (f, a) => f.vm.createVcpu(a[0] as never), valid: () => [1] },
  'Vm.memslots': { fn: 'memslots', call: (f, a) => f.vm.memslots(a[0] as never), valid: () => [1] },
  'Vm.memslotsGeneration': {
    fn: 'memslotsGeneration',
    call: (f, a) => f.vm.memslotsGeneration(a[0] as never),
    valid: () => [1],
  },
  'Vcpu.access': {
    fn: 'access',
    call: (f, a) => f.vcpu.access(a[0] as never, a[1] as never, a[2] as never),
    valid: () => [0x2000, 'write', { private: false }],
  },
  'Vcpu.accessRange': {
    fn: 'accessRange',
    call: (f, a) => f.vcpu.accessRange(a[0] as never, a[1] as never, a[2] as never, a[3] as never),
    valid: () => [0x2000, 4, 'write', { stride: 4096, private: false }],
  },
  'Vcpu.accessList': {
    fn: 'accessList',
    call: (f, a) => f.vcpu.accessList(a[0] as never, a[1] as never, a[2] as never),
    valid: () => [[0x2000, 0x5000], 'read', { out: { exit: new Uint8Array(2) } }],
  },
  'Vcpu.beginAccess': {
    fn: 'beginAccess',
    call: (f, a) => f.vcpu.beginAccess(a[0] as never, a[1] as never).finish(),
    valid: () => [0x2000, 'write'],
  },
  'Vcpu.accessStep': {
    fn: 'accessStep',
    call: (f, a) => {
      const st = f.vcpu.accessStep(a[0] as never, a[1] as never);
      return st === null || st.result !== null ? st : st.finish();
    },
    valid: () => [0x2000, 'write'],
  },
  'Vcpu.tdxAccept': {
    fn: 'tdxAccept',
    call: (f, a) => f.tdVcpu.tdxAccept(a[0] as never),
    valid: () => [0x3000],
  },
  'Vcpu.snpPvalidate': {
    fn: 'snpPvalidate',
    call: (f, a) => f.snpVcpu.snpPvalidate(a[0] as never, a[1] as never),
    valid: () => [0x3000, true],
  },
  'Vcpu.setCr0': { fn: 'setCr0', call: (f, a) => f.vcpu.setCr0(a[0] as never), valid: () => [{ cd: false }] },
  // the fixture's VM is on a TDP host: the calls must fail cleanly (writeGuestPte: TypeError, no change)
  'Vm.writeGuestPte': {
    fn: 'writeGuestPte',
    call: (f, a) => f.vm.writeGuestPte(a[0] as never, a[1] as never, a[2] as never),
    valid: () => [0x1000, 0, 0x2007],
  },
  'Vm.readGuestPte': {
    fn: 'readGuestPte',
    call: (f, a) => f.vm.readGuestPte(a[0] as never, a[1] as never),
    valid: () => [0x1000, 0],
  },
  'Vcpu.setCr3': { fn: 'setCr3', call: (f, a) => f.vcpu.setCr3(a[0] as never), valid: () => [0x1000] },
  'Vcpu.setMsr': {
    fn: 'setMsr',
    call: (f, a) => f.vcpu.setMsr(a[0] as never, a[1] as never),
    valid: () => [0x277, 0x0007040600070406n],
  },
  'Vcpu.getMsr': { fn: 'getMsr', call: (f, a) => f.vcpu.getMsr(a[0] as never), valid: () => [0x2ff] },
  'Vcpu.setMtrrDefType': {
    fn: 'setMtrrDefType',
    call: (f, a) => f.vcpu.setMtrrDefType(a[0] as never, a[1] as never),
    valid: () => [6, { enabled: true, fixed: false }],
  },
  'Vcpu.setMtrrVar': {
    fn: 'setMtrrVar',
    call: (f, a) => f.vcpu.setMtrrVar(a[0] as never, a[1] as never),
    valid: () => [1, { base: 0x200000, size: 0x200000, type: 1 }],
  },
  'Vcpu.getStats': { fn: 'getStats', call: (f) => f.vcpu.getStats(), valid: () => [] },
  'Vfio.addIommu': {
    fn: 'addIommu',
    call: (f, a) => f.vfio.addIommu(a[0] as never),
    valid: () => [{ snoopControl: false }],
  },
  'Vfio.addDevice': {
    fn: 'addDevice',
    call: (f, a) => f.vfio.addDevice(a[0] as never),
    valid: (f) => [{ name: 'gpu', iommu: f.vfio.units[0] }],
  },
  'Vfio.openContainer': { fn: 'openContainer', call: (f) => f.vfio.openContainer(), valid: () => [] },
  'VfioGroup.setContainer': {
    fn: 'setContainer',
    call: (f, a) => f.spareGroup.setContainer(a[0] as never),
    valid: (f) => [f.container.fd],
  },
  'VfioGroup.unsetContainer': {
    fn: 'unsetContainer',
    call: (f) => f.group.unsetContainer(),
    valid: () => [],
  },
  'VfioGroup.enforcedCoherent': {
    fn: 'enforcedCoherent',
    call: (f) => f.group.enforcedCoherent(),
    valid: () => [],
  },
  'VfioContainer.checkExtension': {
    fn: 'checkExtension',
    call: (f, a) => f.container.checkExtension(a[0] as never),
    valid: () => [uapiVfio.VFIO_DMA_CC_IOMMU],
  },
  'VfioContainer.setIommu': {
    fn: 'setIommu',
    call: (f, a) => f.container.setIommu(a[0] as never),
    valid: () => [uapiVfio.VFIO_TYPE1v2_IOMMU],
  },
  'VfioContainer.mapDma': {
    fn: 'mapDma',
    call: (f, a) => f.container.mapDma(a[0] as never),
    valid: (f) => [{ iova: 2 * MiB, vaddr: f.hva + MiB, size: 4096, flags: 3 }],
  },
  'VfioContainer.unmapDma': {
    fn: 'unmapDma',
    call: (f, a) => f.container.unmapDma(a[0] as never),
    valid: () => [{ iova: 0, size: 4096 }],
  },
  'VfioDevice.dma': {
    fn: 'dma',
    call: (f, a) => f.dev.dma(a[0] as never, a[1] as never),
    valid: () => [0x1000, 'write'],
  },
  'KvmVfioDevice.setAttr': {
    fn: 'setAttr',
    call: (f, a) => f.kvmVfio.setAttr(a[0] as never),
    valid: (f) => [{ group: 1, attr: 1, fd: f.group.fd }],
  },
  'KvmVfioDevice.fileAdd': {
    fn: 'fileAdd',
    call: (f, a) => f.kvmVfio.fileAdd(a[0] as never),
    valid: (f) => [f.group.fd],
  },
  'KvmVfioDevice.fileDel': {
    fn: 'fileDel',
    call: (f, a) => f.kvmVfio.fileDel(a[0] as never),
    valid: (f) => [f.group.fd],
  },
  'KvmVfioDevice.release': { fn: 'release', call: (f) => f.kvmVfio.release(), valid: () => [] },
  auditSpteMemtypes: {
    fn: 'auditSpteMemtypes',
    call: (_f, a) => auditSpteMemtypes(a[0] as never, a[1] as never),
    valid: (f) => [f.vm, f.vcpu],
  },
  effectiveMemtype: {
    fn: 'effectiveMemtype',
    call: (_f, a) => effectiveMemtype(a[0] as never, a[1] as never, a[2] as never),
    valid: () => [6, false, 6],
  },
  guestPatType: {
    fn: 'guestPatType',
    call: (_f, a) => guestPatType(a[0] as never, a[1] as never),
    valid: (f) => [f.vcpu, 3],
  },
  decodeMtMask: { fn: 'decodeMtMask', call: (_f, a) => decodeMtMask(a[0] as never), valid: () => [0x70] },
};

/** Methods on public classes that are the model's internal interfaces (or TS-private), not entry points. */
const INTERNAL = new Set([
  'Kvm.checkOpen',
  'HostMm.faultIn',
  'HostMm.breakCow',
  'HostMm.forPages',
  'HostMm.vmasIn',
  'HostMm.splitVmasAround',
  'VfioContainer.backend',
  'KvmVfioDevice.updateCoherency',
  'Kvm.installFd',
  'Kvm.onClose',
  'HostMm.registerNotifier',
  'HostMm.unregisterNotifier',
  'HostMm.findVma',
  'HostMm.hvaToPfn',
  'HostMm.hvaToPfnInto',
  'HostMm.gup4kInto',
  'HostMm.pfnAt',
  'HostMm.mappingLevelAt',
  'HostMm.changePages',
  'Vcpu.asId',
  'Vcpu.requestTlbFlush',
  'Vcpu.makeRequest',
  'Vcpu.kick',
  'Vcpu.kvmArchVcpuShouldKick',
  'Vcpu.externalInterruptExit',
  'Vcpu.afterAccess',
  'Vcpu.accessEnded',
  'Vcpu.kvmRequestNeedsIpi',
  'Vfio.lookupFile',
  'Vfio.fileEnforcedCoherent',
  'Vfio.fileIsValid',
  'Vfio.newType1',
]);

const SPECIAL: unknown[] = [
  Symbol('x'),
  Object.create(null),
  Object(4096n),
  Object(4096),
  NaN,
  -4096,
  -0,
  0.5,
  2 ** 53,
  2 ** 64,
  2n ** 64n,
  -1n,
  4096n,
  1e300,
  Infinity,
  '4096',
  'yes',
  true,
  null,
  undefined,
  [],
  [4096],
  new Map(),
  () => 0,
  { valueOf: () => 4096 },
];

const weird = fc.oneof(
  fc.constantFrom(...SPECIAL),
  fc.anything({
    withBigInt: true,
    withBoxedValues: true,
    withNullPrototype: true,
    withTypedArray: true,
    withMap: true,
    withSet: true,
    withDate: true,
  }),
);

/** Each argument valid, a valid struct with one field changed (or one unknown field), or arbitrary. */
function argsArb(valid: unknown[]): fc.Arbitrary<unknown[]> {
  const n = Math.max(valid.length, 1);
  const slots = Array.from({ length: n }, (_, i) => {
    const v = valid[i];
    const options: fc.Arbitrary<unknown>[] = [fc.constant(v), weird];
    if (typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype) {
      const keys = [...Object.keys(v), 'bogus'];
      options.push(fc.tuple(fc.constantFrom(...keys), weird).map(([k, w]) => ({ ...(v as object), [k]: w })));
    }
    return fc.oneof(...options);
  });
  return fc.tuple(...slots);
}

function checkThrown(ep: EntryPoint, e: unknown): void {
  if (e instanceof KvmError) {
    expect(Object.values(ERRNO)).toContain(e.errno);
    expect(ERRNO[e.code as keyof typeof ERRNO]).toBe(e.errno);
    expect(e.message).not.toMatch(ENGINE);
    return;
  }
  expect(e).toSatisfy((x: unknown) => x instanceof TypeError || x instanceof RangeError);
  const msg = (e as Error).message;
  expect(msg, `${ep.fn}: ${msg}`).not.toMatch(ENGINE);
  expect(msg.startsWith(`${ep.fn}: `), `message should start with "${ep.fn}: " — ${msg}`).toBe(true);
}

const RUNS = Number(process.env['ZAPLAB_FC_RUNS'] ?? 60);
const seed = process.env['ZAPLAB_FC_SEED'] === undefined ? undefined : Number(process.env['ZAPLAB_FC_SEED']);

describe('every public entry point keeps the error contract under arbitrary arguments', () => {
  it('the table covers every public method of the public classes', () => {
    const classes: [string, { prototype: object }][] = [
      ['Kvm', Kvm],
      ['HostMm', HostMm],
      ['Vm', Vm],
      ['Vcpu', Vcpu],
      ['Vfio', Vfio],
      ['VfioGroup', VfioGroup],
      ['VfioContainer', VfioContainer],
      ['VfioDevice', VfioDevice],
      ['KvmVfioDevice', KvmVfioDevice],
    ];
    const missing: string[] = [];
    for (const [name, cls] of classes) {
      for (let p = cls.prototype; p !== Object.prototype; p = Object.getPrototypeOf(p)) {
        if (name === 'Vm' && p !== Vm.prototype) break; // VmState: the MMU's internal interface
        for (const m of Object.getOwnPropertyNames(p)) {
          const d = Object.getOwnPropertyDescriptor(p, m)!;
          if (m === 'constructor' || typeof d.value !== 'function') continue;
          const key = `${name}.${m}`;
          if (!(key in ENTRY_POINTS) && !INTERNAL.has(key)) missing.push(key);
        }
      }
    }
    expect(missing).toEqual([]);
  });

  for (const [name, ep] of Object.entries(ENTRY_POINTS)) {
    it(name, () => {
      const validArgs = ep.valid(fixture());
      fc.assert(
        fc.property(argsArb(validArgs), (args) => {
          const f = fixture();
          const real = args.map((a, i) => (a === validArgs[i] ? ep.valid(f)[i] : a));
          const before = snapshot(f);
          if (ep.raw) {
            const r = ep.call(f, real);
            expect(typeof r).toBe('number');
            expect(r === 0 || (Object.values(ERRNO) as number[]).includes(-(r as number))).toBe(true);
            if (r !== 0) expect(snapshot(f)).toBe(before);
            return;
          }
          try {
            ep.call(f, real);
          } catch (e) {
            checkThrown(ep, e);
            if (!ep.partial) expect(snapshot(f)).toBe(before);
          }
        }),
        seed === undefined ? { numRuns: RUNS } : { numRuns: RUNS, seed },
      );
    });
  }
});
