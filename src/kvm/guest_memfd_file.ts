/**
 * guest_memfd as a file: fallocate (allocate pages ahead, or punch a hole) and the invalidation a hole
 * punch runs on the VM that owns the file. Punching first zaps every mapping of the range in the bound
 * memslots — private mappings by default, through kvm_mmu_unmap_gfn_range, inside the MMU-invalidation
 * window so a racing fault retries — then truncates the pages back to the host (SNP pages leave the
 * guest's RMP on the way), so the next private fault gets a fresh, zeroed page.
 *
 * Kernel counterpart: virt/kvm/guest_memfd.c (kvm_gmem_fallocate, kvm_gmem_punch_hole,
 * kvm_gmem_allocate, kvm_gmem_invalidate_begin/end, kvm_gmem_get_invalidate_filter,
 * kvm_gmem_free_folio), virt/kvm/kvm_main.c#kvm_mmu_unmap_gfn_range, fs/open.c#vfs_fallocate (its
 * generic checks). See memslot-abi.md §5.2.
 * Simplifications: one file per inode (no gmem_list of several files); host mmap of guest_memfd is not
 * modelled, so punching an INIT_SHARED file has no host mappings to zap; a plain memfd accepts
 * fallocate without modelling shmem pages.
 */
import { GUEST_MEMFD_FLAG_INIT_SHARED, PAGE_SIZE } from '../uapi/kvm.ts';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE } from '../uapi/falloc.ts';
import type { KvmMemorySlot } from './kvm_host.ts';
import { KVM_FILTER_PRIVATE, KVM_FILTER_SHARED } from './kvm_host.ts';
import type { KvmGmemFile, ModelFile } from './guest_memfd.ts';
import { KvmError, hex } from './kvm_error.ts';
import { formatValue } from './args.ts';
import { kvmArchGmemInvalidate } from '../x86/sev.ts';

const SC = 'fallocate';
/** MAX_LFS_FILESIZE on 64-bit (the tmpfs/anon-inode s_maxbytes) */
const MAX_LFS_FILESIZE = (1n << 63n) - 1n;

/** The file's page is prepared: handed to the guest already (a populate would overwrite guest data). */
export function kvmGmemIsPrepared(slot: KvmMemorySlot, gfn: number): boolean {
  const b = slot.gmem;
  if (b === null) return false;
  const file = b.file as KvmGmemFile;
  const index = b.pgoff + (gfn - slot.baseGfn);
  return file.pages.has(index) && !file.unprepared.has(index);
}

function toLoff(v: number | bigint, what: string): bigint {
  if (typeof v !== 'bigint' && (typeof v !== 'number' || !Number.isSafeInteger(v)))
    throw new KvmError('EINVAL', SC, `${what} ${formatValue(v)} is not an integer (use a bigint past 2^53)`);
  const b = BigInt(v);
  if (b >= 1n << 63n || b < -(1n << 63n))
    throw new KvmError('EINVAL', SC, `${what} ${b} does not fit a loff_t`);
  return b;
}

/**
 * fallocate(fd, mode, offset, len) on a model file: vfs_fallocate's generic checks, then the file's own.
 * @kernel fs/open.c#vfs_fallocate
 */
export function vfsFallocate(
  file: ModelFile,
  mode: number,
  offsetIn: number | bigint,
  lenIn: number | bigint,
): void {
  if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0xffffffff)
    throw new KvmError('EINVAL', SC, `mode ${formatValue(mode)} is not an int`);
  const offset = toLoff(offsetIn, 'offset');
  const len = toLoff(lenIn, 'len');
  if (offset < 0n || len <= 0n) throw new KvmError('EINVAL', SC, `offset ${offset} < 0 or len ${len} <= 0`);
  // A hole punch must keep the size.
  if (mode & FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE))
    throw new KvmError('EOPNOTSUPP', SC, 'FALLOC_FL_PUNCH_HOLE without FALLOC_FL_KEEP_SIZE');
  // KVM, VM and vCPU fds, VFIO and device fds are anonymous inodes, not regular files.
  if (file.kind !== 'guest_memfd' && file.kind !== 'memfd')
    throw new KvmError('ENODEV', SC, `a ${file.kind} fd is not a regular file`);
  if (offset + len > MAX_LFS_FILESIZE)
    throw new KvmError('EFBIG', SC, `offset ${hex(offset)} + len ${hex(len)} exceeds the maximum file size`);
  if (file.kind === 'memfd') return; // shmem: accepted, pages not modelled
  kvmGmemFallocate(file, mode, offset, len);
}

/** @kernel virt/kvm/guest_memfd.c#kvm_gmem_fallocate */
export function kvmGmemFallocate(file: KvmGmemFile, mode: number, offset: bigint, len: bigint): void {
  if (!(mode & FALLOC_FL_KEEP_SIZE))
    throw new KvmError('EOPNOTSUPP', SC, 'guest_memfd cannot change size: FALLOC_FL_KEEP_SIZE is required');
  if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))
    throw new KvmError('EOPNOTSUPP', SC, `mode ${hex(mode)} has bits guest_memfd does not support`);
  const page = BigInt(PAGE_SIZE);
  if (offset % page !== 0n || len % page !== 0n)
    throw new KvmError('EINVAL', SC, `offset ${hex(offset)} or len ${hex(len)} is not page aligned`);
  // Pages past i_size never exist, so both ends can be clamped to the file (a punch past the end is fine).
  const size = BigInt(file.size);
  const clamp = (x: bigint): number => Number((x < size ? x : size) / page);
  if (mode & FALLOC_FL_PUNCH_HOLE) kvmGmemPunchHole(file, clamp(offset), clamp(offset + len));
  else {
    // "Dedicated guest is immutable by default": no allocation past the end.
    if (offset + len > size)
      throw new KvmError('EINVAL', SC, `[${hex(offset)}, +${hex(len)}) is past the file size ${hex(size)}`);
    kvmGmemAllocate(file, clamp(offset), clamp(offset + len));
  }
}

