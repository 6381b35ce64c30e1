/**
 * The public API's argument and result shapes, shared by the model (kvm/kvm_main.ts) and the real-KVM
 * backend (backends/kvm/). Field names are the C struct fields camelCased. u64 fields take a bigint or a
 * safe-integer number; u32 fields a number. Missing fields are 0.
 */
import type { U64 } from './args.ts';

export type U64In = number | bigint;

/** struct kvm_userspace_memory_region */
export interface KvmUserspaceMemoryRegion {
  slot?: number;
  flags?: number;
  guestPhysAddr?: U64In;
  memorySize?: U64In;
  userspaceAddr?: U64In;
}

/** struct kvm_userspace_memory_region2 (pad fields are ignored by 6.12–6.18, so they are accepted). */
export interface KvmUserspaceMemoryRegion2 extends KvmUserspaceMemoryRegion {
  guestMemfdOffset?: U64In;
  guestMemfd?: number;
  pad1?: number;
  pad2?: U64In;
}

/** struct kvm_create_guest_memfd */
export interface KvmCreateGuestMemfd {
  size?: U64In;
  flags?: U64In;
}

/** struct kvm_memory_attributes */
export interface KvmMemoryAttributes {
  address?: U64In;
  size?: U64In;
  attributes?: U64In;
  flags?: U64In;
}

/** struct kvm_enable_cap */
export interface KvmEnableCap {
  cap?: number;
  flags?: number;
  args?: readonly U64In[];
}

/** struct kvm_clear_dirty_log */
export interface KvmClearDirtyLog {
  slot?: number;
  numPages?: number;
  firstPage?: U64In;
  bitmap?: Uint8Array;
}

export type AccessKind = 'read' | 'write' | 'exec';

/** What a guest access observed: the host page it reached, or the exit KVM would produce. */
export type AccessResult =
  | { exit: 'none'; pfn: number; level: 1 | 2 | 3; memtype: number }
  | { exit: 'mmio'; gpa: number; write: boolean }
  | { exit: 'memory_fault'; gpa: number; size: number; private: boolean }
  | { exit: 'retry'; gpa: number; reason: string }
  | { exit: 'internal_error'; gpa: number; reason: string }
  | { exit: 'vm_dead'; gpa: number; reason: string };

/** What a completed access reached (AccessResult's 'none' case without the object). */
export interface AccessHit {
  pfn: number;
  level: 1 | 2 | 3;
  memtype: number;
}

/**
 * The batched calls' exit codes, one per access in `AccessBatchOptions.out.exit` (0 = reached a page;
 * the others name AccessResult's exits).
 */
export const ACCESS_EXITS = ['none', 'mmio', 'memory_fault', 'retry', 'internal_error', 'vm_dead'] as const;

/** Per-access outputs a batched call fills (each optional; each at least as long as the batch). */
export interface AccessBatchOut {
  /** index into ACCESS_EXITS */
  exit?: Uint8Array;
  /** the host page reached (0 for an exit) */
  pfn?: Float64Array;
  /** the leaf level (0 for an exit) */
  level?: Uint8Array;
  /** the EPT memory type (0 for an exit) */
  memtype?: Uint8Array;
}

export interface AccessBatchOptions {
  /** as vcpu.access's `private` */
  private?: boolean;
  /** accessRange: bytes from one access to the next (default 4096) */
  stride?: number;
  out?: AccessBatchOut;
  /**
   * Called after each access, before the next, with its index and result. A completed access's result
   * object is reused from call to call: read it inside the callback, do not keep it.
   */
  onResult?: (i: number, result: AccessResult) => void;
}

/** What a batched call did, in total. */
export interface AccessBatchResult {
  /** accesses made (all of them: an exit does not stop the batch, as it would not stop a loop) */
  count: number;
  /** accesses that reached a page */
  none: number;
  /** accesses that exited */
  exits: number;
  /** the first exit and its index (null / -1 if none) */
  firstExit: AccessResult | null;
  firstExitIndex: number;
}

/** Stats as { name: value } with the kernel's binary-stats names. */
export type KvmStats = Record<string, number>;

export type { U64 };
