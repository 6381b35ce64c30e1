/**
 * The shadow MMU (kvm.tdp_mmu=N): shadow pages keyed by (gfn, role) in a 4096-bucket hash,
 * active_mmu_pages in FIFO order, per-slot rmaps, write tracking of shadowed guest tables, and the zap
 * machinery — prepare/commit, obsolete pages by mmu_valid_gen (zap-all-fast), the precise memslot zap
 * of 6.12+ and, behind a bug switch, the 2019 precise zap's sp->gfn filter. Without TDP it shadows the
 * guest's page tables (fault path and access in paging_tmpl.ts); on an EPT host it builds EPT out of
 * direct pages (shadow_direct.ts), which is how every KVM before 5.10 ran EPT. The page hash is in
 * shadow_hash.ts, the rmaps and their walks in shadow_rmap.ts, the memslot-level operations (the precise
 * memslot zap, range unmaps, dirty logging) in shadow_memslot.ts, the vCPUs' roots in shadow_roots.ts.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c (kvm_mmu_find_shadow_page, kvm_mmu_alloc_shadow_page,
 * account_shadowed, __kvm_mmu_prepare_zap_page, kvm_mmu_commit_zap_page, kvm_zap_obsolete_pages,
 * kvm_mmu_zap_all_fast).
 * Address spaces as the kernel keeps them: a root's role carries the vCPU's SMM state (role.smm), pages
 * below it inherit it, faults look gfns up in the vCPU's address space and rmap/accounting lookups in the
 * page's (kvm_memslots_for_spte_role); an SMM transition drops the root at the next entry.
 * Simplifications: no unsync pages (guest writes to shadowed tables always trap), no nested TDP, no
 * mmu page budget/recycling; see also shadow_rmap.ts, shadow_direct.ts and guest_paging.ts.
 */
import type { KvmGfnRange, KvmMemorySlot } from '../../kvm/kvm_host.ts';
import type { VmState } from '../../kvm/vm_state.ts';
import type { Vcpu } from '../../kvm/vcpu.ts';
import { KVM_REQ_MMU_FREE_OBSOLETE_ROOTS } from '../../kvm/vcpu.ts';
import { KVM_MEMSLOT_INVALID, KVM_USER_MEM_SLOTS, type KvmMrChange } from '../../uapi/kvm.ts';
import type { KvmMmuOps } from '../mmu_ops.ts';
import type { AccessKind, AccessResult } from '../../kvm/api_types.ts';
import { MMIO_SPTE_GEN_MASK } from './spte.ts';
import {
  ShadowPage,
  kvmMmuPageAsId,
  rmapRemove,
  kvmMmuSlotGfnWriteProtect,
  ROLE_INVALID,
} from './shadow_rmap.ts';
import {
  kvmWriteTrackAddGfn,
  kvmWriteTrackRemoveGfn,
  kvmMmuGfnDisallowLpage,
  kvmMmuGfnAllowLpage,
} from './page_track.ts';
import { GuestPageTables } from './guest_paging.ts';
import { shadowVcpuAccess } from './paging_tmpl.ts';
import { directVcpuAccess } from './shadow_direct.ts';
import { kvmMmuNewPgd, ROOT_CACHE_ROOT, ROOT_CACHE_VCPU } from './shadow_roots.ts';
import { MmuPageHash } from './shadow_hash.ts';
import { GfnBitmap } from './gfn_bitmap.ts';
import {
  kvmArchMmuEnableLogDirtyPtMasked,
  kvmMmuSlotApplyFlags,
  kvmMmuZapMemslot,
  kvmRmapZapCollapsibleSptes,
  kvmRmapZapGfnRange,
  kvmUnmapGfnRange,
} from './shadow_memslot.ts';
import { hasBug } from '../../kvm/host_profile.ts';

/** kvm_zap_obsolete_pages' lock-break batch. */
const BATCH_ZAP_PAGES = 10;

