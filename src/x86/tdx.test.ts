/**
 * The TDX hooks and the TD's memory lifecycle with exact SEAMCALL counts: KVM_TDX_INIT_MEM_REGION (ADD,
 * no accept), the first AUG fault, TDG.MEM.PAGE.ACCEPT statuses, the pending-page kill, removals before
 * and after the TD runs (3 vs 4 SEAMCALLs), 4K-only private leafs, free_external_spt on a live TD.
 */
import { describe, expect, it } from 'vitest';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE } from '../uapi/falloc.ts';
import { KVM_MEMORY_ATTRIBUTE_PRIVATE } from '../uapi/kvm.ts';
import { MiB, PAGE, TDX_SHARED, VM, accept, model, privateGuest, tdx } from '../../test/private/fixture.ts';

const PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
const td = () => privateGuest(VM.TDX, [{ slot: 0, gpa: 0, pages: 1024 }]);

describe('KVM_TDX_INIT_MEM_REGION and finalization', () => {
  it('adds 16 pages with 3 SEPT.ADD + 16 PAGE.ADD (+256 MR.EXTEND when measured); no accept needed', () => {
    const g = td();
    g.vm.tdxInitMemRegion(0, 16, { measure: true });
    expect(tdx(g)).toMatchObject({
      'TDH.MEM.SEPT.ADD': 3,
      'TDH.MEM.PAGE.ADD': 16,
      'TDH.MR.EXTEND': 256,
      'TDH.MEM.PAGE.AUG': 0,
      mapped_pages: 16,
      pending_pages: 0,
    });
    expect(model(g).seamcalls).toBe(3 + 16 + 256);
    g.vm.tdxFinalizeVm();
    expect(tdx(g)['TDH.MR.FINALIZE']).toBe(1);
    const v = g.vcpus[0]!;
    expect(v.access(15 * PAGE, 'write').exit).toBe('none');
    expect(v.tdxAccept(15 * PAGE)).toMatchObject({ exit: 'none', status: 'already_accepted' });
  });

  it('rejects: after finalize EINVAL, a populated page EEXIST, a shared attribute EINVAL, a shared gpa EINVAL', () => {
    const g = td();
    g.vm.tdxInitMemRegion(0, 1);
    expect(() => g.vm.tdxInitMemRegion(0, 1)).toThrow(/EEXIST/);
    g.vm.setMemoryAttributes({ address: 8 * PAGE, size: PAGE, attributes: 0 });
    expect(() => g.vm.tdxInitMemRegion(8 * PAGE, 1)).toThrow(/EINVAL.*PRIVATE/);
    expect(() => g.vm.tdxInitMemRegion(TDX_SHARED, 1)).toThrow(/EINVAL/);
    expect(() => g.vm.tdxInitMemRegion(PAGE + 1, 1)).toThrow(/EINVAL/);
    expect(() => g.vm.tdxInitMemRegion(PAGE, 0)).toThrow(/EINVAL/);
    expect(() => g.vm.tdxInitMemRegion(8 * MiB, 1)).toThrow(/EINVAL.*guest_memfd/);
    g.vm.tdxFinalizeVm();
    expect(() => g.vm.tdxFinalizeVm()).toThrow(/EINVAL/);
    expect(() => g.vm.tdxInitMemRegion(2 * PAGE, 1)).toThrow(/EINVAL.*finalized/);
  });

  it('is ENOTTY on a VM that is not a TD', () => {
    const g = privateGuest(VM.SW_PROTECTED, [{ slot: 0, gpa: 0, pages: 16 }]);
    expect(() => g.vm.tdxInitMemRegion(0, 1)).toThrow(/ENOTTY/);
    expect(() => g.vm.tdxFinalizeVm()).toThrow(/ENOTTY/);
    expect(g.vm.tdxStats()).toEqual({});
  });

  it('a removal before the TD runs costs 3 SEAMCALLs (no TDH.MEM.TRACK), after it 4', () => {
    const g = td();
    const fd = g.gmem.get(0)!;
    g.vm.tdxInitMemRegion(0, 4);
    const s0 = model(g).seamcalls;
    g.kvm.fallocate(fd, PUNCH, 0, 2 * PAGE);
    expect(model(g).seamcalls - s0).toBe(2 * 3);
    expect(tdx(g)['TDH.MEM.TRACK']).toBe(0);
    g.vm.tdxFinalizeVm();
    const s1 = model(g).seamcalls;
    g.kvm.fallocate(fd, PUNCH, 2 * PAGE, 2 * PAGE);
    expect(model(g).seamcalls - s1).toBe(2 * 4);
    expect(tdx(g)['TDH.MEM.TRACK']).toBe(2);
    expect(model(g).tdx_private_pages_removed).toBe(4);
  });
});

