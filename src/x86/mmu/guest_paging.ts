/**
 * The guest's own page tables, for shadow-paging hosts: the content of the guest pages that hold page
 * tables (512 gPTEs each), a CR3 per vCPU (on the Vcpu), and the guest walk with Accessed/Dirty updates.
 *
 * Kernel counterpart: the guest memory FNAME(walk_addr_generic) (arch/x86/kvm/mmu/paging_tmpl.h) reads
 * and cmpxchg's (FNAME(update_accessed_dirty_bits)); 64-bit 4-level paging only (PTTYPE 64).
 * Simplifications: gPTE content lives in a per-VM map gfn → Float64Array(512), not in the bytes of the
 * backing host pages; a gPTE is a number below 2^53 (address bits 12..51 plus the low flag bits; NX,
 * bit 63, is not modelled, so every mapping is executable); no PSE-36, no 5-level, no PKU/SMEP/SMAP.
 */

/** gPTE bits (arch/x86/include/asm/pgtable_types.h) */
export const PT_PRESENT_MASK = 1;
export const PT_WRITABLE_MASK = 2;
export const PT_USER_MASK = 4;
export const PT_ACCESSED_MASK = 0x20;
export const PT_DIRTY_MASK = 0x40;
export const PT_PAGE_SIZE_MASK = 0x80;
const PAGE = 4096;

/** ACC_* (mmu_internal.h): the access a walk grants. */
export const ACC_EXEC_MASK = 1;
export const ACC_WRITE_MASK = 2;
export const ACC_USER_MASK = 4;
export const ACC_ALL = 7;

export function gpteToGfn(gpte: number): number {
  return Math.floor((gpte % 2 ** 52) / PAGE);
}

/** FNAME(gpte_access): W and U of a gPTE as ACC_* (X always: NX not modelled). */
export function gpteAccess(gpte: number): number {
  return (
    ACC_EXEC_MASK | (gpte & PT_WRITABLE_MASK ? ACC_WRITE_MASK : 0) | (gpte & PT_USER_MASK ? ACC_USER_MASK : 0)
  );
}

/**
 * The index of gva's entry in its level-`level` table (bits 12+9(level-1) .. +8 of a 48-bit gva), in
 * 32-bit halves: the fault path computes it several times per fault.
 */
export function gvaIndex(gva: number, level: number): number {
  const lo = gva >>> 0; // ToUint32: gva mod 2^32
  if (level === 1) return (lo >>> 12) & 511;
  if (level === 2) return (lo >>> 21) & 511;
  const hi = (gva - lo) / 4294967296;
  return level === 3 ? ((lo >>> 30) | (hi << 2)) & 511 : (hi >>> 7) & 511;
}

/** Guest memory's page-table pages. */
export class GuestPageTables {
  private readonly tables = new Map<number, Float64Array>();

  /** The 512 gPTEs of the page at gfn (zeros if nothing was written there). */
  table(gfn: number): Float64Array {
    let t = this.tables.get(gfn);
    if (t === undefined) this.tables.set(gfn, (t = new Float64Array(512)));
    return t;
  }
  read(gfn: number, index: number): number {
    return this.tables.get(gfn)?.[index] ?? 0;
  }
  /** The gPTEs of the page at gfn, or undefined if nothing was ever written there (all zero). */
  tableIfAny(gfn: number): Float64Array | undefined {
    return this.tables.get(gfn);
  }
  write(gfn: number, index: number, gpte: number): void {
    if (!Number.isSafeInteger(gpte) || gpte < 0) throw new RangeError(`gPTE ${gpte} is not a 53-bit value`);
    this.table(gfn)[index] = gpte;
  }
}

