/**
 * Every historical bug switch the explorer can reach is found on a generic library configuration (not
 * a fixture written for the bug): the invariant, the designs where it is reachable, and the length of
 * the shortest schedule. The same configurations are clean without the switch (library.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { loadExploreConfig, type ExploreConfig } from '../../src/explore/config.ts';
import { exploreConfig } from '../../src/explore/run.ts';
import { replaySchedule } from '../../src/explore/program.ts';
import type { BugName } from '../../src/kvm/host_profile.ts';

function withBug(name: string, bug: BugName): ExploreConfig {
  const r = loadExploreConfig(name);
  if (!r.ok) throw new Error(r.error);
  const c = r.config;
  return { ...c, scenario: { ...c.scenario, host: { ...c.scenario.host, bugs: [bug] } } };
}

const PRECISE = new Set(['quirk-off', 'slot-flag+leafs']);
/** bug, configuration, design → [invariant, shortest schedule length] or null (not reachable there) */
const CASES: [BugName, string, (d: string) => [string, number] | null][] = [
  ['fault-no-seq-recheck', 'notifier-vs-fault', () => ['INV-PFN-001', 4]],
  // found by the audit at the end of the ioctl: the TLB still translates the deleted slot, no flush owed
  ['precise-zap-no-flush', 'delete-vs-fault', (d) => (PRECISE.has(d) ? ['INV-ZAP-002', 4] : null)],
  // the fault maps the INVALID slot's gfn: the guest's re-executed access reaches it (under the precise
  // zap while the zap has dropped mmu_lock inside its walk, under zap-all through the new root)
  [
    'fault-ignores-invalid-slot',
    'delete-vs-fault',
    (d) => (PRECISE.has(d) ? ['INV-ACCESS-001', 6] : ['INV-ACCESS-001', 7]),
  ],
  // the FLAGS_ONLY ioctl: publish, then synchronize_srcu and commit, after which the binding dangles
  ['gmem-flag-clear-uaf', 'gmem-flags-vs-fault', () => ['INV-GMEM-001', 2]],
  [
    'shadow-2019-precise-zap',
    'shadow-delete-vs-access',
    (d) => (d === 'quirk-off' ? ['INV-ZAP-002', 3] : null),
  ],
  // shadow paging: the DIMM holds the guest's page tables; 6.12-rc1's leaf-only zap leaves the pages
  // shadowing them behind, and once the new memslots are published the vCPU still reaches RAM through
  // them although KVM's walk of its tables fails (quirk-off: the only precise design on this MMU)
  [
    'shadow-leafs-only-zap',
    'shadow-paging-unplug-vs-access',
    (d) => (d === 'quirk-off' ? ['INV-ACCESS-001', 4] : null),
  ],
  // v5.3 memtypes, no EPT zap on the CR0.CD toggle: after the ROM DELETE the BAR access still uses the
  // WB|IPAT SPTE from the CD=1 phase under the precise zap; zap-all took it (exhausted clean, below)
  ['vfio-2019-memtype', 'vfio-memtype', (d) => (PRECISE.has(d) ? ['INV-ACCESS-005', 5] : null)],
];

describe('explore finds the historical bugs on library configurations', () => {
  for (const [bug, name, want] of CASES) {
    it(`${bug} on ${name}`, () => {
      const cfg = withBug(name, bug);
      const r = exploreConfig(cfg);
      for (const d of r.designs) {
        const got = d.violation === null ? null : [d.violation.invariant, d.violation.schedule.length];
        expect([d.design, got]).toEqual([d.design, want(d.design)]);
        if (d.violation === null) continue;
        // the shortest schedule reproduces, step by step, with one record per step
        const again = replaySchedule(cfg, d.design, d.violation.schedule);
        expect(again.violation?.id).toBe(d.violation.invariant);
        expect(again.records.length).toBe(d.violation.schedule.length);
      }
    }, 120_000);
  }

  it('fault-no-seq-recheck: the race as drawn (fault-in, invalidate_range_start, install, PTE change)', () => {
    const d = exploreConfig(withBug('notifier-vs-fault', 'fault-no-seq-recheck'), { designs: ['quirk'] })
      .designs[0]!;
    const v = d.violation!;
    expect(v.steps.map((s) => `${s.actor}:${s.fn}`)).toEqual([
      '0:kvm_mmu_faultin_pfn',
      '1:mmu_notifier_invalidate_range_start',
      '0:kvm_tdp_mmu_map',
      '1:mmu_notifier_invalidate_range_end',
    ]);
    expect([v.gfn, v.step]).toEqual([5, 3]);
  });

  it('PCT (random mode) finds it too, reproducibly from its seed; without the bug every run is clean', () => {
    const pct = { runs: 40, depth: 2, seed: 3 };
    const a = exploreConfig(withBug('notifier-vs-fault', 'fault-no-seq-recheck'), { designs: ['quirk'], pct })
      .designs[0]!;
    const b = exploreConfig(withBug('notifier-vs-fault', 'fault-no-seq-recheck'), { designs: ['quirk'], pct })
      .designs[0]!;
    expect(a.violation?.invariant).toBe('INV-PFN-001');
    expect([a.stats.violating, a.stats.complete]).toEqual([b.stats.violating, b.stats.complete]);
    // seed 3: 2 of the 40 runs hit the race (a depth-2 bug: one priority change at the right step)
    expect([a.stats.violating, a.stats.complete]).toEqual([2, 38]);
    const clean = loadExploreConfig('notifier-vs-fault');
    if (!clean.ok) throw new Error(clean.error);
    const c = exploreConfig(clean.config, { designs: ['quirk'], pct }).designs[0]!;
    expect([c.stats.complete, c.stats.violating, c.violation]).toEqual([40, 0, null]);
  });
});