describe('AUG, ACCEPT and the pending-page kill', () => {
  it('the first private fault of a fresh TD: 3 SEPT.ADD + 1 AUG; the next page in the table: 1 AUG', () => {
    const g = td();
    const v = g.vcpus[0]!;
    accept(v, 0, 1);
    expect(tdx(g)).toMatchObject({ 'TDH.MEM.SEPT.ADD': 3, 'TDH.MEM.PAGE.AUG': 1, accepts: 1 });
    accept(v, PAGE, 1);
    expect(tdx(g)).toMatchObject({ 'TDH.MEM.SEPT.ADD': 3, 'TDH.MEM.PAGE.AUG': 2, accepts: 2 });
    // finalize (implicit at the first run) + 3 + 2
    expect(model(g).seamcalls).toBe(6);
  });

  it('ACCEPT statuses: success zeroes the page, already_accepted, invalid_operand on a shared gpa', () => {
    const g = td();
    const v = g.vcpus[0]!;
    const r = v.tdxAccept(5 * PAGE);
    expect(r).toMatchObject({ exit: 'none', status: 'success' });
    expect(v.tdxAccept(5 * PAGE)).toMatchObject({ exit: 'none', status: 'already_accepted' });
    expect(v.tdxAccept(TDX_SHARED + 5 * PAGE)).toMatchObject({ exit: 'none', status: 'invalid_operand' });
    expect(v.access(5 * PAGE, 'write')).toMatchObject({ exit: 'none', pfn: r.exit === 'none' ? r.pfn : -1 });
  });

  it('accepting a gfn whose attribute is shared exits with KVM_EXIT_MEMORY_FAULT (private)', () => {
    const g = td();
    g.vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0 });
    expect(g.vcpus[0]!.tdxAccept(0)).toEqual({ exit: 'memory_fault', gpa: 0, size: PAGE, private: true });
  });

  it('touching an augmented page before accepting it kills the TD: vm_dead, counted, EIO after', () => {
    const g = td();
    const v = g.vcpus[0]!;
    const r = v.access(7 * PAGE, 'read');
    expect(r).toMatchObject({ exit: 'vm_dead', gpa: 7 * PAGE });
    expect(tdx(g)).toMatchObject({ 'TDH.MEM.PAGE.AUG': 1, pending_pages: 1 });
    expect(model(g).tdx_unaccepted_accesses).toBe(1);
    expect(g.vm.dead).toBe(true);
    expect(g.vm.bugged).toBe(false); // kvm_vm_dead, not KVM_BUG_ON
    expect(g.vcpus[1]!.access(0, 'read').exit).toBe('vm_dead');
    expect(v.tdxAccept(7 * PAGE).exit).toBe('vm_dead');
    for (const f of [
      () => g.vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE }),
      () => g.vm.setUserMemoryRegion2({ slot: 0, memorySize: 0 }),
      () => g.vm.createVcpu(9),
    ])
      expect(f).toThrow(/EIO/);
  });
});

describe('TDX hook invariants', () => {
  it('a private leaf above 4K is a KVM_BUG_ON; so is freeing an S-EPT table while the TD lives', () => {
    const g = td();
    const t = g.vm.arch.tdx!;
    expect(t.setExternalSpte(512, 2, 1000)).toBeLessThan(0);
    expect(g.vm.warnings.map((w) => [w.kind, w.id])).toEqual([['bug', 'INV-TDX-4K']]);
    const h = td();
    expect(h.vm.arch.tdx!.freeExternalSpt(0, 1, 0)).toBeLessThan(0);
    expect(h.vm.warnings.map((w) => [w.kind, w.id])).toEqual([['bug', 'INV-TDX-FREE-SPT']]);
    expect(h.vm.bugged).toBe(true);
  });

  it('a mapping without KVM_TDX_INIT_MEM_REGION before finalization is a KVM_BUG_ON', () => {
    const g = td();
    expect(g.vm.arch.tdx!.setExternalSpte(3, 1, 1000)).toBeLessThan(0);
    expect(g.vm.warnings.map((w) => w.id)).toEqual(['INV-TDX-PREFAULT']);
  });
});
