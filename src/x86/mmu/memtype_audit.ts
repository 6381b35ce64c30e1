/**
 * Inspection (not a kernel function): walk every direct TDP root of a VM — or, with the shadow MMU on an
 * EPT host, every direct shadow page — and compare each present leaf SPTE's memory-type bits (EPT memtype
 * 5:3 and IPAT 6) with what vmx_get_mt_mask would compute for it now. A leaf that differs is a stale memtype: the guest keeps using the old cacheability until
 * something zaps it — the failure mode behind the 2019 VFIO regression (mmu-zap.md §6.7).
 *
 * Kernel counterpart: none; it reads what arch/x86/kvm/mmu/spte.c#make_spte put into SPTEs.
 * Simplifications: the expected mask is computed for the leaf's first gfn with one vCPU's CR0 and MTRRs
 * (KVM treats memory types as per-VM and uses the faulting vCPU's state); mirror (TDX private) roots
 * are skipped, their memory type is the TDX module's.
 */
import { VmState } from '../../kvm/vm_state.ts';
import { Vcpu } from '../../kvm/vcpu.ts';
import { argInt, formatValue } from '../../kvm/args.ts';
import type { X86Mmu } from './mmu.ts';
import { TdpIter, tdpIterNext, tdpIterStart } from './tdp_iter.ts';
import { isLastSpte, isShadowPresentPte, spteToPfn, VMX_EPT_IPAT_BIT, VMX_EPT_MT_MASK } from './spte.ts';
import { ROLE_INVALID, ROLE_IS_MIRROR } from './mmu_internal.ts';
import { kvmMmuGetMtMask } from '../mtrr.ts';
import { shadowMmuOf, type ShadowMmu } from './shadow_mmu.ts';
import { SPTE_MT_BITS, type ShadowPage } from './shadow_rmap.ts';

const MT_BITS = VMX_EPT_MT_MASK | VMX_EPT_IPAT_BIT;

export interface StaleMemtypeSpte {
  /** the TDP root, or the shadow page's id */
  root: number;
  /** with the shadow MMU: the page holding the leaf, and whether a vCPU's root reaches it */
  sp?: { gfn: number; level: number; linked: boolean };
  gfn: number;
  level: number;
  pfn: number;
  /** memtype | ipat bits the SPTE has, and what KVM would compute now */
  have: number;
  want: number;
}

export interface MemtypeAudit {
  /** present leaf SPTEs in direct roots (valid and invalid) */
  leafs: number;
  /** leafs whose memtype or IPAT bit differs from the current computation */
  stale: number;
  /** of those, leafs whose EPT memtype (bits 5:3) itself differs */
  staleType: number;
  /** stale leafs in roots that are still valid (reachable by a vCPU that has not reloaded) */
  staleInValidRoots: number;
  entries: StaleMemtypeSpte[];
}

/** Decode an SPTE's memory-type bits. */
export function decodeMtMask(mask: number): { memtype: number; ipat: boolean } {
  argInt('decodeMtMask', 'mask', mask);
  return { memtype: (mask & VMX_EPT_MT_MASK) >>> 3, ipat: (mask & VMX_EPT_IPAT_BIT) !== 0 };
}

/** Compare every leaf's memory type with kvmMmuGetMtMask(vcpu, gfn) now. */
export function auditSpteMemtypes(vm: VmState, vcpuIn?: Vcpu): MemtypeAudit {
  if (!(vm instanceof VmState))
    throw new TypeError(`auditSpteMemtypes: vm must be a Vm (got ${formatValue(vm)})`);
  if (vcpuIn !== undefined && !(vcpuIn instanceof Vcpu && vcpuIn.vm === vm))
    throw new TypeError(`auditSpteMemtypes: vcpu must be a vCPU of vm (got ${formatValue(vcpuIn)})`);
  const vcpu = vcpuIn ?? vm.vcpus[0];
  const out: MemtypeAudit = { leafs: 0, stale: 0, staleType: 0, staleInValidRoots: 0, entries: [] };
  const shadow = shadowMmuOf(vm);
  if (shadow !== null) {
    if (shadow.tdpEnabled && vcpu !== undefined) auditShadowMemtypes(shadow, vcpu, out);
    return out;
  }
  const mmu = vm.mmu as Partial<X86Mmu>;
  if (mmu.tdp === undefined || vcpu === undefined) return out;
  const pool = mmu.tdp.pool;
  const iter = new TdpIter(pool); // its own iterator: the engine's is not re-entrant
  const shared = vm.arch.gfnDirectBits;
  for (const root of mmu.tdp.roots) {
    const role = pool.role[root]!;
    if (role & ROLE_IS_MIRROR) continue;
    for (tdpIterStart(iter, root, 1, 0); iter.valid; tdpIterNext(iter)) {
      const lo = iter.oldLo;
      if (!isShadowPresentPte(lo) || !isLastSpte(lo, iter.level)) continue;
      out.leafs++;
      const gfn = shared !== 0 ? iter.gfn % shared : iter.gfn;
      const have = lo & MT_BITS;
      const want = kvmMmuGetMtMask(vcpu, gfn, false);
      if (have === want) continue;
      out.stale++;
      if ((have & VMX_EPT_MT_MASK) !== (want & VMX_EPT_MT_MASK)) out.staleType++;
      if (!(role & ROLE_INVALID)) out.staleInValidRoots++;
      out.entries.push({ root, gfn, level: iter.level, pfn: spteToPfn(lo, iter.oldHi), have, want });
    }
  }
  return out;
}

/** Shadow pages a vCPU's root reaches (the rest sit in the hash until a fault re-links or a zap frees them). */
export function linkedShadowPages(mmu: ShadowMmu): Set<ShadowPage> {
  const seen = new Set<ShadowPage>();
  const stack = [...mmu.roots.values()];
  while (stack.length > 0) {
    const sp = stack.pop()!;
    if (seen.has(sp)) continue;
    seen.add(sp);
    for (const c of sp.child ?? []) if (c !== null) stack.push(c);
  }
  return seen;
}

/** The direct-page half of auditSpteMemtypes: 'valid roots' here means pages a vCPU's root reaches. */
function auditShadowMemtypes(mmu: ShadowMmu, vcpu: Vcpu, out: MemtypeAudit): void {
  const linked = linkedShadowPages(mmu);
  for (const sp of mmu.shadowPages()) {
    if (!sp.direct || sp.pfn === null) continue;
    for (let i = 0; i < 512; i++) {
      if (!sp.isLeaf(i)) continue;
      out.leafs++;
      const gfn = sp.gfns![i]!;
      const have = sp.bits![i]! & SPTE_MT_BITS;
      const want = kvmMmuGetMtMask(vcpu, gfn, false);
      if (have === want) continue;
      out.stale++;
      if ((have & VMX_EPT_MT_MASK) !== (want & VMX_EPT_MT_MASK)) out.staleType++;
      const isLinked = linked.has(sp);
      if (isLinked) out.staleInValidRoots++;
      out.entries.push({
        root: sp.id,
        sp: { gfn: sp.gfn, level: sp.level, linked: isLinked },
        gfn,
        level: sp.level,
        pfn: sp.pfn[i]!,
        have,
        want,
      });
    }
  }
}