describe('vfio-2019-memtype: found under the precise zap, and why zap-all hid it', () => {
  const base = (): ExploreConfig => {
    const r = loadExploreConfig('vfio-memtype');
    if (!r.ok) throw new Error(r.error);
    return r.config;
  };
  const host = (c: ExploreConfig, h: Record<string, unknown>): ExploreConfig => ({
    ...c,
    scenario: { ...c.scenario, host: { ...c.scenario.host, ...h } },
  });
  /** design → "complete schedules" or "invariant@length" */
  const verdicts = (c: ExploreConfig): Record<string, string> =>
    Object.fromEntries(
      exploreConfig(c).designs.map((d) => {
        if (d.violation === null) {
          expect([d.design, d.stats.exhausted, d.stats.violating]).toEqual([d.design, true, 0]);
          return [d.design, `${d.stats.complete}`];
        }
        return [d.design, `${d.violation.invariant}@${d.violation.schedule.length}`];
      }),
    );

  it('with the switch: precise designs fail at the BAR access (memtype WB from CD=1, KVM now says WC); zap-all designs are clean, every schedule', () => {
    const cfg = withBug('vfio-memtype', 'vfio-2019-memtype');
    expect(verdicts(cfg)).toEqual({
      quirk: '75',
      'quirk-off': 'INV-ACCESS-005@5',
      'vm-type': '75',
      'slot-flag': '75',
      'slot-flag+leafs': 'INV-ACCESS-005@5',
    });
    const v = exploreConfig(cfg, { designs: ['quirk-off'] }).designs[0]!.violation!;
    expect(v.steps.map((s) => `${s.actor}:${s.fn}`)).toEqual([
      '0:kvm_set_cr0',
      '0:kvm_set_memory_region',
      '0:synchronize_srcu_expedited',
      '0:synchronize_srcu_expedited',
      '0:guest access (TLB / EPT hit)',
    ]);
    expect([v.gfn, v.message]).toEqual([
      0xc0001,
      'VM 1: read of gpa 0xc0001000 by vCPU 0 used memtype 6, KVM now computes 1',
    ]);
  }, 120_000);

  it('the same schedule under zap-all: the DELETE zapped every root, the access refaults with the memtype KVM computes now', () => {
    const cfg = withBug('vfio-memtype', 'vfio-2019-memtype');
    // the violating schedule (with zap-all's resched point), then the access: an EPT violation, the install, the re-executed access
    const r = replaySchedule(cfg, 'quirk', [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
    expect([r.ending, r.violation]).toEqual(['complete', undefined]);
    expect(r.records.slice(5, 8).map((x) => `${x.fn}: ${x.what}`)).toEqual([
      'kvm_mmu_faultin_pfn: read 0xc0001000: EPT violation; seq snapshot, memslot, pfn',
      'kvm_tdp_mmu_map: gfn 0xc0001: SPTE installed; the guest re-executes',
      'guest access (TLB / EPT hit): read 0xc0001000 → pfn 0x4002 (level 1, memtype 1)',
    ]);
  });

  it('zap-all only hid it: with the ROM DELETE on its own VMM thread, the BAR access can come first and every design fails in 2 steps', () => {
    const c = base();
    const vcpu = c.actors[0]!;
    // the GPU left out: the two threads alone make the point
    const unordered: ExploreConfig = {
      ...c,
      actors: [
        { ...vcpu, steps: [vcpu.steps[0]!, vcpu.steps[2]!] },
        { name: 'qemu', vcpu: 0, steps: [vcpu.steps[1]!] },
      ],
    };
    const all = (x: string) =>
      Object.fromEntries(
        ['quirk', 'quirk-off', 'vm-type', 'slot-flag', 'slot-flag+leafs'].map((d) => [d, x]),
      );
    expect(verdicts(host(unordered, { bugs: ['vfio-2019-memtype'] }))).toEqual(all('INV-ACCESS-005@2'));
    expect(verdicts(unordered)).toEqual({
      quirk: '48',
      'quirk-off': '10',
      'vm-type': '48',
      'slot-flag': '48',
      'slot-flag+leafs': '10',
    });
  }, 120_000);

  it("without the switch both are clean: today's memtypes (library.test.ts), and v5.3's with Yan Zhao's CD-toggle zap", () => {
    expect(verdicts(host(base(), { honorGuestMtrrs: true, cdToggleZap: true }))).toEqual({
      quirk: '75',
      'quirk-off': '36',
      'vm-type': '75',
      'slot-flag': '75',
      'slot-flag+leafs': '36',
    });
    // v5.3's code itself (guest MTRRs honoured, no zap on the toggle with CD_NW_CLEARED on) is the bug
    expect(verdicts(host(base(), { honorGuestMtrrs: true }))['quirk-off']).toBe('INV-ACCESS-005@5');
  }, 120_000);
});
