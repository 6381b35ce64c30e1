/**
 * Messages for an empty list or string where one entry is needed, and for YAML's infinite and NaN
 * numbers. Before: `vms: []` read "expected list of mapping; got []" (what was given), `name: ''` the
 * same kind of line, and `stride: 1e400` "expected number; got null" (JSON.stringify(Infinity)).
 */
import { describe, expect, it } from 'vitest';
import { parseScenario } from '../../src/scenario/parse.ts';

const R = 'vms:\n  - regions:\n      - { name: ram, gpa: 0, size: 2M }\n';
const err = (text: string): string => {
  const r = parseScenario(text, 'x.yaml');
  return r.ok ? 'ok' : r.error;
};

describe('scenario messages', () => {
  it('an empty list or string says what is needed', () => {
    expect(err('name: t\nvms: []\ntimeline: []\n')).toBe(
      'x.yaml:2:6: vms: expected at least 1 entry; got []',
    );
    expect(err(`name: ''\n${R}timeline: []\n`)).toBe('x.yaml:1:7: name: expected a non-empty string; got ""');
  });

  it('an infinite or NaN number is shown as itself', () => {
    expect(err(`name: t\n${R}timeline:\n  - access: { region: ram, stride: 1e400 }\n`)).toBe(
      'x.yaml:6:36: timeline.0.access.stride: expected number; got Infinity',
    );
    expect(err(`name: t\n${R}timeline:\n  - access: { region: ram, stride: .nan }\n`)).toBe(
      'x.yaml:6:36: timeline.0.access.stride: expected number; got NaN',
    );
  });
});
