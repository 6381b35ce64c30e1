/**
 * struct kvm_mmu_page as the TDP MMU uses it: the page role word and accessors over the page-table pool's
 * parallel metadata arrays (sp_pool.ts), plus a plain-object view of one page for tests and reports.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu_internal.h (struct kvm_mmu_page, kvm_mmu_page_as_id,
 * is_mirror_sp, sptep_to_sp), arch/x86/include/asm/kvm_host.h (union kvm_mmu_page_role,
 * kvm_mmu_role_as_id).
 *
 * Simplifies: only TDP MMU pages live in the pool (no unsync, no parent_ptes rmap, no shadowed
 * translation). nx_huge_page_disallowed / possible_nx_huge_page tracking is not modelled yet.
 */
import { ACC_ALL } from './spte.ts';
import { SP_EXTERNAL_SPT, SP_SCHEDULED_ROOT_TO_ZAP, type SpPool } from './sp_pool.ts';

// union kvm_mmu_page_role, LSB first.
export const ROLE_LEVEL_MASK = 0xf;
export const ROLE_HAS_4_BYTE_GPTE = 1 << 4;
export const ROLE_QUADRANT_SHIFT = 5;
export const ROLE_DIRECT = 1 << 7;
export const ROLE_ACCESS_SHIFT = 8;
export const ROLE_INVALID = 1 << 11;
export const ROLE_EFER_NX = 1 << 12;
export const ROLE_CR0_WP = 1 << 13;
export const ROLE_SMEP_ANDNOT_WP = 1 << 14;
export const ROLE_SMAP_ANDNOT_WP = 1 << 15;
export const ROLE_AD_DISABLED = 1 << 16;
export const ROLE_GUEST_MODE = 1 << 17;
export const ROLE_PASSTHROUGH = 1 << 18;
export const ROLE_IS_MIRROR = 1 << 19;
export const ROLE_SMM_SHIFT = 24;

/** union kvm_mmu_page_role, decoded. */
export interface KvmMmuPageRole {
  level: number;
  hasFourByteGpte: boolean;
  quadrant: number;
  direct: boolean;
  access: number;
  invalid: boolean;
  eferNx: boolean;
  cr0Wp: boolean;
  smepAndnotWp: boolean;
  smapAndnotWp: boolean;
  adDisabled: boolean;
  guestMode: boolean;
  passthrough: boolean;
  isMirror: boolean;
  smm: number;
}

const bit = (w: number, m: number): boolean => (w & m) !== 0;

export function decodeRole(w: number): KvmMmuPageRole {
  return {
    level: w & ROLE_LEVEL_MASK,
    hasFourByteGpte: bit(w, ROLE_HAS_4_BYTE_GPTE),
    quadrant: (w >>> ROLE_QUADRANT_SHIFT) & 3,
    direct: bit(w, ROLE_DIRECT),
    access: (w >>> ROLE_ACCESS_SHIFT) & 7,
    invalid: bit(w, ROLE_INVALID),
    eferNx: bit(w, ROLE_EFER_NX),
    cr0Wp: bit(w, ROLE_CR0_WP),
    smepAndnotWp: bit(w, ROLE_SMEP_ANDNOT_WP),
    smapAndnotWp: bit(w, ROLE_SMAP_ANDNOT_WP),
    adDisabled: bit(w, ROLE_AD_DISABLED),
    guestMode: bit(w, ROLE_GUEST_MODE),
    passthrough: bit(w, ROLE_PASSTHROUGH),
    isMirror: bit(w, ROLE_IS_MIRROR),
    smm: (w >>> ROLE_SMM_SHIFT) & 0xff,
  };
}

