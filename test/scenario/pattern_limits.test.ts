/**
 * A pattern's stride of 0 and a pattern's passes past the step limit are parse errors at the value.
 * Before: `stride: 0` in an access pattern was "internal error" (exit 70, RangeError from accessRange:
 * count Infinity), in a dma pattern an Array of Infinity length; `passes: 99999999999` ran for ever
 * (the step limit counted repeats, not passes).
 */
import { describe, expect, it } from 'vitest';
import { parseScenario } from '../../src/scenario/parse.ts';

const HEAD = `name: t
vms:
  - regions:
      - { name: ram, gpa: 0, size: 2M }
timeline:
`;
const parse = (steps: string, maxSteps?: number) =>
  parseScenario(HEAD + steps, 'x.yaml', {}, maxSteps === undefined ? {} : { maxSteps });

describe('pattern limits', () => {
  it('stride 0 is refused where it is written, in every kind of pattern', () => {
    expect(parse('  - access: { region: ram, stride: 0 }\n')).toEqual({
      ok: false,
      error: 'x.yaml:6:36: timeline.0.access.stride: stride must be at least 1 byte (got 0)',
    });
    expect(parse('  - delete: ram\n    whileInvalid: { region: ram, stride: 0 }\n')).toEqual({
      ok: false,
      error: 'x.yaml:7:42: timeline.0.whileInvalid.stride: stride must be at least 1 byte (got 0)',
    });
    expect(parse('  - repeat: 2\n    steps:\n      - access: { region: ram, stride: "0x0" }\n')).toEqual({
      ok: false,
      error: 'x.yaml:8:40: timeline.0.steps.0.access.stride: stride must be at least 1 byte (got 0)',
    });
    expect(parse('  - access: { region: ram, stride: 1 }\n').ok).toBe(true);
  });

  it('passes count toward the step limit, multiplied by enclosing repeats', () => {
    expect(parse('  - access: { region: ram, passes: 99999999999 }\n')).toEqual({
      ok: false,
      error:
        'x.yaml:6:5: timeline.0: the timeline unrolls to 99,999,999,999 steps (this step: 99,999,999,999, each pass of a pattern counted as a step), more than the limit of 1,000,000; raise it with --max-steps if you mean it',
    });
    const nested = '  - repeat: 10\n    steps:\n      - access: { region: ram, passes: 11 }\n';
    expect(parse(nested, 100).ok).toBe(false);
    expect(parse(nested, 110).ok).toBe(true);
    expect(parse('  - access: { region: ram, passes: 0 }\n', 1).ok).toBe(true);
  });
});
