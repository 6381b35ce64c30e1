/**
 * Trace events of the KVM layer and the MMU's fault/zap entry points, named after the kernel's
 * tracepoints (include/trace/events/kvm.h, arch/x86/kvm/trace.h, arch/x86/kvm/mmu/mmutrace.h). The TDP
 * engine's own events (kvm_tdp_mmu_spte_changed, kvm_mmu_prepare_zap_page, …) come through the same sink.
 * With no sink installed every tracepoint costs one branch.
 */
import type { MmuTraceEvent } from '../x86/mmu/mmu_trace.ts';

export type KvmTraceEvent =
  | { name: 'kvm_page_fault'; vcpuId: number; gpa: number; errorCode: number }
  | { name: 'kvm_mmu_spte_requested'; gfn: number; pfn: number; level: number }
  | { name: 'kvm_mmu_zap_all_fast'; mmuValidGen: number; mmuUsedPages: number }
  | { name: 'mark_mmio_spte'; gfn: number; gen: number }
  | { name: 'kvm_tlb_flush'; vcpuId: number; reason: 'remote' | 'root_load' }
  | {
      name: 'kvm_set_user_memory_region';
      slot: number;
      flags: number;
      gpa: number;
      size: number;
      change: string;
    }
  | { name: 'kvm_mmu_zap_memslot'; slot: number; asId: number; baseGfn: number; npages: number }
  | { name: 'kvm_fault_retry'; vcpuId: number; gpa: number; reason: string };

export type AnyTraceEvent = KvmTraceEvent | MmuTraceEvent;
export type KvmTraceSink = (ev: AnyTraceEvent) => void;
