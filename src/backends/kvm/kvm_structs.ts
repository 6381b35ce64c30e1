/**
 * Byte layouts of the uAPI structs the real-KVM backend passes to ioctls, and of struct kvm_run.
 *
 * Kernel counterpart: include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (x86-64 layouts,
 * little-endian). Memslot/guest_memfd/dirty-log layouts follow shared/reference/memslot-abi.md §1;
 * kvm_regs (144 bytes), kvm_sregs (312), kvm_segment (24) and kvm_run's exit union are the long-standing
 * x86 layouts. Only the fields the backend reads or writes are named.
 */

/** A zeroed C struct of `size` bytes and a little-endian DataView over it. */
export function cstruct(size: number): { bytes: Uint8Array; dv: DataView } {
  const bytes = new Uint8Array(size);
  return { bytes, dv: new DataView(bytes.buffer) };
}

export const setU64 = (dv: DataView, off: number, v: number | bigint): void =>
  dv.setBigUint64(off, typeof v === 'bigint' ? v : BigInt(v), true);

/** struct kvm_userspace_memory_region2 (the first 32 bytes are struct kvm_userspace_memory_region). */
export function encodeRegion2(
  dv: DataView,
  r: {
    slot: number;
    flags: number;
    guestPhysAddr: number | bigint;
    memorySize: number | bigint;
    userspaceAddr: number | bigint;
    guestMemfdOffset?: number | bigint;
    guestMemfd?: number;
    pad1?: number;
    pad2?: number | bigint;
  },
): void {
  dv.setUint32(0, r.slot, true);
  dv.setUint32(4, r.flags, true);
  setU64(dv, 8, r.guestPhysAddr);
  setU64(dv, 16, r.memorySize);
  setU64(dv, 24, r.userspaceAddr);
  if (dv.byteLength < 160) return;
  setU64(dv, 32, r.guestMemfdOffset ?? 0);
  dv.setUint32(40, r.guestMemfd ?? 0, true);
  dv.setUint32(44, r.pad1 ?? 0, true);
  // pad2 is u64[14]; the API's single pad2 value is written to every element (the kernel ignores them).
  for (let i = 0; i < 14; i++) setU64(dv, 48 + 8 * i, r.pad2 ?? 0);
}

// ---- x86 vCPU state -----------------------------------------------------------------------------

/** struct kvm_regs field order. */
export const REG = {
  rax: 0,
  rbx: 1,
  rcx: 2,
  rdx: 3,
  rsi: 4,
  rdi: 5,
  rsp: 6,
  rbp: 7,
  r8: 8,
  r9: 9,
  r10: 10,
  r11: 11,
  r12: 12,
  r13: 13,
  r14: 14,
  r15: 15,
  rip: 16,
  rflags: 17,
} as const;
export type RegName = keyof typeof REG;
export const KVM_REGS_SIZE = 144;
export const KVM_SREGS_SIZE = 312;

export function encodeRegs(regs: Partial<Record<RegName, number>>): Uint8Array {
  const { bytes, dv } = cstruct(KVM_REGS_SIZE);
  for (const [k, v] of Object.entries(regs)) setU64(dv, REG[k as RegName] * 8, v as number);
  return bytes;
}

export function decodeRegs(bytes: Uint8Array): Record<RegName, number> {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = {} as Record<RegName, number>;
  for (const [k, i] of Object.entries(REG)) out[k as RegName] = Number(dv.getBigUint64(i * 8, true));
  return out;
}

/** struct kvm_segment */
export interface KvmSegment {
  base: number;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl?: number;
  unusable?: number;
}

/** Offsets inside struct kvm_sregs: 8 segments of 24 bytes, then gdt/idt (16 each), then the CRs. */
export const SREGS = {
  cs: 0,
  ds: 24,
  es: 48,
  fs: 72,
  gs: 96,
  ss: 120,
  tr: 144,
  ldt: 168,
  gdt: 192,
  idt: 208,
  cr0: 224,
  cr2: 232,
  cr3: 240,
  cr4: 248,
  cr8: 256,
  efer: 264,
  apicBase: 272,
} as const;

export function encodeSegment(dv: DataView, off: number, s: KvmSegment): void {
  setU64(dv, off, s.base);
  dv.setUint32(off + 8, s.limit, true);
  dv.setUint16(off + 12, s.selector, true);
  const b = [s.type, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl ?? 0, s.unusable ?? 0];
  b.forEach((v, i) => dv.setUint8(off + 14 + i, v));
}

export function encodeDtable(dv: DataView, off: number, base: number, limit: number): void {
  setU64(dv, off, base);
  dv.setUint16(off + 8, limit, true);
}

// ---- struct kvm_run -----------------------------------------------------------------------------

/** Offsets in the mmap'd struct kvm_run (the exit union starts at 32). */
export const RUN = {
  immediateExit: 1,
  exitReason: 8,
  // KVM_EXIT_IO
  ioDirection: 32,
  ioSize: 33,
  ioPort: 34,
  ioCount: 36,
  ioDataOffset: 40,
  // KVM_EXIT_MMIO
  mmioPhysAddr: 32,
  mmioData: 40,
  mmioLen: 48,
  mmioIsWrite: 52,
  // KVM_EXIT_INTERNAL_ERROR
  internalSuberror: 32,
  internalNdata: 36,
  internalData: 40,
  // KVM_EXIT_MEMORY_FAULT
  memFaultFlags: 32,
  memFaultGpa: 40,
  memFaultSize: 48,
  // KVM_EXIT_FAIL_ENTRY
  failEntryReason: 32,
} as const;

export const KVM_EXIT_IO_OUT = 1;

// ---- CPUID ----------------------------------------------------------------------------------------

/** _IOWR(KVMIO, 0x05, struct kvm_cpuid2) and _IOW(KVMIO, 0x90, struct kvm_cpuid2); the header is 8 bytes. */
export const KVM_GET_SUPPORTED_CPUID = 0xc008ae05;
export const KVM_SET_CPUID2 = 0x4008ae90;
/** struct kvm_cpuid_entry2: function, index, flags, eax, ebx, ecx, edx, padding[3] (u32 each). */
export const CPUID_ENTRY_SIZE = 40;

/** The guest MAXPHYADDR a kvm_cpuid2 image gives (CPUID.80000008H:EAX[7:0]); 36 when the leaf is absent. */
export function cpuidMaxPhyAddr(cpuid: Uint8Array): number {
  const dv = new DataView(cpuid.buffer, cpuid.byteOffset, cpuid.byteLength);
  const n = dv.getUint32(0, true);
  for (let i = 0; i < n; i++) {
    const o = 8 + i * CPUID_ENTRY_SIZE;
    if (dv.getUint32(o, true) === 0x80000008) return dv.getUint32(o + 12, true) & 0xff;
  }
  return 36;
}
