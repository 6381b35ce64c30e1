/**
 * A host event's range must be whole pages inside its region, a racing fault's vCPU must exist and
 * thpCollapse needs a THP-backed region: parse errors at the value. Before: `length: 0` or a part of a
 * page was "internal error" (exit 70, the host's RangeError "must be page aligned and non-empty"), a
 * racing fault on a missing vCPU a TypeError, and a range past the region hit the next region's mapping.
 */
import { describe, expect, it } from 'vitest';
import { parseScenario } from '../../src/scenario/parse.ts';

const HEAD = `name: t
vms:
  - regions:
      - { name: ram, gpa: 0, size: 2M }
timeline:
`;
const err = (step: string) => {
  const r = parseScenario(HEAD + step, 'h.yaml');
  return r.ok ? 'ok' : r.error;
};

describe('host event ranges', () => {
  it('names the value that is not whole pages inside the region', () => {
    expect(err('  - host: { event: migrate, region: ram, length: 0 }\n')).toBe(
      'h.yaml:6:50: timeline.0.host.length: length must be a non-zero multiple of 4K (got 0x0)',
    );
    expect(err('  - host: { event: swapOut, region: ram, offset: 0x800 }\n')).toBe(
      'h.yaml:6:50: timeline.0.host.offset: offset must be 4K-aligned (got 0x800)',
    );
    expect(err('  - host: { event: munmap, region: ram, offset: 1M, length: 2M }\n')).toBe(
      "h.yaml:6:61: timeline.0.host.length: offset 0x100000 + length 0x200000 runs past the end of region 'ram' (size 0x200000)",
    );
    expect(err('  - host: { event: migrate, region: ram, offset: 2M }\n')).toBe(
      "h.yaml:6:50: timeline.0.host.offset: offset 0x200000 is past the end of region 'ram' (size 0x200000)",
    );
    expect(err('  - host: { event: ksmMerge, region: ram, with: 4M }\n')).toBe(
      "h.yaml:6:49: timeline.0.host.with: with must be a 4K-aligned offset inside region 'ram' (got 0x400000)",
    );
    expect(err('  - host: { event: thpCollapse, region: ram }\n')).toBe(
      "h.yaml:6:20: timeline.0.host.event: thpCollapse needs a THP-backed region ('ram' is 4k)",
    );
    expect(
      err('  - host: { event: migrate, region: ram, length: 4K }\n    racingFault: { offset: 0, vcpu: 1 }\n'),
    ).toBe('h.yaml:7:37: timeline.0.racingFault.vcpu: vCPU 1 does not exist (the VM has 1)');
  });

  it('whole pages inside the region parse', () => {
    expect(err('  - host: { event: migrate, region: ram, offset: 4K, length: 4K }\n')).toBe('ok');
    expect(err('  - host: { event: munmap, region: ram }\n')).toBe('ok');
  });
});
