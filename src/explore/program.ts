/**
 * The program the scheduler explores (scheduler.ts's Program): one configuration under one design, built
 * and set up once, then every run restored from a snapshot of that state (snapshot.ts) and executed by
 * the engine (engine.ts); and the replay of one schedule with its step records.
 * Model-only file (no kernel counterpart).
 */
import { designById, type DesignSpec } from '../scenario/designs.ts';
import type { Controller, Ending, Program } from './scheduler.ts';
import type { ExploreConfig } from './config.ts';
import { Execution } from './engine.ts';
import type { ExploreViolation, RunOptions, RunOutcome } from './execution_types.ts';
import { snapshot, type Snapshot } from '../kvm/snapshot.ts';

export class ModelProgram implements Program<ExploreViolation> {
  readonly design: DesignSpec;
  /** the outcome of the last run (records when asked for) */
  last: RunOutcome | null = null;

  constructor(
    readonly cfg: ExploreConfig,
    designId: string,
    readonly opts: RunOptions = {},
  ) {
    const d = designById(designId);
    if (d === undefined) throw new TypeError(`unknown design '${designId}'`);
    this.design = d;
  }

  /** the execution state after setup, built once and restored from `base` before every later run */
  private ex: Execution | null = null;
  private base: Snapshot | null = null;

  run(ctl: Controller): { ending: Ending; violation?: ExploreViolation; steps: number } {
    let ex = this.ex;
    if (ex === null || this.base === null) {
      ex = new Execution(this.cfg, this.design, ctl, this.opts);
      // Everything the execution reaches (the Kvm, the checker, the runner's contexts, the engine's own
      // fields) except the constant configuration and the scheduler's controller.
      this.base = snapshot([ex], { opaque: [this.cfg, this.design, this.opts, ctl] });
      this.ex = ex;
    } else {
      this.base.restore();
      ex.ctl = ctl;
    }
    const out = ex.run();
    this.last = out;
    return out;
  }

  /** Put the execution back in the state every run starts from (after setup); a no-op before the first run. */
  reset(): void {
    this.base?.restore();
  }

  /** What one restore copies (the bench reports it). */
  snapshotSize(): ReturnType<Snapshot['size']> | null {
    return this.base?.size() ?? null;
  }
}

/** Re-run one schedule (actor indexes in order; pseudo-actor n+i = actor i yielding mmu_lock). */
export function replaySchedule(
  cfg: ExploreConfig,
  designId: string,
  schedule: readonly number[],
  opts: RunOptions = {},
): RunOutcome {
  const prog = new ModelProgram(cfg, designId, { record: true, ...opts });
  let k = 0;
  prog.run({
    choose(enabled) {
      if (k >= schedule.length) return -1;
      const want = schedule[k++]!;
      const i = enabled.findIndex((e) => e.actor === want);
      if (i < 0)
        throw new TypeError(
          `schedule step ${k}: actor ${want} cannot run there (runnable: ${enabled.map((e) => e.actor).join(', ')})`,
        );
      return i;
    },
  });
  return prog.last!;
}
