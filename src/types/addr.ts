/**
 * Address kinds as branded numbers: the only place they are made and converted.
 *
 * Kernel counterpart: gfn_t, gpa_t, hva_t (unsigned long), hpa_t, kvm_pfn_t and the conversion helpers
 * of include/linux/kvm_host.h (gpa_to_gfn, gfn_to_gpa, __gfn_to_hva_memslot, hva_to_gfn_memslot) and
 * arch/x86/kvm/mmu (gfn_round_for_level, KVM_PAGES_PER_HPAGE).
 *
 * Simplification: every kind is a JS number. MAXPHYADDR ≤ 52 keeps Gpa/Hpa below 2^52, and the model
 * limits Hva to 47 bits (4-level host paging, see docs/simplifications.md), so all are exact.
 * A brand mix-up (passing a Gpa where a Gfn is wanted) is a compile error; see types/addr.test-d.ts.
 */

declare const brand: unique symbol;
type Brand<K extends string> = number & { readonly [brand]: K };

export type Gfn = Brand<'Gfn'>;
export type Gpa = Brand<'Gpa'>;
export type Hva = Brand<'Hva'>;
export type Hpa = Brand<'Hpa'>;
export type Pfn = Brand<'Pfn'>;
export type Iova = Brand<'Iova'>;

/** x86 page-table levels (PG_LEVEL_4K = 1 … 5-level root = 5). */
export type PgLevel = 1 | 2 | 3 | 4 | 5;
export const PG_LEVEL_4K = 1;
export const PG_LEVEL_2M = 2;
export const PG_LEVEL_1G = 3;

const PAGE_SHIFT = 12;
const PAGE_SIZE = 4096;
/** Largest address the model represents exactly (2^53 - 1). */
const MAX_EXACT = Number.MAX_SAFE_INTEGER;
/** 47-bit user address space: the model's Hva ceiling (exclusive). */
export const HVA_LIMIT = 2 ** 47;

function check(kind: string, v: number, limit: number): void {
  if (!Number.isInteger(v) || v < 0 || v >= limit) {
    throw new RangeError(`${kind} out of range: ${v}`);
  }
}

export const gfn = (v: number): Gfn => (check('gfn', v, 2 ** 40), v as Gfn);
export const gpa = (v: number): Gpa => (check('gpa', v, 2 ** 52), v as Gpa);
export const hva = (v: number): Hva => (check('hva', v, HVA_LIMIT), v as Hva);
export const hpa = (v: number): Hpa => (check('hpa', v, 2 ** 52), v as Hpa);
export const pfn = (v: number): Pfn => (check('pfn', v, 2 ** 40), v as Pfn);
export const iova = (v: number): Iova => (check('iova', v, MAX_EXACT), v as Iova);

/** Hot-path constructors: no range check; the caller has already proven the value in range. */
export const asGfn = (v: number): Gfn => v as Gfn;
export const asPfn = (v: number): Pfn => v as Pfn;
export const asHva = (v: number): Hva => v as Hva;
export const asGpa = (v: number): Gpa => v as Gpa;

/** @kernel include/linux/kvm_host.h#gpa_to_gfn */
export const gpaToGfn = (a: Gpa): Gfn => Math.floor(a / PAGE_SIZE) as Gfn;
/** @kernel include/linux/kvm_host.h#gfn_to_gpa */
export const gfnToGpa = (g: Gfn): Gpa => (g * PAGE_SIZE) as Gpa;
/** @kernel include/linux/kvm_host.h#pfn_to_hpa */
export const pfnToHpa = (p: Pfn): Hpa => (p * PAGE_SIZE) as Hpa;
export const hpaToPfn = (a: Hpa): Pfn => Math.floor(a / PAGE_SIZE) as Pfn;
export const hvaToPfnIndex = (a: Hva): number => Math.floor(a / PAGE_SIZE);
export const iovaToPageIndex = (a: Iova): number => Math.floor(a / PAGE_SIZE);

/** @kernel include/linux/kvm_host.h#__gfn_to_hva_memslot */
export function gfnToHvaMemslot(slot: { baseGfn: Gfn; userspaceAddr: Hva }, g: Gfn): Hva {
  return (slot.userspaceAddr + (g - slot.baseGfn) * PAGE_SIZE) as Hva;
}

/** @kernel include/linux/kvm_host.h#hva_to_gfn_memslot */
export function hvaToGfnMemslot(slot: { baseGfn: Gfn; userspaceAddr: Hva }, a: Hva): Gfn {
  return (slot.baseGfn + Math.floor((a - slot.userspaceAddr) / PAGE_SIZE)) as Gfn;
}

/** Number of 4K pages a leaf at `level` maps. @kernel arch/x86/include/asm/kvm_host.h#KVM_PAGES_PER_HPAGE */
export function pagesPerHpage(level: PgLevel): number {
  return PAGES_PER_HPAGE[level]!;
}
const PAGES_PER_HPAGE = [0, 1, 512, 262144, 134217728, 68719476736] as const;

/** @kernel arch/x86/kvm/mmu/mmu_internal.h#gfn_round_for_level */
export function gfnRoundForLevel(g: Gfn, level: PgLevel): Gfn {
  const n = pagesPerHpage(level);
  return (g - (g % n)) as Gfn;
}

export const gfnAdd = (g: Gfn, n: number): Gfn => (g + n) as Gfn;
export const hvaAdd = (a: Hva, bytes: number): Hva => (a + bytes) as Hva;
export const pfnAdd = (p: Pfn, n: number): Pfn => (p + n) as Pfn;
export { PAGE_SHIFT as ADDR_PAGE_SHIFT };