/** struct guest_walker (the fields the shadow MMU uses). */
export interface GuestWalker {
  /** level of the leaf gPTE (1 = 4K, 2 = 2M huge gPTE) */
  level: number;
  /** table_gfn[level-1]: the gfn of the guest table read at each level */
  tableGfn: number[];
  /** ptes[level-1]: the gPTE read at each level (after the A/D update) */
  ptes: number[];
  /** pt_access[level-1]: access accumulated above each level */
  ptAccess: number[];
  /** access granted by the whole walk */
  pteAccess: number;
  /** gfn the gva translates to */
  gfn: number;
  /** why the walk failed (guest #PF) or '' */
  fault: string;
}

/** The table read at each level by the walk in progress (the A/D update writes them back). */
const walkTables: Float64Array[] = [];

export function newGuestWalker(): GuestWalker {
  return {
    level: 1,
    tableGfn: [0, 0, 0, 0],
    ptes: [0, 0, 0, 0],
    ptAccess: [0, 0, 0, 0],
    pteAccess: 0,
    gfn: 0,
    fault: '',
  };
}

/**
 * Walk gva through the guest tables rooted at cr3 for a user-mode (CPL3) or supervisor access: every
 * level must be present and allow the access; then set A on each level and D on the leaf of a write
 * (the guest's hardware would; KVM's walker does it for the guest). Returns false on a guest #PF.
 * `visible` is KVM's check that each table's gfn is in a visible memslot (omitted: every gfn is).
 * `adWrite(tableGfn)` is asked before an A/D update is written: false skips it (a table in a read-only
 * slot: `pte_writable`), and it marks the table page dirty (`kvm_vcpu_mark_page_dirty`); omitted: write.
 * @kernel arch/x86/kvm/mmu/paging_tmpl.h#FNAME(walk_addr_generic)
 */
export function walkAddrGeneric(
  gpt: GuestPageTables,
  w: GuestWalker,
  cr3: number,
  gva: number,
  write: boolean,
  user: boolean,
  setAccessedDirty = true,
  visible?: (gfn: number) => boolean,
  adWrite?: (tableGfn: number) => boolean,
): boolean {
  w.fault = '';
  let tableGfn = Math.floor(cr3 / PAGE);
  let access = ACC_ALL;
  for (let level = 4; level >= 1; level--) {
    const index = gvaIndex(gva, level);
    w.tableGfn[level - 1] = tableGfn;
    w.ptAccess[level - 1] = access;
    // A table in no visible memslot (none, or INVALID during a DELETE/MOVE) cannot be read: the walk
    // fails and the guest gets a #PF (kvm_is_visible_memslot; gfn_to_hva_memslot_prot).
    if (visible !== undefined && !visible(tableGfn)) {
      w.fault = `level-${level} table gfn 0x${tableGfn.toString(16)} is in no visible memslot`;
      return false;
    }
    const table = gpt.tableIfAny(tableGfn);
    const gpte = table === undefined ? 0 : table[index]!;
    if (!(gpte & PT_PRESENT_MASK)) {
      w.fault = `gPTE not present at level ${level}`;
      return false;
    }
    access &= gpteAccess(gpte);
    w.ptes[level - 1] = gpte;
    walkTables[level - 1] = table!;
    const leaf = level === 1 || (level === 2 && (gpte & PT_PAGE_SIZE_MASK) !== 0);
    if (leaf) {
      w.level = level;
      w.pteAccess = access;
      if ((write && !(access & ACC_WRITE_MASK)) || (user && !(access & ACC_USER_MASK))) {
        w.fault = 'protection violation';
        return false;
      }
      const base = gpteToGfn(gpte);
      w.gfn = level === 1 ? base : base - (base % 512) + gvaIndex(gva, 1);
      // FNAME(protect_clean_gpte), for a read only: no write access through a clean gPTE. A write keeps
      // it (its D update makes the gPTE dirty, or is skipped for a table in a read-only slot).
      if (!write && !(gpte & PT_DIRTY_MASK)) w.pteAccess &= ~ACC_WRITE_MASK;
      break;
    }
    tableGfn = gpteToGfn(gpte);
  }
  if (!setAccessedDirty) return true;
  // FNAME(update_accessed_dirty_bits): A on every level walked, D on the leaf of a write.
  for (let level = 4; level >= w.level; level--) {
    const index = gvaIndex(gva, level);
    let g = w.ptes[level - 1]!;
    if (!(g & PT_ACCESSED_MASK)) g += PT_ACCESSED_MASK;
    if (level === w.level && write && !(g & PT_DIRTY_MASK)) g += PT_DIRTY_MASK;
    if (g !== w.ptes[level - 1]) {
      if (adWrite !== undefined && !adWrite(w.tableGfn[level - 1]!)) continue;
      walkTables[level - 1]![index] = g; // gpt.write without the checks: g is a present gPTE plus A/D
      w.ptes[level - 1] = g;
    }
  }
  return true;
}

