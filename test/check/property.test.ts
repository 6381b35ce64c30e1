/**
 * Property: random sequences of memslot calls (create, delete, move, dirty-log toggles), guest accesses
 * and host mm events (munmap, migrate, THP split) on DEFAULT VMs, with the SLOT_ZAP_ALL quirk on (zap-all)
 * and off (precise zap), never violate an invariant. Replay a failure with the printed seed.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Kvm, KvmError, type BugName, type Vm, type Vcpu } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import { KVM_CAP, KVM_MEM_LOG_DIRTY_PAGES } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';

const MiB = 1 << 20;
const REGION = 4 * MiB;
const BASES = [0, 4 * MiB, 8 * MiB, 6 * MiB, 16 * MiB]; // 6 MiB overlaps two others: EEXIST paths too

type Cmd =
  | { op: 'create'; slot: number; base: number; dirty: boolean }
  | { op: 'delete'; slot: number }
  | { op: 'move'; slot: number; base: number }
  | { op: 'dirty'; slot: number; on: boolean }
  | { op: 'access'; vcpu: number; base: number; page: number; write: boolean }
  | { op: 'munmap'; region: number; page: number }
  | { op: 'migrate'; region: number; page: number; pages: number }
  | { op: 'thpSplit'; region: number; page: number };

const slot = fc.integer({ min: 0, max: 2 });
const base = fc.integer({ min: 0, max: BASES.length - 1 });
const page = fc.integer({ min: 0, max: REGION / 4096 - 1 });
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ op: fc.constant('create' as const), slot, base, dirty: fc.boolean() }),
  fc.record({ op: fc.constant('delete' as const), slot }),
  fc.record({ op: fc.constant('move' as const), slot, base }),
  fc.record({ op: fc.constant('dirty' as const), slot, on: fc.boolean() }),
  {
    arbitrary: fc.record({
      op: fc.constant('access' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      base,
      page,
      write: fc.boolean(),
    }),
    weight: 5,
  },
  fc.record({ op: fc.constant('munmap' as const), region: slot, page }),
  fc.record({ op: fc.constant('migrate' as const), region: slot, page, pages: fc.constantFrom(1, 16, 512) }),
  fc.record({ op: fc.constant('thpSplit' as const), region: slot, page }),
);

function run(quirk: boolean, cmds: Cmd[], bugs: BugName[] = []): Checker {
  const kvm = new Kvm({ bugs });
  const vm: Vm = kvm.createVm(0);
  if (!quirk) vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  // Slot i is backed by region i (THP, so 2M mappings appear), wherever it sits in the guest.
  const regions = [0, 1, 2].map(() => kvm.host.mmap(REGION, { backing: 'thp' }));
  const vcpus: Vcpu[] = [vm.createVcpu(0), vm.createVcpu(1)];
  const ch = new Checker(kvm, { audit: 'points' });
  ch.watch(vm);
  const set = (s: number, gpa: number, flags: number, size = REGION) =>
    vm.setUserMemoryRegion({
      slot: s,
      flags,
      guestPhysAddr: gpa,
      memorySize: size,
      userspaceAddr: regions[s]!,
    });
  cmds.forEach((c, i) => {
    ch.setStep(`${i}:${c.op}`);
    try {
      switch (c.op) {
        case 'create':
          set(c.slot, BASES[c.base]!, c.dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0);
          break;
        case 'delete':
          set(c.slot, 0, 0, 0);
          break;
        case 'move': {
          const old = vm.memslots().find((m) => m.id === c.slot);
          set(c.slot, BASES[c.base]!, old?.flags ?? 0);
          break;
        }
        case 'dirty': {
          const old = vm.memslots().find((m) => m.id === c.slot);
          if (old) set(c.slot, old.baseGfn * 4096, c.on ? KVM_MEM_LOG_DIRTY_PAGES : 0);
          break;
        }
        case 'access': {
          const gpa = BASES[c.base]! + c.page * 4096;
          const kind = c.write ? 'write' : 'read';
          ch.onAccess(vcpus[c.vcpu]!, gpa, kind, vcpus[c.vcpu]!.access(gpa, kind));
          break;
        }
        case 'munmap':
          kvm.host.munmap(regions[c.region]! + c.page * 4096, 4096);
          break;
        case 'migrate':
          kvm.host.migrate(
            regions[c.region]! + Math.min(c.page * 4096, REGION - c.pages * 4096),
            c.pages * 4096,
          );
          break;
        case 'thpSplit':
          kvm.host.thpSplit(regions[c.region]! + c.page * 4096);
          break;
      }
    } catch (e) {
      if (!(e instanceof KvmError)) throw e; // EEXIST, EINVAL: the call failed as the kernel's would
    }
    ch.auditPoint(
      c.op === 'access'
        ? 'postStep'
        : ['munmap', 'migrate', 'thpSplit'].includes(c.op)
          ? 'postNotifier'
          : 'postMemslotUpdate',
    );
  });
  return ch;
}

describe('no invariant fires on random DEFAULT-VM histories', () => {
  it('under zap-all and precise zap (200 runs)', () => {
    fc.assert(
      fc.property(fc.boolean(), fc.array(cmd, { minLength: 1, maxLength: 30 }), (quirk, cmds) => {
        const ch = run(quirk, cmds);
        expect(ch.violations.map((v) => `${v.id}@${v.step}: ${v.message}`)).toEqual([]);
      }),
      { numRuns: 200 },
    );
  });

  it('the same property finds a switched-on bug (precise-zap-no-flush, quirk off)', () => {
    const r = fc.check(
      fc.property(
        fc.array(cmd, { minLength: 1, maxLength: 30 }),
        (cmds) => run(false, cmds, ['precise-zap-no-flush']).violations.length === 0,
      ),
      { numRuns: 300, seed: 1 },
    );
    expect(r.failed).toBe(true);
  });
});
