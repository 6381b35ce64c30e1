/**
 * Private/shared routing against the memory attributes: an access whose kind does not match its gfn's
 * attribute exits with KVM_EXIT_MEMORY_FAULT (gpa without the TDX shared bit, the private flag of the
 * access), and READONLY memslots are refused to VMs with protected state (SEV-ES, SNP, TDX).
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_READONLY } from '../../src/uapi/kvm.ts';
import { PAGE, TDX_SHARED, VM, privateGuest } from './fixture.ts';

describe('a private/shared mismatch exits with KVM_EXIT_MEMORY_FAULT', () => {
  it('TDX: a shared-bit access to a PRIVATE gfn, and a private access to a shared one', () => {
    const g = privateGuest(VM.TDX, [{ slot: 0, gpa: 0, pages: 64 }]);
    const v = g.vcpus[0]!;
    expect(v.access(TDX_SHARED + 5 * PAGE + 12, 'read')).toEqual({
      exit: 'memory_fault',
      gpa: 5 * PAGE,
      size: PAGE,
      private: false,
    });
    g.vm.setMemoryAttributes({ address: 8 * PAGE, size: PAGE, attributes: 0 });
    expect(v.access(8 * PAGE, 'write')).toEqual({
      exit: 'memory_fault',
      gpa: 8 * PAGE,
      size: PAGE,
      private: true,
    });
    expect(v.access(TDX_SHARED + 8 * PAGE, 'write').exit).toBe('none');
    expect(g.vm.dead).toBe(false);
  });

  it.each([
    ['SW_PROTECTED', VM.SW_PROTECTED],
    ['SNP', VM.SNP],
  ])('%s: the C-bit/attribute of the access decides, not the gfn', (_n, type) => {
    const g = privateGuest(type, [{ slot: 0, gpa: 0, pages: 64 }]);
    const v = g.vcpus[0]!;
    expect(v.access(3 * PAGE, 'read', { private: false })).toEqual({
      exit: 'memory_fault',
      gpa: 3 * PAGE,
      size: PAGE,
      private: false,
    });
    expect(v.access(3 * PAGE, 'read', { private: true }).exit).toBe('none');
    expect(v.access(3 * PAGE, 'read').exit).toBe('none'); // default: follow the attribute
    g.vm.setMemoryAttributes({ address: 4 * PAGE, size: PAGE, attributes: 0 });
    expect(v.access(4 * PAGE, 'read', { private: true })).toEqual({
      exit: 'memory_fault',
      gpa: 4 * PAGE,
      size: PAGE,
      private: true,
    });
    expect(v.access(4 * PAGE, 'read').exit).toBe('none');
  });
});

describe('READONLY memslots and protected state', () => {
  it.each([
    ['DEFAULT', VM.DEFAULT, true],
    ['SW_PROTECTED', VM.SW_PROTECTED, true],
    ['SEV', VM.SEV, true],
    ['SEV_ES', VM.SEV_ES, false],
    ['SNP', VM.SNP, false],
    ['TDX', VM.TDX, false],
  ])('%s: KVM_MEM_READONLY accepted = %s', (_n, type, ok) => {
    const kvm = new Kvm();
    const vm = kvm.createVm(type);
    const set = () =>
      vm.setUserMemoryRegion({
        slot: 0,
        flags: KVM_MEM_READONLY,
        guestPhysAddr: 0,
        memorySize: 16 * PAGE,
        userspaceAddr: kvm.host.mmap(16 * PAGE),
      });
    if (ok) expect(set).not.toThrow();
    else expect(set).toThrow(/EINVAL/);
  });
});