/** kvm_is_visible_memslot: a user memslot that is not INVALID. */
function isVisible(slot: KvmMemorySlot | null): boolean {
  return slot !== null && (slot.flags & KVM_MEMSLOT_INVALID) === 0 && slot.id < KVM_USER_MEM_SLOTS;
}

export class ShadowMmu implements KvmMmuOps {
  /** kvm->arch.mmu_valid_gen */
  mmuValidGen = 0;
  /**
   * Shadow pages made so far: the next one's id. Per MMU and in a field, so a snapshot restore puts it
   * back and a restored run names its pages as the first run did (a module counter kept counting).
   */
  spIds = 0;
  /** kvm->arch.mmu_page_hash */
  readonly hash: MmuPageHash;
  /** kvm->arch.active_mmu_pages: insertion order = oldest first (the kernel's list tail first) */
  readonly active = new Set<ShadowPage>();
  /** kvm->arch.indirect_shadow_pages */
  indirectShadowPages = 0;
  /** Guest memory's page tables (guest_paging.ts). */
  readonly gpt = new GuestPageTables();
  /** Each vCPU's root (mmu->root.hpa). */
  readonly roots = new Map<Vcpu, ShadowPage>();
  /**
   * vCPUs running on the dummy root (kvm_mmu_get_dummy_root): their CR3 is in no visible memslot of the
   * address space they were in (the value) when it was loaded.
   */
  readonly dummyRoots = new Map<Vcpu, number>();
  /** The one-entry cache of `roots` (shadow_roots.ts#rootOf): a vCPU `roots` maps to the root below. */
  [ROOT_CACHE_VCPU]: Vcpu | null = null;
  [ROOT_CACHE_ROOT]: ShadowPage | null = null;
  /**
   * Bug switch 'shadow-2019-precise-zap': the v5.1 precise zap (4e103134b862), which zapped shadow pages
   * of any kind whose base gfn equals a gfn of the slot (mmu-zap.md §4.3), instead of 6.12+'s rule.
   */
  bug2019PreciseZap = false;
  /** Bug switch 'shadow-leafs-only-zap': 6.12-rc1's leaf-only precise zap (aa8d1f48d353). */
  bugLeafsOnlyZap = false;
  /** tdp_enabled: EPT out of direct pages (shadow_direct.ts) instead of shadowing guest page tables. */
  readonly tdpEnabled: boolean;
  /** gfns a fault has ever mapped (model counter 'refaults': faults on gfns mapped before) */
  private readonly everMapped = new GfnBitmap();

