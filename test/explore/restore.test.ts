/**
 * The explorer restores the post-setup state from a snapshot before every schedule (program.ts,
 * src/kvm/snapshot.ts's generated per-shape restorers). For every library configuration under every
 * design it allows: after each of the first schedules of the search, a restore gives back exactly the
 * state the execution had after setup, when the snapshot was taken — every object, property (with its attributes), array,
 * Map and Set entry (in order) and typed-array byte reachable from the execution, scratch fields included
 * (HostMm.page, the TDP iterator, the slot cache's lookup count), with the same sharing. A restorer that
 * missed a field, wrote one to the wrong object or left a Map/Set/array changed shows up here as the
 * first differing line.
 */
import { describe, expect, it } from 'vitest';
import { exploreLibraryNames, loadExploreConfig, type ExploreConfig } from '../../src/explore/config.ts';
import { Execution } from '../../src/explore/engine.ts';
import { snapshot, type Snapshot } from '../../src/kvm/snapshot.ts';
import { designIds, executions, searchOptions } from '../../src/explore/run.ts';
import { explore, type Controller, type Program } from '../../src/explore/scheduler.ts';
import type { ExploreViolation } from '../../src/explore/execution_types.ts';
import { designById, type DesignSpec } from '../../src/scenario/designs.ts';
import { graphDump } from './graph_dump.ts';

/** schedules checked per configuration and design (each one's restore is compared) */
const SCHEDULES = 40;

function load(name: string): ExploreConfig {
  const r = loadExploreConfig(name);
  if (!r.ok) throw new Error(r.error);
  return r.config;
}

/** The first line where two dumps differ, with its neighbours in the other (a readable failure). */
function firstDifference(want: string[], got: string[]): string | null {
  for (let i = 0; i < Math.max(want.length, got.length); i++)
    if (want[i] !== got[i]) return `line ${i}:\n  fresh:    ${want[i]}\n  restored: ${got[i]}`;
  return null;
}

/**
 * The engine's program as program.ts runs it (one execution built and set up, a snapshot of it taken
 * with the same opaque objects, a restore before each later run), with the state after every run's
 * restore compared against the dump taken before the snapshot.
 */
class RestoreChecked implements Program<ExploreViolation> {
  private ex: Execution | null = null;
  private snap: Snapshot | null = null;
  private before: string[] = [];
  private opaque: object[] = [];
  checked = 0;
  constructor(
    readonly cfg: ExploreConfig,
    readonly design: DesignSpec,
  ) {}
  run(ctl: Controller): ReturnType<Program<ExploreViolation>['run']> {
    let ex = this.ex;
    if (ex === null || this.snap === null) {
      ex = this.ex = new Execution(this.cfg, this.design, ctl, {});
      this.opaque = [this.cfg, this.design, ex.opts, ctl];
      this.before = graphDump([ex], this.opaque);
      this.snap = snapshot([ex], { opaque: this.opaque });
    } else {
      this.snap.restore();
      ex.ctl = ctl;
    }
    const out = ex.run();
    this.snap.restore();
    const diff = firstDifference(this.before, graphDump([ex], this.opaque));
    expect(diff, `${this.cfg.name} under ${this.design.id}, after schedule ${this.checked + 1}`).toBeNull();
    this.checked++;
    return out;
  }
}

describe('restore between schedules: the state after setup, exactly, on every library configuration', () => {
  for (const name of exploreLibraryNames())
    it(
      name,
      () => {
        const cfg = load(name);
        for (const id of designIds(cfg, {}).ids) {
          const p = new RestoreChecked(cfg, designById(id)!);
          const r = explore(p, { ...searchOptions(cfg, {}), maxExecutions: SCHEDULES });
          expect(p.checked).toBe(executions(r.stats));
          expect(p.checked).toBeGreaterThan(0);
        }
      },
      120_000,
    );
});