/**
 * Builds identity-mapped 4-level guest page tables (gva == gpa), allocating table pages from a pool of
 * guest pages, like a VMM's (or a KVM selftest's) virt_pg_map. Writes go straight to guest memory
 * from the host side: KVM is not told (no write tracking, no emulation), as with a real VMM's writes.
 */
export class IdentityMapBuilder {
  private next: number;
  readonly cr3: number;
  private readonly mapped = new Set<number>();

  constructor(
    /** the tables' storage: the model's (tests) or a VM's through vm.readGuestPte/writeGuestPte */
    private readonly gpt: Pick<GuestPageTables, 'read' | 'write'>,
    /** gpa of the first page the builder may use for tables, and the end of its pool */
    poolGpa: number,
    private readonly poolEnd: number,
  ) {
    this.next = poolGpa;
    this.cr3 = this.alloc();
  }

  private alloc(): number {
    if (this.next + PAGE > this.poolEnd) throw new RangeError('guest page-table pool exhausted');
    const gpa = this.next;
    this.next += PAGE;
    return gpa;
  }

  /** Map the 4 KiB page holding gva to itself; flags default to present|RW|user with A/D clear. */
  mapPage(gva: number, flags = PT_PRESENT_MASK | PT_WRITABLE_MASK | PT_USER_MASK): boolean {
    const page = Math.floor(gva / PAGE) * PAGE;
    if (this.mapped.has(page)) return false;
    let table = this.cr3 / PAGE;
    for (let level = 4; level > 1; level--) {
      const idx = Math.floor(page / 2 ** (12 + 9 * (level - 1))) % 512;
      let e = this.gpt.read(table, idx);
      if (!(e & PT_PRESENT_MASK)) {
        e = this.alloc() + (PT_PRESENT_MASK | PT_WRITABLE_MASK | PT_USER_MASK);
        this.gpt.write(table, idx, e);
      }
      table = gpteToGfn(e);
    }
    this.gpt.write(table, Math.floor(page / PAGE) % 512, page + flags);
    this.mapped.add(page);
    return true;
  }

  /** Map a 2 MiB guest huge page (PS set) at a 2 MiB-aligned gva to itself. */
  mapHuge2m(gva: number, flags = PT_PRESENT_MASK | PT_WRITABLE_MASK | PT_USER_MASK): void {
    if (gva % (2 << 20)) throw new RangeError('2 MiB mapping must be 2 MiB aligned');
    let table = this.cr3 / PAGE;
    for (let level = 4; level > 2; level--) {
      const idx = Math.floor(gva / 2 ** (12 + 9 * (level - 1))) % 512;
      let e = this.gpt.read(table, idx);
      if (!(e & PT_PRESENT_MASK)) {
        e = this.alloc() + (PT_PRESENT_MASK | PT_WRITABLE_MASK | PT_USER_MASK);
        this.gpt.write(table, idx, e);
      }
      table = gpteToGfn(e);
    }
    this.gpt.write(table, Math.floor(gva / (2 << 20)) % 512, gva + flags + PT_PAGE_SIZE_MASK);
  }
}
