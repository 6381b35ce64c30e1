/**
 * Chrome trace-event JSON (the format Perfetto and chrome://tracing open), written by our own code.
 * One process per (design, VM), one thread per vCPU plus "memslots/MMU" and "timeline" threads.
 * Timestamps are on the *modelled* clock (cost.ts constants), not wall time: a fault advances the clock
 * by its modelled cost. Events come from the model's tracepoint sink; the recorder only reads them.
 * Format: https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU
 */
import type { AnyTraceEvent } from '../kvm/kvm_trace.ts';
import { DEFAULT_COSTS } from '../metrics/cost.ts';

export interface TraceEvent {
  name: string;
  ph: 'X' | 'i' | 'M';
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  s?: 'g' | 'p' | 't';
  args?: Record<string, unknown>;
}

const TID_MMU = 10000;
const TID_TIMELINE = 10001;
/** Keep files loadable: beyond this many events only counts are kept. */
const MAX_EVENTS = 250_000;

export class TraceRecorder {
  readonly events: TraceEvent[] = [];
  dropped = 0;
  private clockNs = 0;
  private nextPid = 1;

  /** A new process lane (one per design × VM); returns the sink to install and a step marker. */
  lane(name: string): { pid: number; sink: (ev: AnyTraceEvent) => void; mark: (label: string) => void } {
    const pid = this.nextPid++;
    this.push({ name: 'process_name', ph: 'M', ts: 0, pid, tid: 0, args: { name } });
    this.push({ name: 'thread_name', ph: 'M', ts: 0, pid, tid: TID_MMU, args: { name: 'memslots / MMU' } });
    this.push({ name: 'thread_name', ph: 'M', ts: 0, pid, tid: TID_TIMELINE, args: { name: 'timeline' } });
    const named = new Set<number>();
    const vcpuTid = (id: number): number => {
      if (!named.has(id)) {
        named.add(id);
        this.push({ name: 'thread_name', ph: 'M', ts: 0, pid, tid: id, args: { name: `vCPU ${id}` } });
      }
      return id;
    };
    const sink = (ev: AnyTraceEvent): void => this.onEvent(pid, ev, vcpuTid);
    const mark = (label: string): void =>
      this.push({ name: label, ph: 'i', s: 'p', ts: this.us(), pid, tid: TID_TIMELINE });
    return { pid, sink, mark };
  }

  private us(): number {
    return this.clockNs / 1000;
  }

  private push(e: TraceEvent): void {
    if (this.events.length < MAX_EVENTS || e.ph === 'M') this.events.push(e);
    else this.dropped++;
  }

  private onEvent(pid: number, ev: AnyTraceEvent, vcpuTid: (id: number) => number): void {
    switch (ev.name) {
      case 'kvm_page_fault': {
        const dur = DEFAULT_COSTS.refault4k.ns;
        this.push({
          name: 'EPT violation',
          ph: 'X',
          ts: this.us(),
          dur: dur / 1000,
          pid,
          tid: vcpuTid(ev.vcpuId),
          args: { gpa: '0x' + ev.gpa.toString(16), errorCode: ev.errorCode },
        });
        this.clockNs += dur;
        break;
      }
      case 'kvm_tlb_flush':
        this.push({
          name: `TLB flush (${ev.reason})`,
          ph: 'i',
          s: 't',
          ts: this.us(),
          pid,
          tid: vcpuTid(ev.vcpuId),
        });
        break;
      case 'kvm_mmu_zap_all_fast':
        this.push({
          name: 'kvm_mmu_zap_all_fast',
          ph: 'i',
          s: 'p',
          ts: this.us(),
          pid,
          tid: TID_MMU,
          args: { mmuValidGen: ev.mmuValidGen },
        });
        break;
      case 'kvm_mmu_zap_memslot':
        this.push({
          name: 'kvm_mmu_zap_memslot',
          ph: 'i',
          s: 't',
          ts: this.us(),
          pid,
          tid: TID_MMU,
          args: { slot: ev.slot, npages: ev.npages },
        });
        break;
      case 'kvm_set_user_memory_region':
        this.push({
          name: `memslot ${ev.change}`,
          ph: 'X',
          ts: this.us(),
          dur: 10,
          pid,
          tid: TID_MMU,
          args: {
            slot: ev.slot,
            gpa: '0x' + ev.gpa.toString(16),
            size: '0x' + ev.size.toString(16),
            flags: ev.flags,
          },
        });
        this.clockNs += 10_000;
        break;
      case 'kvm_fault_retry':
        this.push({
          name: 'fault retry',
          ph: 'i',
          s: 't',
          ts: this.us(),
          pid,
          tid: vcpuTid(ev.vcpuId),
          args: { reason: ev.reason },
        });
        break;
      default:
        break; // SPTE-level events are too many to draw; the counts carry them
    }
  }

  /** The JSON document (object form, so metadata rides along). */
  toJSON(): object {
    return {
      traceEvents: this.events,
      displayTimeUnit: 'ns',
      otherData: { clock: 'modelled (zaplab cost model), not wall time', droppedEvents: this.dropped },
    };
  }
}
