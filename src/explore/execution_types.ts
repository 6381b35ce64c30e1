/**
 * What one explorer execution is made of and gives back, shared by the engine (engine.ts), the actors,
 * the program the scheduler runs, the oracle and the output: the runtime state of an actor, a recorded
 * step, a violation as the explorer reports it, and a run's options and outcome.
 * Model-only file (no kernel counterpart).
 */
import type { Ending } from './scheduler.ts';
import type { Pending } from './actors.ts';

/** One executed step, for race diagrams and replays. */
export interface StepRecord {
  /** actor index (its column) */
  actor: number;
  /** the kernel function the step is in */
  fn: string;
  /** what the step did */
  what: string;
  /** the model's trace lines during the step (replays with traceSteps) */
  trace?: string[];
}

export interface ExploreViolation {
  id: string;
  message: string;
  gfn?: number;
  pfn?: number;
  /** index of the step after which it was found (its row in the race diagram); -1 = the final audit */
  step: number;
  trace: string[];
}

export interface ActorRt {
  idx: number;
  name: string;
  vcpu: number;
  gen: Generator<Pending, void, void>;
  pending: Pending | null;
  /** suspended inside a stepping hook (resuming returns from the hook) */
  inHook: boolean;
  /** SRCU read section id while inside one (kvm->srcu held across the fault path), 0 outside */
  srcu: number;
  /**
   * Where the actor stands when its pending step is the first of one of its steps (step index, and the
   * page of a multi-page access): its local state is then that position and nothing else. null inside a
   * step (a fault between its halves, a notifier between start and end): state hashing waits there.
   */
  at: string | null;
}

export interface RunOptions {
  /** record every step (race diagrams, replays) */
  record?: boolean;
  /** give the scheduler a state key where one is sound (state hashing) */
  stateKeys?: boolean;
  /** also keep the checker's trace lines of every step (replay --trace) */
  traceSteps?: boolean;
}

export interface RunOutcome {
  ending: Ending;
  violation?: ExploreViolation;
  steps: number;
  records: StepRecord[];
}
