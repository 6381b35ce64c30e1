/**
 * Helpers of the reader property tests that hold a reader to its frozen predecessor (old_ftrace/,
 * old_readers/): a reader's whole answer as one comparable string (every event with its keys in order, the
 * report, or the error --strict throws), and random character mutations of a line (ASCII and characters
 * outside it, which the byte readers map to one marker byte).
 */
import fc from 'fast-check';
import type { Parsed, ReadOptions } from '../../src/replay/events.ts';

export type Read = (text: string, file: string, opts?: ReadOptions) => Parsed;

export function answer(read: Read, text: string, opts: ReadOptions, file = 'trace'): string {
  try {
    const r = read(text, file, opts);
    return JSON.stringify({ ev: r.events.map((e) => [Object.keys(e), e]), rep: r.report }, (_, v: unknown) =>
      typeof v === 'number' && !Number.isFinite(v) ? `#${v}` : v === undefined ? '#undef' : v,
    );
  } catch (e) {
    return `THROW ${(e as Error).constructor.name} ${(e as Error).message}`;
  }
}

/** Characters outside ASCII (spaces String.prototype.trim removes among them), a tab and a CR. */
export const ODD = ['\u00a0', '\u2028', '\u3000', '\u00e9', '\u4e2d', '\t', '\r', '\ufeff', '\ud83d\ude00'];

/** A character inserted, deleted or replaced at a random place (one of `ascii`, or one of ODD). */
export const mutation = (ascii: string): fc.Arbitrary<[number, number, string]> =>
  fc.tuple(fc.nat(), fc.constantFrom(0, 1, 2), fc.constantFrom(...ascii, ...ODD));

export function mutate(l: string, muts: [number, number, string][]): string {
  for (const [at, op, c] of muts) {
    const p = at % (l.length + 1);
    l = op === 0 ? l.slice(0, p) + c + l.slice(p) : l.slice(0, p) + (op === 1 ? '' : c) + l.slice(p + 1);
  }
  return l;
}

/** The same text repeated until it spans several of the readers' 64 k chunks (ends at random lines). */
export function longText(parts: string[], pad: number): string {
  let text = parts.join('\n');
  while (text.length < 200_000) text += `\n${' '.repeat(pad)}${parts.join('\n')}`;
  return text;
}
