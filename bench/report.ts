/**
 * Printing for bench suites: one aligned line per measurement, its target where the issues name one,
 * and at the end of `npm run bench` a side-by-side table of the model and the real kernel (same run)
 * for the work both can do here. Benchmarks report; they never fail on speed.
 */
export interface BenchLine {
  name: string;
  value: number;
  unit: string;
  /** the target for this figure: at least (ops/s) or at most (s, ms, µs, B, MiB) `value` */
  target?: { atLeast?: number; atMost?: number };
  /** the name of the real-kernel line (bench/real_kvm) doing the same work, for the side-by-side table */
  kernel?: string;
}

export function fmt(v: number, unit: string): string {
  if (unit === 'ops/s') {
    if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M ops/s`;
    if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k ops/s`;
    return `${v.toFixed(0)} ops/s`;
  }
  return `${v < 10 ? v.toFixed(3) : v.toFixed(1)} ${unit}`;
}

function targetText(l: BenchLine): string {
  const t = l.target;
  if (t === undefined) return '';
  if (t.atLeast !== undefined)
    return `target ≥ ${fmt(t.atLeast, l.unit)}  ${l.value >= t.atLeast ? 'met' : 'NOT met'}`;
  if (t.atMost !== undefined)
    return `target ≤ ${fmt(t.atMost, l.unit)}  ${l.value <= t.atMost ? 'met' : 'NOT met'}`;
  return '';
}

export function report(suite: string, lines: BenchLine[]): void {
  console.log(`\n${suite}`);
  for (const l of lines)
    console.log(`  ${l.name.padEnd(58)} ${fmt(l.value, l.unit).padEnd(16)} ${targetText(l)}`);
}

/** µs per operation of a line (ops/s or a time per op), for comparing the model with the kernel. */
function usPerOp(l: BenchLine): number | null {
  if (l.unit === 'ops/s') return l.value > 0 ? 1e6 / l.value : null;
  if (l.unit === 'µs') return l.value;
  if (l.unit === 'ms') return l.value * 1000;
  return null;
}

/** The model's figures next to the kernel's for the same work, from this run. */
export function reportVersusKernel(all: BenchLine[], realKvmRan = true): void {
  const kernel = new Map(all.filter((l) => l.kernel === undefined).map((l) => [l.name, l]));
  const pairs = all.filter((l) => l.kernel !== undefined);
  if (pairs.length === 0) return;
  console.log(
    '\nmodel vs the real kernel on this machine (same run; µs per operation; ratio = kernel / model)',
  );
  for (const m of pairs) {
    const k = kernel.get(m.kernel!);
    const mu = usPerOp(m);
    const ku = k ? usPerOp(k) : null;
    const row = `  ${m.name.padEnd(58)} model ${mu === null ? '?' : mu.toFixed(3).padStart(9)} µs`;
    if (ku === null || mu === null)
      console.log(
        `${row}   kernel: not measured (${realKvmRan ? 'no usable /dev/kvm: see real_kvm above' : 'the real_kvm suite was not selected'})`,
      );
    else
      console.log(
        `${row}   kernel ${ku.toFixed(3).padStart(9)} µs   model is ${(ku / mu).toFixed(1)}× the kernel's speed`,
      );
  }
}
