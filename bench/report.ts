/** Printing for bench suites: one aligned line per measurement. */
export interface BenchLine {
  name: string;
  value: number;
  unit: string;
}

function fmt(v: number, unit: string): string {
  if (unit === 'ops/s') {
    if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M ops/s`;
    if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k ops/s`;
    return `${v.toFixed(0)} ops/s`;
  }
  return `${v < 10 ? v.toFixed(3) : v.toFixed(1)} ${unit}`;
}

export function report(suite: string, lines: BenchLine[]): void {
  console.log(`\n${suite}`);
  for (const l of lines) console.log(`  ${l.name.padEnd(58)} ${fmt(l.value, l.unit)}`);
}