  constructor(readonly vm: VmState) {
    this.tdpEnabled = vm.cfg.tdp;
    this.hash = new MmuPageHash(vm.stats, this);
    this.bug2019PreciseZap = hasBug(vm.cfg, 'shadow-2019-precise-zap');
    this.bugLeafsOnlyZap = hasBug(vm.cfg, 'shadow-leafs-only-zap');
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#is_obsolete_sp */
  isObsoleteSp(sp: ShadowPage): boolean {
    return sp.invalid || sp.mmuValidGen !== this.mmuValidGen;
  }

  /**
   * The memslot of gfn in address space asId, through the set-wide last-used cache: a shadow page's
   * (kvm_memslots_for_spte_role, role.smm, then __gfn_to_memslot).
   * @kernel include/linux/kvm_host.h#__gfn_to_memslot
   */
  slotForGfn(gfn: number, asId: number): KvmMemorySlot | null {
    return this.vm.activeMemslots(asId).searchMemslots(gfn);
  }

  /**
   * The memslot of gfn for a vCPU: its address space (kvm_arch_vcpu_memslots_id, 1 in SMM), its own
   * last-used slot; the set-wide cache is left alone.
   * @kernel virt/kvm/kvm_main.c#kvm_vcpu_gfn_to_memslot
   */
  vcpuGfnToMemslot(vcpu: Vcpu, gfn: number): KvmMemorySlot | null {
    return this.vm.activeMemslots(vcpu.asId()).vcpuGfnToMemslot(vcpu, gfn);
  }

  /**
   * A user memslot that is not INVALID holds gfn in the vCPU's address space: the guest's page tables
   * can be read there.
   * @kernel virt/kvm/kvm_main.c#kvm_vcpu_is_visible_gfn (kvm_is_visible_memslot)
   */
  kvmVcpuIsVisibleGfn(vcpu: Vcpu, gfn: number): boolean {
    return isVisible(this.vcpuGfnToMemslot(vcpu, gfn));
  }

  /** slotForGfn for a tool (the checker): touches no last-used cache, the kernel's or the vCPU's. */
  peekSlotForGfn(gfn: number, asId: number): KvmMemorySlot | null {
    return this.vm.activeMemslots(asId).peekMemslot(gfn);
  }

  /** kvmVcpuIsVisibleGfn for a tool (the checker) looking at address space asId: touches no cache. */
  peekIsVisibleGfn(gfn: number, asId: number): boolean {
    return isVisible(this.peekSlotForGfn(gfn, asId));
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_get_shadow_page (find, else kvm_mmu_alloc_shadow_page) */
  getShadowPage(gfn: number, role: number): ShadowPage {
    const found = this.hash.find(gfn, role);
    if (found !== null) return found;
    const sp = new ShadowPage(++this.spIds, gfn, role, this.mmuValidGen);
    this.hash.add(sp);
    // list_add at the head of active_mmu_pages: zap-all walks from the tail, i.e. oldest first.
    this.active.add(sp);
    if (sp.hasGptes) this.accountShadowed(sp);
    return sp;
  }

  /**
   * A shadowed guest table must not change behind KVM's back: upper-level tables are write-tracked; a
   * 4K table forbids huge mappings over it and loses any writable SPTE now.
   * @kernel arch/x86/kvm/mmu/mmu.c#account_shadowed
   */
  private accountShadowed(sp: ShadowPage): void {
    this.indirectShadowPages++;
    const slot = this.slotForGfn(sp.gfn, kvmMmuPageAsId(sp)); // kvm_memslots_for_spte_role
    if (slot === null) return;
    if (sp.level > 1) return kvmWriteTrackAddGfn(this.vm, slot, sp.gfn);
    kvmMmuGfnDisallowLpage(slot, sp.gfn);
    if (kvmMmuSlotGfnWriteProtect(slot, sp.gfn)) this.vm.flushRemoteTlbs(); // kvm_flush_remote_tlbs_gfn
  }

  /** Undo account_shadowed; looks the slot up again, so it must run while the slot exists. @kernel arch/x86/kvm/mmu/mmu.c#unaccount_shadowed */
  private unaccountShadowed(sp: ShadowPage): void {
    this.indirectShadowPages--;
    const slot = this.slotForGfn(sp.gfn, kvmMmuPageAsId(sp)); // kvm_memslots_for_spte_role
    if (
      this.vm.warnOnce(
        slot === null,
        'INV-SHADOW-UNACCOUNT',
        `unaccount_shadowed: no slot for gfn 0x${sp.gfn.toString(16)}`,
      )
    )
      return;
    if (sp.level > 1) kvmWriteTrackRemoveGfn(this.vm, slot!, sp.gfn);
    else kvmMmuGfnAllowLpage(slot!, sp.gfn);
  }

  /** Zap a leaf SPTE: clear it, remove it from its rmap, pages_4k/pages_2m--. @kernel arch/x86/kvm/mmu/mmu.c#drop_spte */
  dropSpte(sp: ShadowPage, i: number): void {
    const gfn = sp.gfns![i]!;
    // rmap_remove runs without a vCPU: the page's role says which address space's slot holds the rmap.
    const slot = this.slotForGfn(gfn, kvmMmuPageAsId(sp));
    if (slot !== null) rmapRemove(slot, sp, i, gfn);
    sp.pfn![i] = -1;
    sp.bits![i] = 0;
    if (sp.level === 1) {
      this.vm.stats.pages_4k--;
      this.vm.countModel('sptes_zapped_4k');
    } else {
      this.vm.stats.pages_2m--;
      this.vm.countModel('sptes_zapped_2m');
    }
  }

  /** A fault mapped gfn: count it as a refault if gfn was mapped before. */
  noteFixed(gfn: number): void {
    if (this.everMapped.testAndSet(gfn)) this.vm.countModel('refaults');
  }

  /**
   * Clear entry i of sp: a leaf is dropped; a link to a child page is cut (the child keeps its SPTEs and
   * stays in the hash, where the next fault below this entry finds and re-links it).
   * @kernel arch/x86/kvm/mmu/mmu.c#mmu_page_zap_pte ; true if a present SPTE was zapped
   */
  mmuPageZapPte(sp: ShadowPage, i: number): boolean {
    const child = sp.child?.[i];
    if (child !== null && child !== undefined) {
      sp.child![i] = null;
      const k = child.parents.findIndex((p) => p.sp === sp && p.i === i);
      if (k >= 0) child.parents.splice(k, 1); // drop_parent_pte
      this.vm.countModel('sptes_zapped_nonleaf');
      return true;
    }
    if (!sp.isLeaf(i)) return false;
    this.dropSpte(sp, i);
    return true;
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#__kvm_mmu_prepare_zap_page */
  prepareZapPage(sp: ShadowPage, invalidList: ShadowPage[]): void {
    this.vm.stats.mmu_shadow_zapped++;
    for (let i = 0; i < 512; i++) this.mmuPageZapPte(sp, i); // kvm_mmu_page_unlink_children
    for (const p of sp.parents.splice(0)) p.sp.child![p.i] = null; // kvm_mmu_unlink_parents
    if (!sp.invalid && sp.hasGptes) this.unaccountShadowed(sp);
    let zappedRoot = false;
    if (sp.rootCount === 0) {
      this.active.delete(sp);
      sp.onList = false;
      invalidList.push(sp);
    } else {
      // An active root leaves active_mmu_pages now and is freed when its last vCPU drops it.
      this.active.delete(sp);
      sp.onList = false;
      zappedRoot = !this.isObsoleteSp(sp);
    }
    sp.role |= ROLE_INVALID;
    if (zappedRoot) this.vm.kvmMakeAllCpusRequest(KVM_REQ_MMU_FREE_OBSOLETE_ROOTS);
  }

  /** Flush every vCPU's TLB (no walk may still use the pages), then free them. @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_commit_zap_page */
  commitZapPage(invalidList: ShadowPage[]): void {
    if (invalidList.length === 0) return;
    this.vm.flushRemoteTlbs();
    for (const sp of invalidList) this.hash.remove(sp); // kvm_mmu_free_shadow_page
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_remote_flush_or_zap */
  remoteFlushOrZap(invalidList: ShadowPage[], flush: boolean): void {
    if (invalidList.length > 0) this.commitZapPage(invalidList);
    else if (flush) this.vm.flushRemoteTlbs();
  }

  /**
   * Zap pages from the oldest while they are obsolete (FIFO order makes that all of them). After every
   * BATCH_ZAP_PAGES zapped pages the walk may drop mmu_lock (to a waiting party) and restart; the prepared
   * pages stay on the local invalid list across the drop, unflushed: every vCPU must load a new root, which
   * flushes, before it runs again. One commit (one remote flush) at the end.
   * @kernel arch/x86/kvm/mmu/mmu.c#kvm_zap_obsolete_pages
   */
  private zapObsoletePages(): void {
    const list: ShadowPage[] = [];
    let batch = 0;
    restart: for (;;) {
      for (const sp of [...this.active]) {
        if (!this.isObsoleteSp(sp)) break restart;
        if (batch >= BATCH_ZAP_PAGES && this.vm.onMmuLockDrop !== undefined) {
          this.vm.mmuLockYield(false, false); // cond_resched_rwlock_write
          batch = 0;
          continue restart;
        }
        // nr_zapped: the page itself unless it is an active root (no unsync or nested children here).
        if (sp.rootCount === 0) batch++;
        this.prepareZapPage(sp, list);
      }
      break;
    }
    this.commitZapPage(list);
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_zap_all_fast */
  kvmMmuZapAllFast(): void {
    this.mmuValidGen ^= 1;
    this.vm.kvmMakeAllCpusRequest(KVM_REQ_MMU_FREE_OBSOLETE_ROOTS);
    this.zapObsoletePages();
  }

  kvmMmuZapMemslot(slot: KvmMemorySlot): void {
    kvmMmuZapMemslot(this, slot);
  }

  kvmMmuZapMemslotLeafs(slot: KvmMemorySlot): void {
    kvmMmuZapMemslot(this, slot);
  }

  kvmUnmapGfnRange(range: KvmGfnRange): boolean {
    return kvmUnmapGfnRange(this, range);
  }

  kvmRmapZapGfnRange(start: number, end: number): boolean {
    return kvmRmapZapGfnRange(this, start, end);
  }

  kvmMmuSlotApplyFlags(old: KvmMemorySlot | null, nu: KvmMemorySlot | null, change: KvmMrChange): void {
    kvmMmuSlotApplyFlags(this, old, nu, change);
  }

  kvmRmapZapCollapsibleSptes(slot: KvmMemorySlot): void {
    kvmRmapZapCollapsibleSptes(this, slot);
  }

  kvmArchMmuEnableLogDirtyPtMasked(slot: KvmMemorySlot, gfnOffset: number, mask: number): void {
    kvmArchMmuEnableLogDirtyPtMasked(this, slot, gfnOffset, mask);
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_invalidate_mmio_sptes */
  kvmMmuInvalidateMmioSptes(gen: number): void {
    let g = gen % (MMIO_SPTE_GEN_MASK + 1);
    g -= g % this.vm.nrAs; // the address-space modifier: a wrap seen from either address space counts
    if (g === 0) this.kvmMmuZapAllFast();
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_zap_all */
  kvmArchFlushShadowAll(): void {
    const list: ShadowPage[] = [];
    for (const sp of [...this.active]) this.prepareZapPage(sp, list);
    this.commitZapPage(list);
  }

  /** @kernel arch/x86/kvm/x86.c#kvm_arch_free_memslot (the rmaps) */
  kvmArchFreeMemslot(slot: KvmMemorySlot): void {
    slot.arch.rmap = null;
  }

  /** CR3 changed (vcpu.setCr3): see shadow_roots.ts. */
  kvmMmuNewPgd(vcpu: Vcpu): void {
    kvmMmuNewPgd(this, vcpu);
  }

  /**
   * With shadow paging the guest runs on its own page tables and `addr` is a guest *virtual* address; on
   * an EPT host it is a guest physical address, as with the TDP MMU.
   */
  vcpuAccess(
    vcpu: Vcpu,
    addr: number,
    kind: AccessKind,
    _opts: { private?: boolean } | undefined,
  ): AccessResult {
    return this.tdpEnabled
      ? directVcpuAccess(this, vcpu, addr, kind)
      : shadowVcpuAccess(this, vcpu, addr, kind);
  }

  /** Every valid shadow page (inspection and checks). */
  shadowPages(): ShadowPage[] {
    return [...this.active];
  }
}

/** The shadow MMU of a VM on a shadow-paging host, or null on a TDP host. */
export function shadowMmuOf(vm: { mmu: KvmMmuOps }): ShadowMmu | null {
  return vm.mmu instanceof ShadowMmu ? vm.mmu : null;
}
