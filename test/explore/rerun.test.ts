/**
 * A schedule run again from the restored snapshot ends in exactly the state its first run ended in:
 * every object, property, Map/Set entry and typed-array byte reachable from the execution (graph_dump.ts),
 * including the state made during the run (new shadow pages, SPTE tables, host pages). restore.test.ts
 * checks the state right after a restore; this checks that nothing outside the object graph (a module
 * counter, say) makes a later run differ from the first: the shadow MMU's page ids came from a module
 * counter that no restore could reset, so a re-run named its new shadow pages differently and state
 * hashing could not merge the states of shadow-MMU configurations.
 */
import { describe, expect, it } from 'vitest';
import { exploreLibraryNames, loadExploreConfig, type ExploreConfig } from '../../src/explore/config.ts';
import { Execution } from '../../src/explore/engine.ts';
import { snapshot, type Snapshot } from '../../src/kvm/snapshot.ts';
import { designIds, searchOptions } from '../../src/explore/run.ts';
import { explore, type Controller, type Program } from '../../src/explore/scheduler.ts';
import type { ExploreViolation } from '../../src/explore/execution_types.ts';
import { designById, type DesignSpec } from '../../src/scenario/designs.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import { graphDump } from './graph_dump.ts';

/**
 * shadow-delete-vs-access under quirk, its 4 schedules: the shadow pages left at the end, by id. The setup
 * made pages 1-4 (the root and the tables over the BAR); the DELETE zaps them all (zap-all), and in the
 * last two schedules vCPU 1 enters the guest again after it and loads a new root: page 5, in every run.
 */
const IDS: number[][] = [[], [], [5], [5]];
/** schedules re-run per configuration and design */
const SCHEDULES = 12;

function load(name: string): ExploreConfig {
  const r = loadExploreConfig(name);
  if (!r.ok) throw new Error(r.error);
  return r.config;
}

/**
 * Runs each schedule the search asks for, records its choices and the state it ended in; `rerun`
 * restores the snapshot and runs a recorded schedule again, returning the state it ends in.
 */
class Rerun implements Program<ExploreViolation> {
  ex: Execution | null = null;
  private snap: Snapshot | null = null;
  private opaque: object[] = [];
  readonly runs: { choices: number[]; dump: string[] }[] = [];
  constructor(
    readonly cfg: ExploreConfig,
    readonly design: DesignSpec,
  ) {}

  private once(ctl: Controller): ReturnType<Program<ExploreViolation>['run']> {
    let ex = this.ex;
    if (ex === null || this.snap === null) {
      ex = this.ex = new Execution(this.cfg, this.design, ctl, {});
      this.opaque = [this.cfg, this.design, ex.opts];
      this.snap = snapshot([ex], { opaque: [...this.opaque, ctl] });
    } else {
      this.snap.restore();
      ex.ctl = ctl;
    }
    return ex.run();
  }

  private dump(): string[] {
    // the controller differs between runs: left out, as the snapshot leaves it out
    const ex = this.ex!;
    const ctl = ex.ctl;
    return graphDump([ex], [...this.opaque, ctl]);
  }

  run(ctl: Controller): ReturnType<Program<ExploreViolation>['run']> {
    const choices: number[] = [];
    const out = this.once({
      choose: (enabled, current, key) => {
        const i = ctl.choose(enabled, current, key);
        choices.push(i);
        return i;
      },
    });
    this.runs.push({ choices, dump: this.dump() });
    return out;
  }

  rerun(choices: readonly number[]): string[] {
    let k = 0;
    this.once({ choose: () => choices[k++]! });
    expect(k).toBe(choices.length);
    return this.dump();
  }
}

function firstDifference(want: string[], got: string[]): string | null {
  for (let i = 0; i < Math.max(want.length, got.length); i++)
    if (want[i] !== got[i]) return `line ${i}:\n  first run: ${want[i]}\n  re-run:    ${got[i]}`;
  return null;
}

describe('a schedule run again from the snapshot ends in the state of its first run', () => {
  for (const name of exploreLibraryNames())
    it(
      name,
      () => {
        const cfg = load(name);
        for (const id of designIds(cfg, {}).ids) {
          const p = new Rerun(cfg, designById(id)!);
          explore(p, { ...searchOptions(cfg, {}), maxExecutions: SCHEDULES });
          expect(p.runs.length).toBeGreaterThan(0);
          // in reverse: each re-run comes after other schedules ran (the first of them last of all)
          for (let s = p.runs.length - 1; s >= 0; s--) {
            const diff = firstDifference(p.runs[s]!.dump, p.rerun(p.runs[s]!.choices));
            expect(diff, `${name} under ${id}, schedule ${s + 1} run again`).toBeNull();
          }
        }
      },
      120_000,
    );

  it('shadow pages made during a run are named alike in a re-run (ids counted per MMU)', () => {
    const cfg = load('shadow-delete-vs-access');
    const p = new Rerun(cfg, designById('quirk')!);
    const ids = () => [...shadowMmuOf(p.ex!.vm)!.active].map((sp) => sp.id);
    const first: number[][] = [];
    const prog: Program<ExploreViolation> = {
      run: (ctl) => {
        const out = p.run(ctl);
        first.push(ids());
        return out;
      },
    };
    explore(prog, searchOptions(cfg, {}));
    const again = p.runs.map((r) => (p.rerun(r.choices), ids()));
    expect({ first, again }).toEqual({ first: IDS, again: IDS });
  });
});
