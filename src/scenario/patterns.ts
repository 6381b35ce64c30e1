/**
 * The guest addresses an access pattern touches (the scenario's `access` and `accept` steps): a plain
 * range is arithmetic (every stride from a start), a working set a seeded partial shuffle that holds only
 * its own offsets. Model-only file.
 */
import type { AccessPattern } from './schema.ts';
import type { ExecCtx, RegionState } from './steps.ts';

const PAGE = 4096;

/**
 * The addresses a pattern touches, in order: every stride from `start`, or (picked) a seeded random
 * working set. No array per page: a plain range is arithmetic, a working set holds only its own offsets.
 */
export interface PatternOffsets {
  n: number;
  start: number;
  stride: number;
  /** the working set's offsets, or null for the plain range */
  picked: Float64Array | null;
}

export const offsetAt = (o: PatternOffsets, i: number): number =>
  o.picked !== null ? o.picked[i]! : o.start + i * o.stride;

/**
 * The offsets `p` touches in region r, in this repeat iteration of x. A working set is drawn once per
 * seed key where x keeps them (`patterns`: the runner's, whose generator is a function of the key alone,
 * so the draw would be the same), else each time (the explorer's generator is Math.random).
 */
export function patternOffsets(
  x: Pick<ExecCtx, 'iter' | 'seeded' | 'patterns'>,
  r: RegionState,
  p: AccessPattern,
): PatternOffsets {
  const start = (p.offset ?? 0) + (p.eachOffset ?? 0) * x.iter;
  const len = p.length ?? r.decl.size - start;
  const stride = p.stride ?? PAGE;
  const n = Math.max(0, Math.ceil(len / stride));
  if (p.workingSet === undefined || p.workingSet >= n) return { n, start, stride, picked: null };
  // partial Fisher–Yates, seeded by the scenario seed and the pattern itself: the same pattern touches
  // the same pages every time (that is what a working set is), identically in every design. Sparse: only
  // the positions a swap moved are stored (idx[k] = k otherwise), so it costs the working set, not n.
  const key = `${p.region}:${start}:${len}:${stride}:${p.workingSet}`;
  const drawn = x.patterns?.get(key);
  if (drawn !== undefined) return drawn;
  const rand = x.seeded(key);
  const moved = new Map<number, number>();
  const picked = new Float64Array(p.workingSet);
  for (let i = 0; i < p.workingSet; i++) {
    const j = i + Math.floor(rand() * (n - i));
    const vi = moved.get(i) ?? i;
    const vj = moved.get(j) ?? j;
    moved.set(j, vi);
    picked[i] = start + vj * stride;
  }
  const offs = { n: p.workingSet, start, stride, picked };
  x.patterns?.set(key, offs);
  return offs;
}
