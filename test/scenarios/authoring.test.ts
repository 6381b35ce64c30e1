/**
 * Writing a scenario from the docs alone: the reference (docs/scenario-format.md) is what the schema
 * generates, the tutorial's YAML blocks parse (or fail with the error they document) and its final file
 * runs with the numbers it shows; errors name the allowed keys or the expected type; failing calls fail
 * the run unless the step `expect`s them; the step limit; the CLI's exit codes and messages.
 */
import { describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { CommanderError } from 'commander';
import { parseScenario } from '../../src/scenario/parse.ts';
import { compareScenario, runScenario } from '../../src/scenario/runner.ts';
import { designById } from '../../src/scenario/designs.ts';
import { scenarioJsonSchema, scenarioReferenceMarkdown } from '../../src/scenario/json_schema.ts';
import { STEP_KINDS } from '../../src/scenario/schema.ts';
import { LIBRARY_DIR, libraryNames, loadScenario } from '../../src/scenario/library.ts';
import { progress } from '../../src/cli/progress.ts';
import { EXIT, exitCodeFor } from '../../src/cli/exit_codes.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const read = (p: string) => readFileSync(ROOT + p, 'utf8');

const parse = (text: string, params: Record<string, string> = {}, maxSteps?: number) =>
  parseScenario(text, 's.yaml', params, maxSteps === undefined ? {} : { maxSteps });
const err = (text: string, params: Record<string, string> = {}, maxSteps?: number): string => {
  const r = parse(text, params, maxSteps);
  if (r.ok) throw new Error('parsed');
  return r.error;
};
const ok = (text: string) => {
  const r = parse(text);
  if (!r.ok) throw new Error(r.error);
  return r.scenario;
};
const doc = (timeline: string, vm = '  - regions:\n      - { name: ram, gpa: 0, size: 2M }\n') =>
  `name: s\nvms:\n${vm}timeline:\n${timeline}`;

describe('the format reference and the JSON Schema', () => {
  it('docs/scenario-format.md is what `zaplab schema --markdown` generates', () => {
    expect(read('docs/scenario-format.md')).toBe(scenarioReferenceMarkdown());
  });
  it('the reference has a section per step kind and a row per key', () => {
    const md = scenarioReferenceMarkdown();
    for (const k of STEP_KINDS) expect(md).toContain(`### \`${k}\``);
    for (const key of ['`access.workingSet`', '`regions[].backing`', '`expect`', '`memslot.each.slot`'])
      expect(md).toContain(key);
    expect(md).not.toContain('`access.range`');
  });
  it('the JSON Schema: every step kind an alternative, repeats nest through $defs.step', () => {
    const js = scenarioJsonSchema() as {
      properties: Record<string, { items?: unknown }>;
      $defs: { step: { anyOf: { properties: Record<string, { items?: unknown }> }[] } };
    };
    expect(js.properties['timeline']!.items).toEqual({ $ref: '#/$defs/step' });
    const alts = js.$defs.step.anyOf;
    expect(alts.length).toBe(STEP_KINDS.length);
    alts.forEach((a, i) => expect(Object.keys(a.properties)).toContain(STEP_KINDS[i]));
    expect(alts[STEP_KINDS.indexOf('repeat')]!.properties['steps']!.items).toEqual({ $ref: '#/$defs/step' });
  });
});

describe('the tutorial', () => {
  const md = read('docs/scenario-tutorial.md');
  const blocks = [...md.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
  it('every YAML block parses, or fails with exactly the error it documents', () => {
    expect(blocks.length).toBe(4);
    for (const b of blocks) {
      const want = /^# error: (.*)\n/.exec(b);
      if (want) expect(err(b)).toBe(`s.yaml:7:28: ${want[1]}`);
      else ok(b);
    }
  });
  it('its last block is docs/examples/bar-remap.yaml, and that file runs with the numbers shown', async () => {
    expect(blocks.at(-1)).toBe(read('docs/examples/bar-remap.yaml'));
    const { runs } = await compareScenario(ok(blocks.at(-1)!), { audit: 'points' });
    const row = (id: string) => {
      const r = runs.find((x) => x.design === id)!;
      const t = r.totals;
      return [
        t['memslot_zap_all_fast'],
        t['memslot_zap_precise'],
        t['sptes_zapped_4k']! + t['sptes_zapped_2m']!,
        t['refaults'],
        t['remote_tlb_flush'],
        r.verdict,
        r.errors,
      ];
    };
    for (const id of ['quirk', 'vm-type', 'slot-flag']) expect(row(id)).toEqual([2, 0, 80, 64, 0, 'ok', []]);
    for (const id of ['quirk-off', 'slot-flag+leafs']) expect(row(id)).toEqual([0, 2, 16, 0, 1, 'ok', []]);
    expect(runs[0]!.totals['ioctl_expected_errors']).toBe(1);
  });
});

describe('errors name what is allowed', () => {
  it('an unknown key lists the allowed keys; a wrong type names the expected one', () => {
    expect(err(doc('  - access: { region: ram, range: 4K }\n'))).toBe(
      "s.yaml:6:28: timeline.0.access.range: unknown key 'range' (allowed: region, offset, length, stride, workingSet, vcpus, kind, private, passes, eachOffset)",
    );
    expect(err(doc('  - access: { region: ram, vcpus: 3 }\n'))).toBe(
      's.yaml:6:35: timeline.0.access.vcpus: expected "all" or list of number; got 3',
    );
    expect(err(doc('  - access: { region: ram, kind: fetch }\n'))).toBe(
      's.yaml:6:34: timeline.0.access.kind: expected "read" | "write" | "exec"; got "fetch"',
    );
    expect(err(doc('  - audit: x\n    expect: EWHAT\n'))).toMatch(
      /^s\.yaml:7:13: timeline\.0\.expect: expected "EPERM" \| "ENOENT" \| .*"EEXIST".*; got "EWHAT"$/,
    );
    expect(err(doc('  - move: ram\n'))).toBe(
      "s.yaml:6:5: timeline.0.to: missing required field 'to' (number)",
    );
  });
  it('-p points at the flag; a huge region and a directory name the path and position', () => {
    const text = doc('  - access: { region: ram, workingSet: $ws }\n').replace(
      'vms:',
      'params: { ws: 16 }\nvms:',
    );
    expect(err(text, { ws: 'abc' })).toBe(
      '-p ws=abc: expected a non-negative integer, hex ("0x…") or size ("64K", "2M", "4G"); got "abc" (used at s.yaml:7:40: timeline.0.access.workingSet)',
    );
    expect(
      err(doc('  - audit: x\n', '  - regions:\n      - { name: ram, gpa: 0, size: 0x4000000000000 }\n')),
    ).toBe(
      "s.yaml:4:36: vms.0.regions.0.size: size 0x4000000000000 is more than the model's host can map at 4k backing (at most 0x10000000000 bytes; a 2m, 1g or thp backing maps more)",
    );
    const r = loadScenario(ROOT + 'docs');
    expect(r).toEqual({ ok: false, error: `${ROOT}docs:1:1: is a directory, not a scenario file` });
  });
  it('the step limit: counted before running, refused past it, overridable', () => {
    const big = doc(
      '  - audit: first\n  - repeat: 1e9\n    steps:\n      - repeat: 1000\n        steps: [ { audit: x } ]\n',
    );
    expect(err(big)).toBe(
      's.yaml:7:5: timeline.1: the timeline unrolls to 1,000,000,000,001 steps (this step: 1,000,000,000,000), more than the limit of 1,000,000; raise it with --max-steps if you mean it',
    );
    const small = doc('  - repeat: 20\n    steps: [ { audit: x }, { audit: y } ]\n');
    expect(err(small, {}, 39)).toMatch(/unrolls to 40 steps .* limit of 39;/);
    expect(parse(small, {}, 40).ok).toBe(true);
    // 200-deep nesting of repeat: 2 is refused at once, not run
    let nested = '[ { audit: x } ]';
    for (let i = 0; i < 200; i++) nested = `[ { repeat: 2, steps: ${nested} } ]`;
    expect(err(`name: s\nvms:\n  - regions: []\ntimeline: ${nested}\n`)).toMatch(
      /unrolls to 1\.61e\+60 steps/,
    );
  });
  it('library headers document only parameters that exist (firmware-boot had a `romBars`)', () => {
    for (const name of libraryNames()) {
      const text = readFileSync(`${LIBRARY_DIR}${name}.yaml`, 'utf8');
      const line = /^# Parameters: (.*(?:\n# .*)*)/m.exec(text);
      if (!line) continue;
      const r = loadScenario(name);
      if (!r.ok) throw new Error(r.error);
      const declared = Object.keys(r.scenario.params ?? {});
      const para = line[1]!.replace(/\n# /g, ' ');
      const named = [...para.matchAll(/(?:^|[,;] )([a-z][A-Za-z]+)(?= \(|=|;|,|\.)/g)].map((m) => m[1]!);
      expect(named.length, name).toBeGreaterThan(0);
      for (const p of named) expect(declared, `${name}: ${p}`).toContain(p);
    }
  });
});

describe('failing calls fail the run unless the step expects them', () => {
  const vm =
    '  - regions:\n      - { name: ram, gpa: 0, size: 2M }\n      - { name: bar, gpa: 0x100000, size: 64K, present: false }\n';
  const quirk = designById('quirk')!;
  it('a BAR placed inside RAM: EEXIST → verdict error, the failed call listed', async () => {
    const r = await runScenario(ok(doc('  - create: bar\n  - delete: bar\n', vm)), quirk);
    expect(r.verdict).toBe('error');
    expect(r.errors).toEqual([
      '#1 create bar: EEXIST KVM_SET_USER_MEMORY_REGION2: EEXIST: gfn range [0x100, 0x110) overlaps memslot 0 [0x0, 0x200)',
      '#2 delete bar: EINVAL KVM_SET_USER_MEMORY_REGION2: EINVAL: cannot delete memslot 1: it does not exist in address space 0',
    ]);
  });
  it('with `expect: EEXIST` the same run is ok; an expected error that does not happen is an error', async () => {
    const r = await runScenario(ok(doc('  - create: bar\n    expect: EEXIST\n', vm)), quirk);
    expect([r.verdict, r.errors, r.totals['ioctl_expected_errors']]).toEqual(['ok', [], 1]);
    const w = await runScenario(ok(doc('  - create: bar\n    expect: EINVAL\n', vm)), quirk);
    expect(w.verdict).toBe('error');
    expect(w.errors[0]).toMatch(/^#1 create bar: EEXIST .* \(the step expects EINVAL\)$/);
    const none = await runScenario(ok(doc('  - access: { region: ram }\n    expect: EFAULT\n')), quirk);
    expect([none.verdict, none.errors]).toEqual([
      'error',
      ['#1 access: expected EFAULT, but no call of the step failed with it'],
    ]);
    // a raw call's flags with bit 31 set reach the ioctl as a u32 under every design, the leafs-only flag
    // ORed in by slot-flag+leafs included: the kernel's unknown-flag EINVAL, not a malformed argument
    const raw =
      '  - memslot: { slot: 5, gpa: 0x400000, size: 4096, flags: 0xffffffff }\n    expect: EINVAL\n';
    for (const id of ['quirk', 'slot-flag+leafs']) {
      const r = await runScenario(ok(doc(raw)), designById(id)!);
      expect([id, r.verdict, r.errors, r.totals['ioctl_expected_errors']]).toEqual([id, 'ok', [], 1]);
    }
    const bad = await runScenario(
      ok(doc(raw.replace('expect: EINVAL', 'expect: EEXIST'))),
      designById('slot-flag+leafs')!,
    );
    expect(bad.errors).toEqual([
      '#1 memslot: EINVAL KVM_SET_USER_MEMORY_REGION2: EINVAL: flags 0xffffffff not valid for a DEFAULT VM (the step expects EEXIST)',
      '#1 memslot: expected EEXIST, but no call of the step failed with it',
    ]);
    // KVM_GET_DIRTY_LOG on a slot without dirty logging is ENOENT: expected, the run is ok
    const enoent = await runScenario(ok(doc('  - dirtyLog: ram\n    expect: ENOENT\n')), quirk);
    expect([enoent.verdict, enoent.errors]).toEqual(['ok', []]);
  });
});

describe('CLI', () => {
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      encoding: 'utf8',
      cwd: ROOT,
    });
  it('exit codes: usage 64, input 2 (a parse error, vcpus: 1e9 ending in verdict error), documented in --help', () => {
    const help = cli('--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('64  usage error');
    expect(help.stdout).toContain('70  internal error');
    expect(cli('run', 'firmware-boot', '--bogus').status).toBe(EXIT.usage);
    expect(cli('frobnicate').status).toBe(EXIT.usage);
    const dir = cli('run', 'docs');
    expect([dir.status, dir.stderr]).toEqual([EXIT.input, 'docs:1:1: is a directory, not a scenario file\n']);
    const huge = cli('run', 'test/scenarios/fixtures/huge-vcpus.yaml');
    expect(huge.status).toBe(EXIT.input);
    expect(huge.stdout).toContain("verdict: error (audit level 'points')");
    expect(huge.stdout).toContain(
      'failed call: setup: EINVAL KVM_CREATE_VCPU: EINVAL: already 1024 vCPUs (KVM_MAX_VCPUS)',
    );
  }, 60000);
  it('compare --audit steps and check agree verdict by verdict, and both name the level', () => {
    const f = 'test/scenarios/fixtures/bugs/precise-zap-no-flush.yaml';
    const verdicts = (out: string) =>
      (JSON.parse(out) as { runs: { design: string; verdict: string; audit: string }[] }).runs.map(
        (r) => `${r.design}:${r.verdict}@${r.audit}`,
      );
    const cmp = cli('compare', f, '--audit', 'steps', '--json');
    const chk = cli('check', f, '--json');
    expect(cmp.status).toBe(EXIT.ok);
    expect(chk.status).toBe(EXIT.violations);
    expect(verdicts(chk.stdout)).toEqual(verdicts(cmp.stdout));
    expect(verdicts(chk.stdout)).toEqual([
      'quirk:ok@steps',
      'quirk-off:violations@steps',
      'vm-type:ok@steps',
      'slot-flag:ok@steps',
      'slot-flag+leafs:violations@steps',
    ]);
    expect(cli('compare', f).stdout).toContain("verdict = invariant checks at audit level 'points'");
  }, 120000);
  it('internal errors are 70, usage errors 64, help 0', () => {
    expect(exitCodeFor(new CommanderError(1, 'commander.unknownOption', 'x'))).toBe(64);
    expect(exitCodeFor(new CommanderError(0, 'commander.helpDisplayed', 'x'))).toBe(0);
    expect(exitCodeFor(new TypeError('boom'))).toBe(70);
  });
  it('compare prints the scenario line with its description cut at a word boundary, never mid-word', () => {
    const dir = mkdtempSync(join(tmpdir(), 'zaplab-desc-'));
    const desc =
      'dirty-log a guest through two migration rounds while the host migrates pages under a racing fault';
    const f = join(dir, 'long-desc.yaml');
    writeFileSync(
      f,
      `name: long-desc\ndescription: ${desc}\n` +
        doc('  - access: { region: ram }\n').slice('name: s\n'.length),
    );
    const r = cli('compare', f);
    rmSync(dir, { recursive: true });
    expect(r.status).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe(
      'long-desc: dirty-log a guest through two migration rounds while the host migrates pages under a…',
    );
  }, 30000);
  it('list cuts descriptions at a word boundary', () => {
    const out = cli('list').stdout.trim().split('\n');
    expect(out.length).toBe(libraryNames().length);
    for (const line of out) {
      expect(line.length).toBeLessThanOrEqual(100);
      const [name, ...rest] = line.split(/\s{2,}/);
      const shown = rest.join('  ');
      const full = readFileSync(`${LIBRARY_DIR}${name}.yaml`, 'utf8')
        .match(/^description:\s*(.+)$/m)![1]!
        .trim();
      if (shown === full) continue;
      expect(shown.endsWith('…')).toBe(true);
      const kept = shown.slice(0, -1);
      expect(full.startsWith(kept)).toBe(true);
      expect(full[kept.length]).toMatch(/[\s,;:(—-]/);
    }
  }, 30000);
});

describe('progress inside a design', () => {
  it('off a TTY: a plain line at most every 5 s, with the design and the step', async () => {
    vi.useFakeTimers();
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const p = await progress('compare x', false);
      p.design(1, 5, 'quirk-off');
      p.step(1, 100);
      expect(write).not.toHaveBeenCalled();
      vi.advanceTimersByTime(6000);
      p.step(40, 100);
      p.step(41, 100);
      expect(write.mock.calls.map((c) => c[0])).toEqual([
        'compare x: quirk-off (design 2/5): step 40/100 (40%), 6 s\n',
      ]);
    } finally {
      write.mockRestore();
      vi.useRealTimers();
    }
  });
});

it('every library scenario still parses', () => {
  for (const f of readdirSync(LIBRARY_DIR).filter((x) => x.endsWith('.yaml'))) {
    const r = loadScenario(f.slice(0, -5));
    expect(r.ok, f).toBe(true);
  }
});
