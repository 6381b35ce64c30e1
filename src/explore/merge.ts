/**
 * `zaplab explore --merge`: the JSON results of shards (or of separate runs of designs) combined into one
 * verdict: per design, the counts summed, exhausted only if every shard was, and the shortest violation
 * any shard found. Bad input is a TypeError naming the file. Model-only file (no kernel counterpart).
 */
import { z } from 'zod';
import type { ConfigResult, DesignResult } from './run.ts';

const statsSchema = z.object({
  complete: z.number(),
  sleepBlocked: z.number(),
  statePruned: z.number(),
  boundCut: z.number(),
  violating: z.number(),
  states: z.number(),
  exhausted: z.boolean(),
  boundHit: z.boolean(),
});
const designSchema = z.object({
  design: z.string(),
  stats: statsSchema,
  executions: z.number(),
  ms: z.number(),
  mode: z.enum(['dfs', 'pct']),
  bounds: z.object({ steps: z.number().nullable(), preemptions: z.number().nullable() }),
  shard: z.object({ index: z.number(), count: z.number() }).optional(),
  violation: z
    .object({ schedule: z.array(z.number()) })
    .passthrough()
    .nullable(),
});
const resultSchema = z.object({
  config: z.string(),
  file: z.string(),
  bugs: z.array(z.string()),
  actors: z.array(z.string()),
  skipped: z.array(z.object({ id: z.string(), why: z.string() })),
  designs: z.array(designSchema),
});

export function mergeResults(inputs: { file: string; text: string }[]): ConfigResult {
  const parsed = inputs.map(({ file, text }) => {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new TypeError(`${file}: not JSON (${(e as Error).message})`);
    }
    const r = resultSchema.safeParse(raw);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new TypeError(
        `${file}: ${i.path.join('.') || '(top level)'}: ${i.message} (expected \`zaplab explore --json\` output)`,
      );
    }
    return { file, r: r.data as unknown as ConfigResult };
  });
  const first = parsed[0]!.r;
  for (const p of parsed)
    if (p.r.config !== first.config)
      throw new TypeError(`${p.file}: configuration '${p.r.config}', not '${first.config}'`);
  const byDesign = new Map<string, DesignResult[]>();
  for (const p of parsed)
    for (const d of p.r.designs) byDesign.set(d.design, [...(byDesign.get(d.design) ?? []), d]);
  const designs = [...byDesign.values()].map(mergeDesign);
  return { ...first, designs };
}

function mergeDesign(parts: DesignResult[]): DesignResult {
  const counts = parts[0]!.shard?.count;
  const seen = new Set(parts.map((p) => p.shard?.index ?? -1));
  // every shard of the split must be there for the space to be covered
  const complete =
    counts === undefined || (seen.size === counts && parts.every((p) => p.shard?.count === counts));
  const sum = (
    k: 'complete' | 'sleepBlocked' | 'statePruned' | 'boundCut' | 'violating' | 'states',
  ): number => parts.reduce((n, p) => n + p.stats[k], 0);
  let violation: DesignResult['violation'] = null;
  for (const p of parts)
    if (
      p.violation !== null &&
      (violation === null || p.violation.schedule.length < violation.schedule.length)
    )
      violation = p.violation;
  return {
    design: parts[0]!.design,
    stats: {
      complete: sum('complete'),
      sleepBlocked: sum('sleepBlocked'),
      statePruned: sum('statePruned'),
      boundCut: sum('boundCut'),
      violating: sum('violating'),
      states: sum('states'),
      exhausted: complete && parts.every((p) => p.stats.exhausted),
      boundHit: parts.some((p) => p.stats.boundHit),
    },
    executions: parts.reduce((n, p) => n + p.executions, 0),
    ms: parts.reduce((n, p) => n + p.ms, 0),
    mode: parts[0]!.mode,
    bounds: parts[0]!.bounds,
    violation,
  };
}
