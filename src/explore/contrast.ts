/**
 * Why a design is clean where another fails: the violating schedule re-run under a design that came out
 * clean (exhausted, no violation), so the two can be read side by side. The replay is lenient where the
 * designs differ in the choices they offer: an entry naming a resched choice the clean design does not
 * have there is taken as the same thread's other choice, an entry no runnable actor matches is skipped,
 * and once the schedule runs out the lowest-numbered runnable actor goes on to the end. Every step is
 * printed in full (what the diagram cuts: the pfn and memtype an access got). Model-only file.
 */
import type { RunOutcome } from './execution_types.ts';
import { ModelProgram } from './program.ts';
import type { ExploreConfig } from './config.ts';
import type { ConfigResult } from './run.ts';

/** Re-run `schedule` (from a violation under another design) under `design`, leniently. */
export function contrastReplay(cfg: ExploreConfig, design: string, schedule: readonly number[]): RunOutcome {
  const prog = new ModelProgram(cfg, design, { record: true });
  const n = cfg.actors.length;
  let k = 0;
  prog.run({
    choose(enabled) {
      while (k < schedule.length) {
        const want = schedule[k++]!;
        let i = enabled.findIndex((e) => e.actor === want);
        if (i < 0) i = enabled.findIndex((e) => e.actor % n === want % n);
        if (i >= 0) return i;
      }
      return 0;
    },
  });
  return prog.last!;
}

/**
 * For each violation whose configuration has clean designs: the same schedule under the first clean one,
 * step by step. Empty when every design failed or none did.
 */
export function formatContrast(cfg: ExploreConfig, r: ConfigResult): string {
  const clean = r.designs.filter((d) => d.violation === null && d.stats.exhausted);
  if (clean.length === 0) return '';
  const out: string[] = [];
  const seen = new Set<string>();
  for (const d of r.designs) {
    const v = d.violation;
    if (v === null || seen.has(v.schedule.join(','))) continue;
    seen.add(v.schedule.join(','));
    const other = clean[0]!;
    const run = contrastReplay(cfg, other.design, v.schedule);
    out.push(
      `\nwhy ${clean.map((c) => c.design).join(', ')} ${clean.length === 1 ? 'is' : 'are'} clean: the schedule of [${d.design}] under ${other.design}`,
    );
    run.records.forEach((s, i) =>
      out.push(`  ${String(i + 1).padStart(3)} ${r.actors[s.actor]}: ${s.fn}: ${s.what}`),
    );
    out.push(
      run.violation
        ? `  ✗ ${run.violation.id} there too: ${run.violation.message}`
        : `  ${run.ending}: no violation`,
    );
    out.push(
      `  [${d.design}] at step ${v.step + 1}: ${v.steps[v.step]?.fn ?? 'final audit'}: ${v.steps[v.step]?.what ?? ''} (${v.invariant})`,
    );
  }
  return out.join('\n');
}