export function encodeRole(r: KvmMmuPageRole): number {
  let w =
    (r.level & ROLE_LEVEL_MASK) |
    ((r.quadrant & 3) << ROLE_QUADRANT_SHIFT) |
    ((r.access & 7) << ROLE_ACCESS_SHIFT);
  if (r.hasFourByteGpte) w |= ROLE_HAS_4_BYTE_GPTE;
  if (r.direct) w |= ROLE_DIRECT;
  if (r.invalid) w |= ROLE_INVALID;
  if (r.eferNx) w |= ROLE_EFER_NX;
  if (r.cr0Wp) w |= ROLE_CR0_WP;
  if (r.smepAndnotWp) w |= ROLE_SMEP_ANDNOT_WP;
  if (r.smapAndnotWp) w |= ROLE_SMAP_ANDNOT_WP;
  if (r.adDisabled) w |= ROLE_AD_DISABLED;
  if (r.guestMode) w |= ROLE_GUEST_MODE;
  if (r.passthrough) w |= ROLE_PASSTHROUGH;
  if (r.isMirror) w |= ROLE_IS_MIRROR;
  return (w | ((r.smm & 0xff) << ROLE_SMM_SHIFT)) >>> 0;
}

/**
 * The root role of a TDP MMU: direct, ACC_ALL, cr0_wp and efer_nx set, smm from the address space.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_calc_tdp_mmu_root_page_role
 */
export function tdpRootRole(opts: {
  asId: number;
  level?: 4 | 5;
  isMirror?: boolean;
  adDisabled?: boolean;
}): number {
  return encodeRole({
    level: opts.level ?? 4,
    hasFourByteGpte: false,
    quadrant: 0,
    direct: true,
    access: ACC_ALL,
    invalid: false,
    eferNx: true,
    cr0Wp: true,
    smepAndnotWp: false,
    smapAndnotWp: false,
    adDisabled: opts.adDisabled ?? false,
    guestMode: false,
    passthrough: false,
    isMirror: opts.isMirror ?? false,
    smm: opts.asId,
  });
}

export const roleLevel = (w: number): number => w & ROLE_LEVEL_MASK;
/** @kernel arch/x86/include/asm/kvm_host.h#kvm_mmu_role_as_id */
export const kvmMmuRoleAsId = (w: number): number => ((w >>> ROLE_SMM_SHIFT) & 0xff ? 1 : 0);

/** @kernel arch/x86/kvm/mmu/mmu_internal.h#kvm_mmu_page_as_id */
export const kvmMmuPageAsId = (pool: SpPool, sp: number): number => kvmMmuRoleAsId(pool.role[sp]!);
/** @kernel arch/x86/kvm/mmu/mmu_internal.h#is_mirror_sp */
export const isMirrorSp = (pool: SpPool, sp: number): boolean => (pool.role[sp]! & ROLE_IS_MIRROR) !== 0;
export const spLevel = (pool: SpPool, sp: number): number => pool.role[sp]! & ROLE_LEVEL_MASK;
export const spIsInvalid = (pool: SpPool, sp: number): boolean => (pool.role[sp]! & ROLE_INVALID) !== 0;
export const spGfn = (pool: SpPool, sp: number): number => pool.gfn512[sp]! * 512;

/** A struct kvm_mmu_page, as a plain object (tests, reports, trace). */
export interface KvmMmuPageInfo {
  index: number;
  gfn: number;
  role: KvmMmuPageRole;
  roleWord: number;
  /** tdp_mmu_root_count (roots) */
  rootCount: number;
  tdpMmuScheduledRootToZap: boolean;
  /** sp->ptep as (parent table, entry index); null for a root. */
  ptep: { table: number; index: number } | null;
  externalSpt: boolean;
}

export function kvmMmuPageInfo(pool: SpPool, sp: number): KvmMmuPageInfo {
  const parent = pool.parent[sp]!;
  return {
    index: sp,
    gfn: spGfn(pool, sp),
    role: decodeRole(pool.role[sp]!),
    roleWord: pool.role[sp]!,
    rootCount: pool.rootCount[sp]!,
    tdpMmuScheduledRootToZap: (pool.flags[sp]! & SP_SCHEDULED_ROOT_TO_ZAP) !== 0,
    ptep: parent < 0 ? null : { table: parent, index: pool.parentIndex[sp]! },
    externalSpt: (pool.flags[sp]! & SP_EXTERNAL_SPT) !== 0,
  };
}
