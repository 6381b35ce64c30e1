/**
 * The shadow MMU fault path's guest walk: FNAME(walk_addr_generic) as FNAME(page_fault) calls it (a
 * user access, Accessed/Dirty updates on, table visibility and A/D writes asked of the faulting vCPU's
 * memslots), in one function. guest_paging.ts#walkAddrGeneric is the walk for every caller (KVM's own
 * gva→gpa walk, the checker's read-only walk) and takes what it asks of KVM through a WalkEnv; here the
 * memslot lookups are made directly, the gPTE bits decoded inline and A/D written back only on the levels
 * that lack them, so the walk a first touch makes per fault is one function V8 optimizes early (the cold
 * first faults of a process run it in the interpreter, where every call costs).
 *
 * Same lookups in the same order (kvm_vcpu_gfn_to_memslot for each table's visibility, top down, then
 * one per A/D write), same walker contents, same failure messages, same A/D writes and dirty marks as
 * walkAddrGeneric(gpt, w, cr3, gva, write, true, true, env) with the fault path's env (paging_tmpl.ts):
 * test/shadow/fault_walk.property.test.ts checks both walks on random guest tables and memslots, and the
 * whole fault path with this walk against the fault path with walkAddrGeneric.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/paging_tmpl.h (FNAME(walk_addr_generic),
 * FNAME(update_accessed_dirty_bits)), virt/kvm/kvm_main.c (kvm_vcpu_is_visible_gfn, kvm_vcpu_mark_page_dirty).
 * Simplifications: those of guest_paging.ts.
 */
import type { KvmMemslots } from '../../kvm/memslots.ts';
import type { Vcpu } from '../../kvm/vcpu.ts';
import { KVM_MEM_READONLY, KVM_MEMSLOT_INVALID, KVM_USER_MEM_SLOTS } from '../../uapi/kvm.ts';
import { markPageDirtyInSlot } from '../../kvm/dirty_log.ts';
import type { GuestPageTables, GuestWalker } from './guest_paging.ts';

// Module-local copies of the bits (an imported binding is read through its module cell in optimized code).
const PRESENT = 1;
const WRITABLE = 2;
const USER = 4;
const ACCESSED = 0x20;
const DIRTY = 0x40;
const PAGE_SIZE = 0x80;
const ACC_WRITE = 2;
const ACC_USER = 4;
const ACC_ALL = 7;
const NO_WRITE_ACCESS = ~ACC_WRITE;
const INVALID = KVM_MEMSLOT_INVALID;
const READONLY = KVM_MEM_READONLY;
const USER_SLOTS = KVM_USER_MEM_SLOTS;
/** 2^52, the bit above a gPTE's address bits (a gPTE is a number below 2^53). */
const BIT52 = 2 ** 52;

/** gva's index at each level - 1. */
const index = new Int32Array(4);

/**
 * Walk gva through the guest tables rooted at cr3 for the faulting vCPU (its address space's memslots
 * are `slots`), a CPL3 access; set A on each level and D on the leaf of a write. False on a guest #PF,
 * w.fault saying why. @kernel arch/x86/kvm/mmu/paging_tmpl.h#FNAME(walk_addr_generic)
 */
export function walkAddrFault(
  gpt: GuestPageTables,
  w: GuestWalker,
  cr3: number,
  gva: number,
  write: boolean,
  slots: KvmMemslots,
  vcpu: Vcpu,
): boolean {
  w.fault = '';
  const lo = gva >>> 0;
  const hi = (gva - lo) / 4294967296;
  index[3] = (hi >>> 7) & 511;
  index[2] = ((lo >>> 30) | (hi << 2)) & 511;
  index[1] = (lo >>> 21) & 511;
  index[0] = (lo >>> 12) & 511;
  let tableGfn = Math.floor(cr3 / 4096);
  let access = ACC_ALL;
  let level = 4;
  // Why the walk failed (0: it did not); one exit for all failures (see walkFailed).
  let why = 0;
  for (; ; level--) {
    w.tableGfn[level - 1] = tableGfn;
    w.ptAccess[level - 1] = access;
    // kvm_vcpu_is_visible_gfn: a table in no visible memslot cannot be read (gfn_to_hva_memslot_prot).
    const s = slots.vcpuGfnToMemslot(vcpu, tableGfn);
    if (s === null || (s.flags & INVALID) !== 0 || s.id >= USER_SLOTS) {
      why = INVISIBLE;
      break;
    }
    const table = gpt.tableIfAny(tableGfn);
    const gpte = table === undefined ? 0 : table[index[level - 1]!]!;
    if (!(gpte & PRESENT)) {
      why = NOT_PRESENT;
      break;
    }
    // FNAME(gpte_access): X always (NX not modelled), W and U from the gPTE.
    access &= 1 | (gpte & WRITABLE) | (gpte & USER);
    w.ptes[level - 1] = gpte;
    const gfn = Math.floor((gpte >= BIT52 ? gpte - BIT52 : gpte) / 4096); // gpteToGfn
    if (level === 1 || (level === 2 && (gpte & PAGE_SIZE) !== 0)) {
      w.level = level;
      w.pteAccess = access;
      if ((write && !(access & ACC_WRITE)) || !(access & ACC_USER)) {
        why = PROTECTION;
        break;
      }
      w.gfn = level === 1 ? gfn : gfn - (gfn % 512) + index[0]!;
      // FNAME(protect_clean_gpte), for a read only.
      if (!write && !(gpte & DIRTY)) w.pteAccess = access & NO_WRITE_ACCESS;
      break;
    }
    tableGfn = gfn;
  }
  if (why !== 0) return walkFailed(w, why, level, tableGfn);
  // FNAME(update_accessed_dirty_bits): A on every level walked, D on the leaf of a write; a table in a
  // read-only slot is skipped (pte_writable), any other is marked dirty (kvm_vcpu_mark_page_dirty).
  for (let l = 4; l >= level; l--) {
    const old = w.ptes[l - 1]!;
    let g = old;
    if (!(g & ACCESSED)) g += ACCESSED;
    if (l === level && write && !(g & DIRTY)) g += DIRTY;
    if (g === old) continue;
    const t = w.tableGfn[l - 1]!;
    const s = slots.vcpuGfnToMemslot(vcpu, t);
    if (s === null || s.flags & READONLY) continue;
    if (s.dirtyBitmap !== null) markPageDirtyInSlot(s, t);
    // The table the walk read gPTE l from: gpt's cache has it (a table is never dropped from gpt while a
    // walk runs), and looking it up again costs less than keeping a pointer per level (a store with the
    // GC's write barrier at every level of every walk; one level in four is written back).
    gpt.tableIfAny(t)![index[l - 1]!] = g;
    w.ptes[l - 1] = g;
  }
  return true;
}

const INVISIBLE = 1;
const NOT_PRESENT = 2;
const PROTECTION = 3;

/**
 * A failed walk: w.fault says why; false. The messages are made here, at the walk's one failure exit:
 * with the two that print the level written in the loop, TurboFan made the level's string once per level
 * walked on every walk (NumberToString, a pure node shared by both messages, scheduled where their
 * branches meet).
 */
function walkFailed(w: GuestWalker, why: number, level: number, tableGfn: number): boolean {
  if (why === INVISIBLE)
    w.fault = `level-${level} table gfn 0x${tableGfn.toString(16)} is in no visible memslot`;
  else if (why === NOT_PRESENT) w.fault = `gPTE not present at level ${level}`;
  else w.fault = 'protection violation';
  return false;
}
