/**
 * `zaplab sweep` on a terminal (util-linux `script` gives it a pty): a progress bar on stderr, the
 * cheapest design in green; NO_COLOR=1 keeps the bar but drops every colour. Without a TTY: one plain
 * line per finished run (checked in report.test.ts through the CLI). Skips, saying so, without `script`.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const ROOT = new URL('../..', import.meta.url).pathname;
const SCRIPT = '/usr/bin/script';
const have = existsSync(SCRIPT);
if (!have) console.warn(`sweep TTY test skipped: ${SCRIPT} (util-linux) not found`);

const onTty = (env: Record<string, string>) =>
  spawnSync(
    SCRIPT,
    [
      '-qfec',
      `${process.execPath} --import tsx src/cli/main.ts sweep memory-hotplug -p unplug=1,2 -p dimms=2 -p ramSet=4 --design quirk,quirk-off --workers 0`,
      '/dev/null',
    ],
    {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...withoutNoColor(), ...env },
    },
  );

/**
 * A user's terminal: no NO_COLOR, and no CI variable (Node's colour detection, used by styleText, turns
 * colours off under an unknown CI), with a TERM that has colours (a CI runner may have none).
 */
function withoutNoColor(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, TERM: 'xterm-256color' };
  delete e['NO_COLOR'];
  delete e['CI'];
  delete e['FORCE_COLOR'];
  return e;
}

describe.skipIf(!have)('sweep on a TTY', () => {
  it('draws a progress bar and colours; NO_COLOR drops the colours only', () => {
    const coloured = onTty({});
    expect(coloured.status).toBe(0);
    expect(coloured.stdout).toMatch(/sweep \[[█░]+\] 4\/4/);
    expect(coloured.stdout).toContain('\x1b[32m'); // green: cheapest design, ok verdicts
    expect(coloured.stdout).not.toMatch(/\[\d\/4\] unplug=/); // no plain progress lines on a TTY
    const plain = onTty({ NO_COLOR: '1' });
    expect(plain.status).toBe(0);
    expect(plain.stdout).toMatch(/sweep \[[█░]+\] 4\/4/);
    expect(plain.stdout).not.toMatch(/\x1b\[3\dm/);
    expect(plain.stdout).toContain('memory-hotplug: 4 runs (dimms=2 ramSet=4)');
  });
});
