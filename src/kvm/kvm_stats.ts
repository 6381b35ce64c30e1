/**
 * VM and vCPU statistics with the kernel's binary-stats names, in the kernel's descriptor order, plus
 * the model's own counters kept beside them (never mixed into getStats(), so the two backends report the
 * same names).
 *
 * Kernel counterpart: arch/x86/kvm/x86.c (kvm_vm_stats_desc, kvm_vcpu_stats_desc) and the generic
 * KVM_GENERIC_VM_STATS / KVM_GENERIC_VCPU_STATS of include/linux/kvm_host.h. Names and order checked
 * against the real 6.18 host (shared/reference/real-kvm-host.md §5). The three halt_*_hist histograms are
 * not modelled (the model never halts); the PVM-only stats appear only under the 'pvm-6.18' profile.
 */

export const VM_STAT_NAMES = [
  'remote_tlb_flush',
  'remote_tlb_flush_requests',
  'mmu_shadow_zapped',
  'mmu_pte_write',
  'mmu_pde_zapped',
  'mmu_flooded',
  'mmu_recycled',
  'mmu_cache_miss',
  'mmu_unsync',
  'pages_4k',
  'pages_2m',
  'pages_1g',
  'nx_lpage_splits',
  'max_mmu_rmap_size',
  'max_mmu_page_hash_collisions',
] as const;
export const VM_STAT_NAMES_PVM = ['mmu_kicks_spared'] as const;

export const VCPU_STAT_NAMES = [
  'halt_successful_poll',
  'halt_attempted_poll',
  'halt_poll_invalid',
  'halt_wakeup',
  'halt_poll_success_ns',
  'halt_poll_fail_ns',
  'halt_wait_ns',
  'blocking',
  'pf_taken',
  'pf_fixed',
  'pf_emulate',
  'pf_spurious',
  'pf_fast',
  'pf_mmio_spte_created',
  'pf_guest',
  'tlb_flush',
  'invlpg',
  'exits',
  'io_exits',
  'mmio_exits',
  'signal_exits',
  'irq_window_exits',
  'nmi_window_exits',
  'l1d_flush',
  'halt_exits',
  'request_irq_exits',
  'irq_exits',
  'host_state_reload',
  'fpu_reload',
  'insn_emulation',
  'insn_emulation_fail',
  'hypercalls',
  'irq_injections',
  'nmi_injections',
  'req_event',
  'nested_run',
  'directed_yield_attempted',
  'directed_yield_successful',
  'preemption_reported',
  'preemption_other',
  'guest_mode',
  'notify_window_exits',
] as const;
export const VCPU_STAT_NAMES_PVM = ['pf_parked', 'pf_park_timeouts'] as const;

export type VmStatName = (typeof VM_STAT_NAMES)[number] | (typeof VM_STAT_NAMES_PVM)[number];
export type VcpuStatName = (typeof VCPU_STAT_NAMES)[number] | (typeof VCPU_STAT_NAMES_PVM)[number];
export type VmStats = Record<VmStatName, number>;
export type VcpuStats = Record<VcpuStatName, number>;

/** Counters the kernel does not export but the model reports beside the stats. */
export const MODEL_VM_COUNTER_NAMES = [
  'memslot_zap_all_fast',
  'memslot_zap_precise',
  'sptes_zapped_4k',
  'sptes_zapped_2m',
  'sptes_zapped_1g',
  'sptes_zapped_nonleaf',
  'pt_pages_allocated',
  'pt_pages_freed',
  'roots_allocated',
  'refaults',
  'fault_retries',
  'tlb_flush_ipis',
  'seamcalls',
  'tdx_private_pages_removed',
  'tdx_unaccepted_accesses',
  /** sev_writeback_caches from kvm_arch_guest_memory_reclaimed (SEV and SEV-ES only; x86/sev.ts) */
  'sev_cache_writebacks',
] as const;
export type ModelVmCounterName = (typeof MODEL_VM_COUNTER_NAMES)[number];
export type ModelVmCounters = Record<ModelVmCounterName, number>;

function zeroed<K extends string>(names: readonly K[]): Record<K, number> {
  const o = {} as Record<K, number>;
  for (const n of names) o[n] = 0;
  return o;
}

/**
 * The vCPU stats as a class with every field declared, so V8 keeps one fast hidden class (an object
 * built field by field with this many properties falls back to dictionary mode, slowing every `++`).
 */
class VcpuStatsData {
  halt_successful_poll = 0;
  halt_attempted_poll = 0;
  halt_poll_invalid = 0;
  halt_wakeup = 0;
  halt_poll_success_ns = 0;
  halt_poll_fail_ns = 0;
  halt_wait_ns = 0;
  blocking = 0;
  pf_taken = 0;
  pf_fixed = 0;
  pf_emulate = 0;
  pf_spurious = 0;
  pf_fast = 0;
  pf_mmio_spte_created = 0;
  pf_guest = 0;
  tlb_flush = 0;
  invlpg = 0;
  exits = 0;
  io_exits = 0;
  mmio_exits = 0;
  signal_exits = 0;
  irq_window_exits = 0;
  nmi_window_exits = 0;
  l1d_flush = 0;
  halt_exits = 0;
  request_irq_exits = 0;
  irq_exits = 0;
  host_state_reload = 0;
  fpu_reload = 0;
  insn_emulation = 0;
  insn_emulation_fail = 0;
  hypercalls = 0;
  irq_injections = 0;
  nmi_injections = 0;
  req_event = 0;
  nested_run = 0;
  directed_yield_attempted = 0;
  directed_yield_successful = 0;
  preemption_reported = 0;
  preemption_other = 0;
  guest_mode = 0;
  notify_window_exits = 0;
  pf_parked = 0;
  pf_park_timeouts = 0;
}

export function newVmStats(): VmStats {
  return zeroed<VmStatName>([...VM_STAT_NAMES, ...VM_STAT_NAMES_PVM]);
}
export function newVcpuStats(): VcpuStats {
  return new VcpuStatsData();
}
export function newModelVmCounters(): ModelVmCounters {
  return zeroed<ModelVmCounterName>(MODEL_VM_COUNTER_NAMES);
}

/** The {name: value} view getStats() returns: the names the modelled kernel exports, in its order. */
export function exportStats<K extends string>(
  stats: Record<K, number>,
  names: readonly K[],
  extra: readonly K[],
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of names) out[n] = stats[n];
  for (const n of extra) out[n] = stats[n];
  return out;
}
