/**
 * The real /dev/kvm's memslot and fault costs through the backend (src/backends/kvm/bench_real.ts);
 * prints a skip line where /dev/kvm is not usable.
 */
import type { BenchLine } from './report.ts';
import { run as runReal } from '../src/backends/kvm/bench_real.ts';

export async function run(): Promise<BenchLine[]> {
  return runReal();
}
