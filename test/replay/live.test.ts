/**
 * Live: record a short QEMU SeaBIOS boot with tracefs, strace and QEMU's trace (`zaplab record`'s code),
 * then replay it: every memslot call answered as the kernel answered, and as many zap-all-fasts as the
 * kernel's kvm_mmu_zap_all_fast events. Skips, saying why, without root, QEMU, strace, tracefs or /dev/kvm.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { record } from '../../src/replay/record.ts';
import { liveSkipReason } from './live_env.ts';
import { loadInputs } from '../../src/replay/load.ts';
import { mergeStreams } from '../../src/replay/merge.ts';
import { replayEvents } from '../../src/replay/replay.ts';

const reason = liveSkipReason();
if (reason) console.log(`live replay test skipped: ${reason}`);

describe.skipIf(reason !== null)('live: record and replay a SeaBIOS boot', () => {
  it("replays with no disagreement and the kernel's zap-all-fast count", async () => {
    const out = mkdtempSync(join(tmpdir(), 'zaplab-live-'));
    try {
      const meta = await record({
        argv: [
          'qemu-system-x86_64',
          '-machine',
          'pc,accel=kvm',
          '-m',
          '64',
          '-display',
          'none',
          '-serial',
          'none',
          '-monitor',
          'none',
          '-nodefaults',
          '-no-reboot',
        ],
        out,
        seconds: 3,
      });
      expect(meta.files.map((f) => f.format)).toEqual(['strace', 'qemu', 'ftrace']);
      const { streams, bundle } = loadInputs([out], [], {});
      const kernel = streams.find((s) => s.report.file === 'kernel.trace')!;
      const kernelZaps = kernel.events.filter((e) => e.kind === 'zapAllFast').length;
      const m = mergeStreams(streams);
      const r = await replayEvents(m.events, m.reports, { host: bundle!.host });
      const calls = streams
        .find((s) => s.report.file === 'strace.txt')!
        .events.filter((e) => e.kind === 'memslot').length;
      // QEMU 7.2's pc machine setup alone makes 9 calls (2 of them DELETEs) before the guest runs
      expect(calls).toBeGreaterThanOrEqual(9);
      expect(kernelZaps).toBeGreaterThanOrEqual(2);
      expect(r.answers).toEqual({ compared: calls, disagreements: [] });
      const zap = r.observed.rows.find((x) => x.key === 'zapAllFast')!;
      expect(zap.observed).toBe(kernelZaps);
      expect(zap.modelled).toBe(kernelZaps);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);
});
