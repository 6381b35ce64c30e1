/**
 * vfio-2019 under every design, with exact counts: the 2019 mechanism (mmu-zap.md §6.7) is visible as
 * SPTEs whose EPT memtype is stale at the end — 0 under zap-all, 384 under the precise zap (the 2M RAM
 * leafs built while a vCPU had CR0.CD=1: 256 by the BSP in ram-low + 128 by the APs in ram-high) — and
 * as non-coherent GPU writes landing on such pages. The v5.19 IOMMU fix, Yan Zhao's CD-toggle zap and
 * today's memtype code each make it 0 everywhere. Also: the VFIO/memtype step kinds' format errors.
 */
import { describe, expect, it } from 'vitest';
import { loadScenario } from '../../src/scenario/library.ts';
import { parseScenario } from '../../src/scenario/parse.ts';
import { compareScenario } from '../../src/scenario/runner.ts';

async function vfio2019(params: Record<string, string> = {}) {
  const r = loadScenario('vfio-2019', params);
  if (!r.ok) throw new Error(r.error);
  const { runs } = await compareScenario(r.scenario, { audit: 'steps' });
  return runs;
}

const key = (t: Record<string, number>) => [
  t['memslot_zap_all_fast'] ?? 0,
  t['memslot_zap_precise'] ?? 0,
  t['memtype_stale_sptes'],
  t['dma_noncoherent'] ?? 0,
  t['dma_into_stale_memtype'] ?? 0,
];

const FIX = { cdToggleZap: 'true' };

describe('vfio-2019: stale EPT memtypes survive the precise zap only', () => {
  it('v5.3-era memtypes + pre-v5.19 IOMMU snoop bug', async () => {
    const runs = await vfio2019();
    for (const r of runs) {
      expect(r.errors).toEqual([]);
      const precise = r.design === 'quirk-off' || r.design === 'slot-flag+leafs';
      // [zap-all, precise, stale SPTEs at the end, non-coherent DMA writes, of those onto stale pages]
      expect(key(r.totals), r.design).toEqual(precise ? [0, 16, 384, 512, 74] : [16, 0, 0, 512, 0]);
      expect(r.totals['memtype_stale_type']).toBe(0); // RAM is WB either way: only IPAT differs
      // the checker sees the stale window at each CD toggle under every design…
      const fired = [...new Set(r.violations.map((v) => `${v.id}@${v.step}`))];
      const boots = precise ? [0] : [0, 1]; // …and under precise the reboot's leafs are already stale
      expect(fired, r.design).toEqual(
        boots.flatMap((b) => [
          `INV-MEMTYPE-001@boot / reboot cycles[${b}] BSP clears CR0.CD`,
          `INV-MEMTYPE-001@boot / reboot cycles[${b}] APs touch RAM with CD=1`,
        ]),
      );
      expect(r.violations.length, r.design).toBe(precise ? 448 : 896);
    }
  }, 60000);

  for (const [what, params] of [
    ['the v5.19 intel-iommu fix (snoop control of attached units)', { snoopScope: 'attached' }],
    ["Yan Zhao's fix (zap EPT on every CR0.CD toggle)", FIX],
    ['6.18 memtypes (no MTRR virtualization)', { kernel: '6.18', honorGuestMtrrs: 'false' }],
  ] as [string, Record<string, string>][]) {
    it(`${what}: none survive, checker clean`, async () => {
      for (const r of await vfio2019(params)) {
        expect(r.errors).toEqual([]);
        expect(r.totals['memtype_stale_sptes'], r.design).toBe(0);
        expect(r.totals['dma_into_stale_memtype'] ?? 0).toBe(0);
        // With Yan's fix the CD toggle zaps, but while the APs still have CD=1 and the BSP has CD=0 their
        // faults install WB|IPAT that the BSP's computation disagrees with: the mixed-CD window remains.
        const fired = new Set(r.violations.map((v) => `${v.id}@${v.step.replace(/\[\d\]/, '[n]')}`));
        expect([...fired], r.design).toEqual(
          params === FIX ? ['INV-MEMTYPE-001@boot / reboot cycles[n] APs touch RAM with CD=1'] : [],
        );
      }
    }, 60000);
  }
});

describe('VFIO and memtype step format', () => {
  const doc = (steps: string, host = '') => `name: t
${host}vms:
  - vcpus: 2
    regions:
      - { name: ram, gpa: 0x0, size: 2M }
timeline:
${steps}`;
  const err = (text: string): string => {
    const r = parseScenario(text, 'v.yaml');
    if (r.ok) throw new Error('expected an error');
    return r.error;
  };
  it('unknown device, container and IOMMU unit', () => {
    expect(err(doc('  - dma: { device: gpu, region: ram }\n'))).toBe(
      "v.yaml:7:20: timeline.0.dma.device: unknown VFIO device 'gpu' (declared: none)",
    );
    expect(err(doc('  - vfioContainer: c0\n  - vfioIommu: c1\n'))).toBe(
      "v.yaml:8:16: timeline.1.vfioIommu: unknown VFIO container 'c1' (declared: c0)",
    );
    expect(err(doc('  - vfioDevice: gpu\n    iommu: igd\n'))).toBe(
      "v.yaml:8:12: timeline.0.iommu: unknown IOMMU unit 'igd' (declared: default)",
    );
  });
  it('memtype names, MTRR ranges, vCPU ids, booleans', () => {
    expect(err(doc('  - mtrr: { var: [{ index: 0, base: 0, size: 2M, type: XX }] }\n'))).toMatch(
      /^v\.yaml:7:56: timeline\.0\.mtrr\.var\.0\.type: /,
    );
    expect(err(doc('  - mtrr: { var: [{ index: 0, type: WB }] }\n'))).toMatch(
      /^v\.yaml:7:19: timeline\.0\.mtrr\.var\.0: a variable MTRR needs 'type'/,
    );
    expect(err(doc('  - cr0: { cd: false, vcpus: [2] }\n'))).toBe(
      'v.yaml:7:31: timeline.0.cr0.vcpus.0: vCPU 2 does not exist (the VM has 2)',
    );
    expect(err(doc('  - pat: { value: -1 }\n'))).toMatch(
      /^v\.yaml:7:19: timeline\.0\.pat\.value: expected a u64 as hex/,
    );
    expect(err(doc('  - audit: x\n', 'host: { snoopScope: some }\n'))).toMatch(
      /^v\.yaml:2:21: host\.snoopScope: /,
    );
    expect(err(doc('  - audit: x\n', 'host: { kernel: 5.3 }\n'))).toMatch(/^v\.yaml:2:17: host\.kernel: /);
  });
  it('a complete VFIO setup parses; kernel 6.12 as a YAML number is "6.12"', () => {
    const r = parseScenario(
      doc(
        '  - vfioDevice: gpu\n  - vfioContainer: c0\n  - vfioGroup: gpu\n    container: c0\n  - vfioIommu: c0\n  - mapDma: { container: c0, region: ram }\n  - kvmVfio: gpu\n  - pat: { value: "0x0007040600070406", vcpus: all }\n',
        'host: { kernel: 6.12, honorGuestMtrrs: true, snoopScope: system, iommus: [{ name: igd, snoopControl: false }] }\n',
      ),
      'v.yaml',
    );
    expect(r.ok && r.scenario.host?.kernel).toBe('6.12');
  });
});
