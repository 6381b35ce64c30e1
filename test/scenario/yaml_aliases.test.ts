/**
 * A YAML file whose aliases expand past yaml's limit ("billion laughs") is an error at the file, exit 2,
 * in scenarios, memslot scripts and explore configurations. Before, `run`/`memslots`/`explore` of such a
 * file was "internal error" (exit 70): yaml's ReferenceError from toJS() escaped the parser.
 */
import { describe, expect, it } from 'vitest';
import { parseScenario } from '../../src/scenario/parse.ts';
import { replayMemslotScript } from '../../src/cli/memslot_script.ts';

const laughs = (): string => {
  const lines = ['name: t', 'vms: []', 'timeline: []', 'p0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 12; i++)
    lines.push(
      `p${i}: &a${i} [${Array(10)
        .fill(`*a${i - 1}`)
        .join(', ')}]`,
    );
  return lines.join('\n') + '\n';
};
const WHY = 'YAML: Excessive alias count indicates a resource exhaustion attack';

describe('YAML alias expansion', () => {
  it('is a parse error naming the file', () => {
    expect(parseScenario(laughs(), 'l.yaml')).toEqual({ ok: false, error: `l.yaml:1:1: ${WHY}` });
    expect(replayMemslotScript(laughs(), 'l.yaml')).toEqual({ ok: false, error: `l.yaml:1:1: ${WHY}` });
  });

  it('a few aliases still work', () => {
    const text = `name: t
vms:
  - regions: [{ name: ram, gpa: 0, size: &sz 2M }, { name: rom, gpa: 4M, size: *sz }]
timeline: []
`;
    const r = parseScenario(text, 's.yaml');
    expect(r.ok && r.scenario.vms[0]!.regions.map((x) => x.size)).toEqual([2 << 20, 2 << 20]);
  });
});
