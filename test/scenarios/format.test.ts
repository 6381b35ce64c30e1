/**
 * The scenario format: malformed scenarios give one `file:line:col: path: message` error naming what
 * was expected, never a throw; every library scenario parses.
 */
import { describe, expect, it } from 'vitest';
import { parseScenario } from '../../src/scenario/parse.ts';
import { libraryNames, loadScenario } from '../../src/scenario/library.ts';

const base = (extra: string): string => `name: t
vms:
  - type: DEFAULT
    regions:
      - { name: ram, gpa: 0x0, size: 1M }
${extra}`;

const err = (text: string): string => {
  const r = parseScenario(text, 'bad.yaml');
  if (r.ok) throw new Error('expected an error');
  return r.error;
};

describe('scenario format errors', () => {
  it('YAML syntax', () => {
    expect(err('name: [unclosed\n')).toMatch(/^bad\.yaml:\d+:\d+: YAML syntax: /);
  });
  it('wrong type, at the value', () => {
    expect(err(base('timeline:\n  - create: 5\n'))).toBe(
      'bad.yaml:7:13: timeline.0.create: expected string; got 5',
    );
  });
  it('unknown key, at the key', () => {
    expect(err(base('timeline:\n  - delete: ram\n    colour: red\n'))).toBe(
      "bad.yaml:8:5: timeline.0.colour: unknown key 'colour' (allowed: label, vm, expect, delete, whileInvalid, whileLockDropped)",
    );
  });
  it('unknown step kind lists the kinds', () => {
    expect(err(base('timeline:\n  - explode: ram\n'))).toMatch(
      /^bad\.yaml:7:5: timeline\.0: unknown step \(keys: explode\); expected exactly one of: create, delete/,
    );
  });
  it('bad number', () => {
    expect(err(base('timeline:\n  - move: ram\n    to: 12Q\n'))).toMatch(
      /^bad\.yaml:8:9: timeline\.0\.to: expected a non-negative integer, hex/,
    );
  });
  it('overlapping memory layout', () => {
    const t = `name: t\nvms:\n  - regions:\n      - { name: a, gpa: 0x0, size: 2M }\n      - { name: b, gpa: 0x100000, size: 1M }\ntimeline: []\n`;
    expect(err(t)).toBe(
      "bad.yaml:5:9: vms.0.regions.1: overlapping memory layout: 'b' [0x100000, 0x200000) overlaps 'a' [0x0, 0x200000) (mark one 'present: false' if the timeline swaps them)",
    );
  });
  it('unknown region and unknown parameter', () => {
    expect(err(base('timeline:\n  - delete: rom\n'))).toMatch(
      /^bad\.yaml:7:13: timeline\.0\.delete: unknown region 'rom'/,
    );
    expect(err(base('timeline:\n  - repeat: $n\n    steps: []\n'))).toMatch(
      /^bad\.yaml:7:13: timeline\.0\.repeat: unknown parameter \$n/,
    );
  });
  it('nested repeat steps are checked', () => {
    expect(err(base('timeline:\n  - repeat: 2\n    steps:\n      - delete: 3\n'))).toMatch(
      /^bad\.yaml:9:17: timeline\.0\.steps\.0\.delete: /,
    );
  });
  it('JSON works too', () => {
    const r = parseScenario('{"name":"j","vms":[{"regions":[]}],"timeline":[{"audit":"x"}]}', 'j.json');
    expect(r.ok).toBe(true);
  });
});

describe('library', () => {
  it('has at least 8 scenarios, each parses and documents its source', () => {
    expect(libraryNames().length).toBeGreaterThanOrEqual(8);
    for (const n of libraryNames()) {
      const r = loadScenario(n);
      expect(r.ok, n + (r.ok ? '' : r.error)).toBe(true);
    }
  });
  it('params override', () => {
    const r = loadScenario('firmware-boot', { pamToggles: '1' });
    expect(r.ok).toBe(true);
    expect(loadScenario('firmware-boot', { nope: '1' }).ok).toBe(false);
  });
});