/**
 * Allocate the file's pages in [start, end) (page indexes) without preparing them for the guest.
 * @kernel virt/kvm/guest_memfd.c#kvm_gmem_allocate
 */
export function kvmGmemAllocate(file: KvmGmemFile, start: number, end: number): void {
  const pool = file.kvm.kvm.host.pfns;
  for (let index = start; index < end; index++) {
    if (file.pages.has(index)) continue;
    file.pages.set(index, pool.alloc(1));
    file.unprepared.add(index);
  }
}

/**
 * The filter of mappings a hole punch must zap: 6.18 maps an INIT_SHARED file's pages as shared, every
 * other file's as private.
 * @kernel virt/kvm/guest_memfd.c#kvm_gmem_get_invalidate_filter
 */
function kvmGmemGetInvalidateFilter(file: KvmGmemFile): number {
  return file.flags & GUEST_MEMFD_FLAG_INIT_SHARED ? KVM_FILTER_SHARED : KVM_FILTER_PRIVATE;
}

/**
 * Zap every mapping of file pages [start, end) in the memslots bound to them, opening the VM's
 * MMU-invalidation window on the first bound slot. Returns whether the window was opened.
 * @kernel virt/kvm/guest_memfd.c#__kvm_gmem_invalidate_begin
 */
export function kvmGmemInvalidateBegin(
  file: KvmGmemFile,
  start: number,
  end: number,
  filter: number,
): boolean {
  const vm = file.kvm;
  let flush = false;
  let found = false;
  for (const b of file.bindings) {
    if (b.end <= start || b.start >= end) continue;
    const slot = b.slot;
    const pgoff = b.start;
    const gs = slot.baseGfn + Math.max(pgoff, start) - pgoff;
    const ge = slot.baseGfn + Math.min(pgoff + slot.npages, end) - pgoff;
    if (!found) {
      found = true;
      vm.mmuInvalidateBegin();
    }
    flush = vm.kvmMmuUnmapGfnRange(slot, gs, ge, filter) || flush;
  }
  if (flush) vm.flushRemoteTlbs();
  return found;
}

/** @kernel virt/kvm/guest_memfd.c#__kvm_gmem_invalidate_end */
export function kvmGmemInvalidateEnd(file: KvmGmemFile, start: number, end: number): void {
  if (file.bindings.some((b) => b.start < end && start < b.end)) file.kvm.mmuInvalidateEnd();
}

/**
 * Punch out file pages [start, end): zap their mappings, free them (the next fault allocates a new,
 * zeroed page), close the invalidation window.
 * @kernel virt/kvm/guest_memfd.c#kvm_gmem_punch_hole
 */
export function kvmGmemPunchHole(file: KvmGmemFile, start: number, end: number): void {
  if (start >= end) return;
  kvmGmemInvalidateBegin(file, start, end, kvmGmemGetInvalidateFilter(file));
  kvmGmemTruncateRange(file, start, end);
  kvmGmemInvalidateEnd(file, start, end);
}

/**
 * The VMM closed the last reference to the file: detach every bound memslot (slot->gmem.file = NULL, so a
 * later fault there gets -EFAULT from kvm_gmem_get_pfn, i.e. KVM_EXIT_MEMORY_FAULT) and zap what the file
 * backs, inside an invalidation window; the bindings die with the file. The inode goes with its last
 * file, and with it the pages (truncate_inode_pages_final → kvm_gmem_free_folio: SNP pages leave the RMP).
 * The memslots themselves stay, still flagged KVM_MEM_GUEST_MEMFD.
 * @kernel virt/kvm/guest_memfd.c#kvm_gmem_release
 */
export function kvmGmemRelease(file: KvmGmemFile): void {
  const end = Number.MAX_SAFE_INTEGER;
  const slots = file.bindings.map((b) => b.slot);
  for (const slot of slots) slot.gmem = null;
  kvmGmemInvalidateBegin(file, 0, end, kvmGmemGetInvalidateFilter(file));
  kvmGmemInvalidateEnd(file, 0, end);
  file.bindings = [];
  kvmGmemTruncateRange(file, 0, end); // the inode's eviction
}

/**
 * truncate_inode_pages_range: drop the page-cache pages of [start, end); each folio freed goes through
 * kvm_gmem_free_folio, which returns an SNP page to the hypervisor before the host reuses it.
 * @kernel virt/kvm/guest_memfd.c#kvm_gmem_free_folio
 */
function kvmGmemTruncateRange(file: KvmGmemFile, start: number, end: number): void {
  const vm = file.kvm;
  const pool = vm.kvm.host.pfns;
  // Walk whichever is smaller: the range or the file's pages.
  const indexes =
    end - start <= file.pages.size
      ? Array.from({ length: end - start }, (_, i) => start + i).filter((i) => file.pages.has(i))
      : [...file.pages.keys()].filter((i) => i >= start && i < end);
  for (const index of indexes) {
    const pfn = file.pages.get(index)!;
    file.pages.delete(index);
    file.unprepared.delete(index);
    kvmArchGmemInvalidate(vm.arch, pfn);
    pool.put(pfn);
  }
}
