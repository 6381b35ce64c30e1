/**
 * Traces saved with CRLF line ends or a UTF-8 byte-order mark read as the same events as the original:
 * before, every line of a CRLF QEMU trace, strace or kernel trace was malformed (the CR ended up in the
 * last field: `expected a number for ret, got "0"`), and a BOM hid the first record.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInputs, plainLines, readText } from '../../src/replay/load.ts';

const REC = new URL('../recorded/replay/', import.meta.url).pathname;

describe('trace line ends', () => {
  it('plainLines drops a BOM and turns CRLF into LF, leaving lone CRs', () => {
    expect(plainLines('\uFEFFa\r\nb\r\nc')).toBe('a\nb\nc');
    expect(plainLines('a\rb\n')).toBe('a\rb\n');
  });

  it('CRLF + BOM copies of the three formats give the same events and reports as the originals', () => {
    const dir = mkdtempSync(join(tmpdir(), 'zaplab-crlf-'));
    const originals = [
      join(REC, 'handmade-tdp/qemu.trace'),
      join(REC, 'handmade-tdp/kernel.trace'),
      join(REC, 'pc-boot/strace.txt.gz'),
    ];
    const copies = originals.map((f, i) => {
      const crlf = '\uFEFF' + readText(f).replace(/\n/g, '\r\n');
      const out = join(dir, `copy${i}${f.endsWith('.gz') ? '.txt.gz' : '.trace'}`);
      writeFileSync(out, f.endsWith('.gz') ? gzipSync(crlf) : crlf);
      return out;
    });
    expect(readFileSync(copies[0]!, 'utf8')).toContain('ret=0\r\n');
    for (const [i, f] of originals.entries()) {
      const a = loadInputs([f], [], {}).streams[0]!;
      const b = loadInputs([copies[i]!], [], {}).streams[0]!;
      expect(b.report.malformed).toEqual([]);
      expect({ ...b.report, file: '' }).toEqual({ ...a.report, file: '' });
      expect(b.events.length).toBeGreaterThan(0);
      expect(b.events).toEqual(a.events);
    }
    rmSync(dir, { recursive: true });
  });
});
