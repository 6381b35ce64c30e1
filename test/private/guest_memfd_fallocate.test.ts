/**
 * guest_memfd fallocate: the argument checks (vfs_fallocate, then kvm_gmem_fallocate), allocation ahead
 * of use, and PUNCH_HOLE | KEEP_SIZE: one MMU-invalidation window over the bound slots' gfns, a
 * FILTER_PRIVATE unmap, the pages returned to the host, and a fresh zeroed page on the next private fault.
 */
import { describe, expect, it } from 'vitest';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE } from '../../src/uapi/falloc.ts';
import { MiB, PAGE, VM, accept, model, privateGuest, tdx } from './fixture.ts';

const PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
const KEEP = FALLOC_FL_KEEP_SIZE;

describe('fallocate on a guest_memfd: checks', () => {
  const g = privateGuest(VM.SW_PROTECTED, [{ slot: 0, gpa: 0, pages: 256 }]);
  const fd = g.gmem.get(0)!;
  const fa = (mode: number, off: number | bigint, len: number | bigint) => () =>
    g.kvm.fallocate(fd, mode, off, len);
  it.each([
    ['unaligned offset', fa(PUNCH, 100, PAGE), 'EINVAL'],
    ['unaligned length', fa(PUNCH, 0, 100), 'EINVAL'],
    ['zero length', fa(PUNCH, 0, 0), 'EINVAL'],
    ['negative offset', fa(PUNCH, -PAGE, PAGE), 'EINVAL'],
    ['PUNCH_HOLE without KEEP_SIZE (vfs)', fa(FALLOC_FL_PUNCH_HOLE, 0, PAGE), 'EOPNOTSUPP'],
    ['allocate without KEEP_SIZE', fa(0, 0, PAGE), 'EOPNOTSUPP'],
    ['an unknown mode bit', fa(KEEP | 0x10, 0, PAGE), 'EOPNOTSUPP'],
    ['allocating past the end', fa(KEEP, 255 * PAGE, 2 * PAGE), 'EINVAL'],
    ['offset + len past MAX_LFS_FILESIZE', fa(PUNCH, 1n << 62n, 1n << 62n), 'EFBIG'],
  ])('%s → %s', (_n, f, code) => {
    expect(f).toThrow(new RegExp(`fallocate: ${code}`));
  });
  it('punching past the end succeeds; a VM fd is ENODEV, a closed fd EBADF, a memfd accepts it', () => {
    expect(fa(PUNCH, 0, 1n << 40n)).not.toThrow();
    expect(fa(PUNCH, 1 * MiB, PAGE)).not.toThrow();
    expect(() => g.kvm.fallocate(g.vm.fd, PUNCH, 0, PAGE)).toThrow(/ENODEV/);
    expect(() => g.kvm.fallocate(999, PUNCH, 0, PAGE)).toThrow(/EBADF/);
    expect(() => g.kvm.fallocate(g.kvm.memfdCreate(PAGE), PUNCH, 0, PAGE)).not.toThrow();
  });
});

describe('PUNCH_HOLE invalidates, zaps the private mappings and frees the pages', () => {
  it('SW_PROTECTED: 4 of 16 mapped pages go; seq +1; the next private read gets a new zeroed page', () => {
    const g = privateGuest(VM.SW_PROTECTED, [{ slot: 0, gpa: 0, pages: 256 }]);
    const v = g.vcpus[0]!;
    const pfns = Array.from({ length: 16 }, (_, i) => {
      const r = v.access(i * PAGE, 'write');
      return r.exit === 'none' ? r.pfn : -1;
    });
    const pool = g.kvm.host.pfns;
    const ver = pfns.map((p) => pool.contentVersion(p));
    const alloc0 = pool.allocated;
    const seq0 = g.vm.mmuInvalidateSeq;
    const z0 = model(g).sptes_zapped_4k;
    g.kvm.fallocate(g.gmem.get(0)!, PUNCH, 4 * PAGE, 4 * PAGE);
    expect(g.vm.mmuInvalidateSeq - seq0).toBe(1);
    expect(g.vm.mmuInvalidateInProgress).toBe(0);
    expect(model(g).sptes_zapped_4k - z0).toBe(4);
    expect(alloc0 - pool.allocated).toBe(4);
    for (let i = 4; i < 8; i++) expect(pool.isFree(pfns[i]!)).toBe(true);
    // Pages 4..7 refault onto new pages (the pool may hand a freed pfn back: its content is new).
    for (let i = 0; i < 16; i++) {
      const r = v.access(i * PAGE, 'read');
      if (r.exit !== 'none') throw new Error(r.exit);
      const punched = i >= 4 && i < 8;
      expect(pool.contentVersion(r.pfn) !== ver[i]).toBe(punched);
      if (!punched) expect(r.pfn).toBe(pfns[i]);
    }
    expect(model(g).refaults).toBe(4);
  });

  it('a punch over pages no slot binds opens no invalidation window', () => {
    const g = privateGuest(VM.SW_PROTECTED, [{ slot: 0, gpa: 0, pages: 16 }]);
    const fd = g.vm.createGuestMemfd({ size: 64 * PAGE });
    const seq0 = g.vm.mmuInvalidateSeq;
    g.kvm.fallocate(fd, KEEP, 0, 64 * PAGE);
    g.kvm.fallocate(fd, PUNCH, 0, 64 * PAGE);
    expect(g.vm.mmuInvalidateSeq).toBe(seq0);
  });

  it('TDX: punching 8 accepted pages costs 32 SEAMCALLs; the guest must accept the new page', () => {
    const g = privateGuest(VM.TDX, [{ slot: 0, gpa: 0, pages: 256 }]);
    const v = g.vcpus[0]!;
    const pfns = accept(v, 0, 16);
    const pool = g.kvm.host.pfns;
    const ver = pfns.map((p) => pool.contentVersion(p));
    const s0 = model(g).seamcalls;
    g.kvm.fallocate(g.gmem.get(0)!, PUNCH, 0, 8 * PAGE);
    expect(model(g).seamcalls - s0).toBe(32);
    expect(tdx(g)).toMatchObject({ mapped_pages: 8, 'TDH.MEM.PAGE.REMOVE': 8 });
    const r = v.tdxAccept(3 * PAGE);
    if (r.exit !== 'none') throw new Error(r.exit);
    expect(r.status).toBe('success');
    expect(pool.contentVersion(r.pfn)).not.toBe(ver[3]);
    expect(v.access(3 * PAGE, 'read')).toMatchObject({ exit: 'none', pfn: r.pfn });
    expect(v.access(12 * PAGE, 'read')).toMatchObject({ exit: 'none', pfn: pfns[12] });
    // An unaccepted punched page is still fatal.
    expect(v.access(5 * PAGE, 'read').exit).toBe('vm_dead');
  });

  it('pages allocated ahead are unprepared: populate (TDX INIT_MEM_REGION) still takes them', () => {
    const g = privateGuest(VM.TDX, [{ slot: 0, gpa: 0, pages: 256 }]);
    const alloc0 = g.kvm.host.pfns.allocated;
    g.kvm.fallocate(g.gmem.get(0)!, KEEP, 0, 8 * PAGE);
    expect(g.kvm.host.pfns.allocated - alloc0).toBe(8);
    g.vm.tdxInitMemRegion(0, 8);
    expect(g.kvm.host.pfns.allocated - alloc0).toBe(8); // the same pages, none new
    expect(tdx(g)['TDH.MEM.PAGE.ADD']).toBe(8);
  });
});
