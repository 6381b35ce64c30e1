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

/** The gfn in address bits 12..51 of a gPTE (a number below 2^53, so bit 52 is the only one above). */
export function gpteToGfn(gpte: number): number {
  // gpte - 2^52 rather than gpte % 2^52: the same for gPTEs below 2^53, without a floating-point modulo.
  return Math.floor((gpte >= 2 ** 52 ? gpte - 2 ** 52 : gpte) / PAGE);
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

/** What an unused cache entry points at (never returned: no gfn is -1). */
const EMPTY_TABLE = new Float64Array(0);
/** Entries of GuestPageTables' lookup cache (a power of two). */
const TABLE_CACHE = 64;
/**
 * The keys of GuestPageTables' lookup cache: symbols, so a snapshot saves and restores the cache with the
 * tables it points into, and the state hash leaves it out (it holds nothing the tables do not).
 */
const CACHE_GFN: unique symbol = Symbol('zaplab.gpt.cacheGfn');
const CACHE_TABLE: unique symbol = Symbol('zaplab.gpt.cacheTable');

/** Guest memory's page-table pages. */
export class GuestPageTables {
  private readonly tables = new Map<number, Float64Array>();
  /**
   * A direct-mapped cache of tables looked up, by gfn mod TABLE_CACHE: a walk reads four tables, the
   * same ones fault after fault, and a Map lookup each cost more than the rest of the walk. A table is
   * never removed from `tables` (only a snapshot restore takes back tables made since, and it restores
   * this cache as it was then), so a cached table is the one `tables` has.
   */
  private readonly [CACHE_GFN] = new Float64Array(TABLE_CACHE).fill(-1);
  private readonly [CACHE_TABLE] = new Array<Float64Array>(TABLE_CACHE).fill(EMPTY_TABLE);

  /** The 512 gPTEs of the page at gfn (zeros if nothing was written there). */
  table(gfn: number): Float64Array {
    let t = this.tableIfAny(gfn);
    if (t === undefined) this.tables.set(gfn, (t = new Float64Array(512)));
    return t;
  }
  read(gfn: number, index: number): number {
    return this.tableIfAny(gfn)?.[index] ?? 0;
  }
  /** The gPTEs of the page at gfn, or undefined if nothing was ever written there (all zero). */
  tableIfAny(gfn: number): Float64Array | undefined {
    const k = gfn & (TABLE_CACHE - 1); // gfn is a non-negative integer: its low bits
    if (this[CACHE_GFN][k] === gfn) return this[CACHE_TABLE][k];
    const t = this.tables.get(gfn);
    if (t !== undefined) {
      this[CACHE_GFN][k] = gfn;
      this[CACHE_TABLE][k] = t;
    }
    return t;
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

/** What the walk asks of KVM: the shadow MMU's fault path, or a checker's read-only walk. */
export interface WalkEnv {
  /** kvm_vcpu_is_visible_gfn for the walking vCPU: may the table at gfn be read? */
  walkVisible(gfn: number): boolean;
  /**
   * Asked before an A/D update to the table at tableGfn is written: false skips it (a table in a
   * read-only slot: `pte_writable`); true lets it through after marking the table page dirty
   * (`kvm_vcpu_mark_page_dirty`).
   */
  walkAdWrite(tableGfn: number): boolean;
}

/** The table read at each level by the walk in progress (the A/D update writes them back). */
const walkTables: Float64Array[] = [];
/** gva's index at each level for the walk in progress. */
const walkIndex = new Int32Array(4);
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
 * `env.walkVisible` is KVM's check that each table's gfn is in a visible memslot, `env.walkAdWrite`
 * gates each A/D update (see WalkEnv); without env every gfn is visible and every update written.
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
  env?: WalkEnv,
): boolean {
  w.fault = '';
  const lo = gva >>> 0; // the index bits in 32-bit halves (gvaIndex, once for all levels)
  const hi = (gva - lo) / 4294967296;
  walkIndex[3] = (hi >>> 7) & 511;
  walkIndex[2] = ((lo >>> 30) | (hi << 2)) & 511;
  walkIndex[1] = (lo >>> 21) & 511;
  walkIndex[0] = (lo >>> 12) & 511;
  let tableGfn = Math.floor(cr3 / PAGE);
  let access = ACC_ALL;
  for (let level = 4; level >= 1; level--) {
    w.tableGfn[level - 1] = tableGfn;
    w.ptAccess[level - 1] = access;
    // A table in no visible memslot (none, or INVALID during a DELETE/MOVE) cannot be read: the walk
    // fails and the guest gets a #PF (kvm_is_visible_memslot; gfn_to_hva_memslot_prot).
    if (env !== undefined && !env.walkVisible(tableGfn)) return walkFault(w, invisibleTable(level, tableGfn));
    const table = gpt.tableIfAny(tableGfn);
    const gpte = table === undefined ? 0 : table[walkIndex[level - 1]!]!;
    if (!(gpte & PT_PRESENT_MASK)) return walkFault(w, notPresent(level));
    access &= gpteAccess(gpte);
    w.ptes[level - 1] = gpte;
    walkTables[level - 1] = table!;
    if (level === 1 || (level === 2 && (gpte & PT_PAGE_SIZE_MASK) !== 0)) {
      w.level = level;
      w.pteAccess = access;
      if ((write && !(access & ACC_WRITE_MASK)) || (user && !(access & ACC_USER_MASK)))
        return walkFault(w, 'protection violation');
      const base = gpteToGfn(gpte);
      w.gfn = level === 1 ? base : base - (base % 512) + walkIndex[0]!;
      // FNAME(protect_clean_gpte), for a read only: no write access through a clean gPTE. A write keeps
      // it (its D update makes the gPTE dirty, or is skipped for a table in a read-only slot).
      if (!write && !(gpte & PT_DIRTY_MASK)) w.pteAccess &= ~ACC_WRITE_MASK;
      break;
    }
    tableGfn = gpteToGfn(gpte);
  }
  if (setAccessedDirty) updateAccessedDirtyBits(w, write, env);
  return true;
}

/** The walk failed: the guest gets #PF, `why` says where. */
function walkFault(w: GuestWalker, why: string): false {
  w.fault = why;
  return false;
}

function invisibleTable(level: number, tableGfn: number): string {
  return `level-${level} table gfn 0x${tableGfn.toString(16)} is in no visible memslot`;
}

function notPresent(level: number): string {
  return `gPTE not present at level ${level}`;
}

/**
 * A on every level walked, D on the leaf of a write, written in place into the tables the walk read
 * (gpt.write without its checks: each value is a present gPTE plus A/D).
 * @kernel arch/x86/kvm/mmu/paging_tmpl.h#FNAME(update_accessed_dirty_bits)
 */
function updateAccessedDirtyBits(w: GuestWalker, write: boolean, env: WalkEnv | undefined): void {
  for (let level = 4; level >= w.level; level--) {
    let g = w.ptes[level - 1]!;
    if (!(g & PT_ACCESSED_MASK)) g += PT_ACCESSED_MASK;
    if (level === w.level && write && !(g & PT_DIRTY_MASK)) g += PT_DIRTY_MASK;
    if (g === w.ptes[level - 1]) continue;
    if (env !== undefined && !env.walkAdWrite(w.tableGfn[level - 1]!)) continue;
    walkTables[level - 1]![walkIndex[level - 1]!] = g;
    w.ptes[level - 1] = g;
  }
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
