/**
 * Live: record a pc-dimm hotplug and unplug under `zaplab record` (QEMU 7.2 with the 512-byte boot-sector
 * guest of test/recorded/replay/pc-dimm-unplug, which ejects the DIMM as the DSDT's _EJ0 would), driven
 * over QMP by that fixture's qmp_unplug.mjs, then replay it: every memslot answer as the kernel's, as many
 * zap-all-fasts as the kernel's, and the DIMM's slot created and DELETEd. Skips, saying why, without root,
 * QEMU, strace, tracefs or /dev/kvm.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { record } from '../../src/replay/record.ts';
import { liveSkipReason } from './live_env.ts';
import { loadInputs } from '../../src/replay/load.ts';
import { mergeStreams } from '../../src/replay/merge.ts';
import { replayEvents } from '../../src/replay/replay.ts';

const FIXTURE = join(import.meta.dirname, '..', 'recorded', 'replay', 'pc-dimm-unplug');

const reason = liveSkipReason();
if (reason) console.log(`live unplug test skipped: ${reason}`);

describe.skipIf(reason !== null)('live: record and replay a pc-dimm hotplug and unplug', () => {
  it('the DIMM slot is created and DELETEd; answers and zap-all-fasts as the kernel', async () => {
    const out = mkdtempSync(join(tmpdir(), 'zaplab-unplug-'));
    const sock = join(out, 'qmp.sock');
    try {
      const recording = record({
        argv: [
          'qemu-system-x86_64',
          '-machine',
          'pc,accel=kvm',
          '-m',
          '128,slots=2,maxmem=1G',
          '-display',
          'none',
          '-serial',
          'none',
          '-monitor',
          'none',
          '-nodefaults',
          '-qmp',
          `unix:${sock},server=on,wait=off`,
          '-drive',
          `file=${join(FIXTURE, 'boot.img')},format=raw,if=ide,snapshot=on`,
        ],
        out: join(out, 'bundle'),
        seconds: 40,
      });
      const qmp = spawn(process.execPath, [join(FIXTURE, 'qmp_unplug.mjs'), sock], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let log = '';
      qmp.stdout.on('data', (d: Buffer) => void (log += d.toString()));
      qmp.stderr.on('data', (d: Buffer) => void (log += d.toString()));
      const qmpExit = await new Promise<number | null>((res) => qmp.on('exit', res));
      await recording;
      expect({ qmpExit, deleted: log.includes('"DEVICE_DELETED"') }).toEqual({ qmpExit: 0, deleted: true });
      const { streams, bundle } = loadInputs([join(out, 'bundle')], [], {});
      const kernelZaps = streams
        .find((s) => s.report.file === 'kernel.trace')!
        .events.filter((e) => e.kind === 'zapAllFast').length;
      const m = mergeStreams(streams);
      const slots = m.events.filter((e) => e.kind === 'memslot' && e.gpa === 0x100000000);
      expect(slots.map((e) => e.kind === 'memslot' && [e.size, e.ret])).toEqual([
        [0x8000000, 0],
        [0, 0],
      ]);
      const r = await replayEvents(m.events, m.reports, { host: bundle!.host });
      expect(r.answers.disagreements).toEqual([]);
      const zap = r.observed.rows.find((x) => x.key === 'zapAllFast')!;
      expect([zap.observed, zap.modelled]).toEqual([kernelZaps, kernelZaps]);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 90_000);
});
