/**
 * A bundle.json that is not what `zaplab record` writes is named field by field (exit 2 from the CLI),
 * and --kernel takes only a modelled version. Before: a missing `command` or any bad `host` value was
 * "internal error" (exit 70, a TypeError from new Kvm() or `command.join`), and `files: [null]` or a
 * file without a format printed the engine's "Cannot read properties of …".
 */
import { describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInputs } from '../../src/replay/load.ts';
import { ROOT, runCli as cli } from '../cli/run_cli.ts';

const root = ROOT;
const QEMU = join(root, 'test/recorded/replay/handmade-tdp/qemu.trace');

describe('replay bundle.json and --kernel', () => {
  const dir = mkdtempSync(join(tmpdir(), 'zaplab-bundle-'));
  copyFileSync(QEMU, join(dir, 'qemu.trace'));
  const meta = join(dir, 'bundle.json');
  const files = [{ file: 'qemu.trace', format: 'qemu' }];
  const load = (m: object) => {
    writeFileSync(meta, JSON.stringify(m));
    return () => loadInputs([dir], [], {});
  };

  it('names the field that is wrong', () => {
    const cases: [object, string][] = [
      [
        { zaplabBundle: 1, files: [null] },
        'files[0]: expected { file: "<name in the bundle>", format: qemu|strace|ftrace }',
      ],
      [
        { zaplabBundle: 1, files: [{ file: 'qemu.trace' }] },
        'files[0].format: expected one of qemu, strace, ftrace (got undefined)',
      ],
      [
        { zaplabBundle: 1, files, command: 'qemu' },
        'command: expected a list of strings (the VMM command line)',
      ],
      [
        { zaplabBundle: 1, files, pids: ['1'] },
        'pids: expected a list of process ids (non-negative integers)',
      ],
      [{ zaplabBundle: 1, files, host: 'x' }, 'host: expected a mapping (profile, kernel, tdp, tdpMmu, …)'],
      [
        { zaplabBundle: 1, files, host: { tpd: false } },
        'host: unknown key tpd (allowed: profile, kernel, tdp, tdpMmu, honorGuestMtrrs, cdToggleZap, snoopScope, iommus, overrides, bugs)',
      ],
      [
        { zaplabBundle: 1, files, host: { kernel: '9.9' } },
        `host: Kvm: kernel must be one of '6.12', '6.15', '6.17', '6.18', '6.19' (got "9.9")`,
      ],
    ];
    for (const [m, why] of cases) expect(load(m)).toThrow(`${meta}: ${why}`);
    expect(load({ zaplabBundle: 1, files: [{ file: 'none.trace', format: 'qemu' }] })).toThrow(
      `${join(dir, 'none.trace')}: cannot read (ENOENT) (named in ${meta})`,
    );
  });

  it('a bundle without a command replays; a bad host is exit 2; --kernel 9.9 is a usage error', () => {
    writeFileSync(meta, JSON.stringify({ zaplabBundle: 1, files }));
    let r = cli('replay', dir);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('memslot calls: 4 replayed');
    writeFileSync(meta, JSON.stringify({ zaplabBundle: 1, files, host: { tdp: 'yes' } }));
    r = cli('replay', dir);
    expect([r.status, r.stderr]).toEqual([2, `${meta}: host: Kvm: tdp must be a boolean (got "yes")\n`]);
    r = cli('replay', QEMU, '--kernel', '9.9');
    expect([r.status, r.stderr]).toEqual([
      64,
      "error: option '--kernel <version>' argument '9.9' is invalid. Allowed choices are 6.12, 6.15, 6.17, 6.18, 6.19.\n",
    ]);
    rmSync(dir, { recursive: true });
  }, 60000);
});
