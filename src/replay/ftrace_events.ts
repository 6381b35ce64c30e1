/**
 * The texts of the kvm/kvmmmu tracepoints the replay reads, one reader per event, for the tracefs and
 * trace-cmd readers' records (ftrace.ts frames a record and hands its event text here by event id). Texts
 * are read by field name, not position, because they differ across versions; a missing field is counted
 * under `missingFields` and the event skipped. Formats (TP_printk), checked against the running 6.18.44
 * kernel's events/<sys>/<event>/format files and linux-next's arch/x86/kvm/mmu/mmutrace.h and
 * arch/x86/kvm/trace.h:
 *   kvm_page_fault            vcpu %u rip 0x%lx address 0x%016llx error_code 0x%llx
 *   kvm_mmu_set_spte          gfn %llx spte %llx (%s%s%s%s) level %d at %llx
 *   kvm_tdp_mmu_spte_changed  as id %d gfn %llx level %d old_spte %llx new_spte %llx
 *   kvm_mmu_spte_requested    gfn %llx pfn %llx level %d
 *   kvm_mmu_get_page          sp gen %u gfn %llx l%u … root %u sync|unsync new|existing
 *   kvm_mmu_prepare_zap_page  sp gen %u gfn %llx l%u … root %u sync|unsync
 *   kvm_mmu_zap_all_fast      kvm-mmu-valid-gen %u used_pages %x
 *   kvm_unmap_hva_range       mmu notifier unmap range: %#016lx -- %#016lx
 * trace-cmd report (3.1, libtraceevent's kvm plugin) prints kvm_mmu_get_page/prepare_zap_page in its own
 * format (read here too). An event text in the kernel's own format is read as a template, its values
 * parsed as the template goes (scan_bytes.ts: the reader's bytes, literal words compared four bytes at a
 * time); any other text (another version's, reordered, odd spacing) has its fields found by name
 * (FieldFinder), with the same answers (test/replay/ftrace_bytes.property.test.ts holds both to the frozen
 * reader in old_ftrace/).
 * Model-only file (no kernel counterpart).
 */
import { countIn } from './events.ts';
import {
  B_CREATED,
  B_WRITE,
  K_FAULT,
  K_GET_PAGE,
  K_LEAF_ZAP,
  K_PREPARE_ZAP_PAGE,
  K_ZAP_ALL_FAST,
  S_KERNEL,
  V_GEN,
} from './event_table.ts';
import { TraceReader } from './trace_reader.ts';
import { isLeaf, present } from './ftrace_record.ts';
import { FieldFinder, Needle, hexAt } from './scan.ts';
import {
  bytesStop,
  Word,
  hexTokenB,
  hexTokenLow12B,
  intTokenB,
  litAt,
  numEnd,
  valueAt,
} from './scan_bytes.ts';

/**
 * The literal words of the kernel's TP_printk texts (the header's formats), for reading a text as a
 * template (scan.ts litAt/numEnd/valueAt) before asking the FieldFinders.
 */
const T = {
  asId: Word.of('as id '),
  gfn: Word.of(' gfn '),
  gfnAt0: Word.of('gfn '),
  level: Word.of(' level '),
  old: Word.of(' old_spte '),
  new: Word.of(' new_spte '),
  spGen: Word.of('sp gen '),
  gen: Word.of('kvm-mmu-valid-gen '),
  vcpu: Word.of('vcpu '),
  rip: Word.of(' rip '),
  address: Word.of(' address '),
  errorCode: Word.of(' error_code '),
  pfn: Word.of(' pfn '),
  spte: Word.of(' spte '),
  permOpen: Word.of(' ('),
  permLevel: Word.of(') level '),
};

/** The bytes of kvm_mmu_set_spte's permission string (%s%s%s%s of r|-, w|-, x|-, u|-). */
const PERM = new Uint8Array(256);
for (const c of 'rwxu-') PERM[c.charCodeAt(0)] = 1;

/** What an event's text gave: undefined (stored, or counted under missingFields) or what was expected. */
type Result = string | undefined;

/**
 * The event-text half of a file's reader: the per-file field finders, and the record being stored (its
 * time, thread and line, set by the framing reader before build()); events go to the table, by column.
 */
export abstract class FtraceEventReader extends TraceReader {
  private readonly lSpace = new Needle(' l');
  private readonly f = {
    gfn: new FieldFinder('gfn'),
    level: new FieldFinder('level'),
    old: new FieldFinder('old_spte'),
    new: new FieldFinder('new_spte'),
    address: new FieldFinder('address'),
    errorCode: new FieldFinder('error_code'),
    gen: new FieldFinder('kvm-mmu-valid-gen'),
  };
  // the record being stored
  protected t = 0;
  protected tid = 0;
  protected n = 0;

  /** A FieldFinder's answer (a position in the text, or -1) as a position in the chunk. */
  private chunkAt(i: number): number {
    return i < 0 ? -1 : i - this.o;
  }

  private missing(ev: string, field: string): undefined {
    countIn(this.report.missingFields, `${ev}.${field}`);
    return undefined;
  }

  /** Read and store the event text [ts, te) of event `id` (an index in ftrace_record.ts's EVENTS). */
  protected build(id: number, ts: number, te: number): Result {
    switch (id) {
      case 0:
        return this.pageFault(ts, te);
      case 1:
        return this.setSpte(ts, te);
      case 2:
        return this.tdpSpteChanged(ts, te);
      case 3:
        return this.spteRequested(ts, te);
      case 4:
        return this.shadowPage(ts, te, K_GET_PAGE);
      case 5:
        return this.shadowPage(ts, te, K_PREPARE_ZAP_PAGE);
      case 6:
        return this.zapAllFast(ts, te);
      default:
        return this.unmapHvaRange(ts, te);
    }
  }

  private pageFault(ts: number, te: number): Result {
    const { b, dv, o, s } = this;
    const end = te - o;
    // `vcpu %u rip 0x%lx address 0x%016llx error_code 0x%llx`, else by name
    let p = litAt(dv, numEnd(b, litAt(dv, ts - o, end, T.vcpu), end), end, T.rip);
    let a = valueAt(b, litAt(dv, numEnd(b, p, end), end, T.address), end);
    let e = valueAt(b, litAt(dv, numEnd(b, a, end), end, T.errorCode), end);
    if (e === -1) {
      p = this.f.address.value(s, ts, te);
      a = p < 0 ? -1 : p - o;
      p = this.f.errorCode.value(s, ts, te);
      e = p < 0 ? -1 : p - o;
    }
    if (a < 0) return this.missing('kvm_page_fault', 'address');
    if (e < 0) return this.missing('kvm_page_fault', 'error_code');
    const addr = hexTokenB(b, a, end);
    const ec = hexTokenB(b, e, end);
    if (Number.isNaN(addr) || Number.isNaN(ec)) return 'kvm_page_fault: expected hex address and error_code';
    this.fault(3, Math.floor(addr / 4096), 0, (ec & 2) !== 0);
    return undefined;
  }

  /** A fault row; tp indexes FAULT_TPS. */
  private fault(tp: number, gfn: number, level: number, write: boolean): void {
    this.table.pushGfn(K_FAULT, this.t, this.tid, this.n, gfn, level, write ? B_WRITE : 0, tp);
  }

  // gfnLevel's result (no object per event)
  private gfn = 0;
  private level = 0;

  /**
   * Read gfn and level of an SPTE event into this.gfn/this.level: true, or false after counting a missing
   * field, or what was expected. `l` is where the kernel's text puts the level's value (chunk), -1 when the
   * text is not the kernel's: then both are found by name.
   */
  private gfnLevel(ev: string, ts: number, te: number, g: number, l: number): boolean | string {
    const { s, o } = this;
    if (l === -1) {
      g = this.f.gfn.value(s, ts, te);
      l = this.f.level.value(s, ts, te);
      g = g < 0 ? -1 : g - o;
      l = l < 0 ? -1 : l - o;
    }
    if (g < 0) return this.missing(ev, 'gfn') ?? false;
    if (l < 0) return this.missing(ev, 'level') ?? false;
    this.gfn = hexTokenB(this.b, g, te - o);
    this.level = intTokenB(this.b, l, te - o);
    return Number.isNaN(this.gfn) || Number.isNaN(this.level)
      ? `${ev}: expected hex gfn and a decimal level`
      : true;
  }

  private setSpte(ts: number, te: number): Result {
    const { b, dv, o } = this;
    const end = te - o;
    // `gfn %llx spte %llx (%s%s%s%s) level %d at %llx`: the permission token holds '(' (no key)
    const g = valueAt(b, litAt(dv, ts - o, end, T.gfnAt0), end);
    let p = litAt(dv, numEnd(b, litAt(dv, numEnd(b, g, end), end, T.spte), end), end, T.permOpen);
    if (p !== -1) while (p < end && PERM[b[p]!] === 1) p++;
    const l = valueAt(b, litAt(dv, p, end, T.permLevel), end);
    const v = this.gfnLevel('kvm_mmu_set_spte', ts, te, g, l);
    if (v !== true) return v || undefined;
    // the permission string "(rwxu)": the first "(" followed by r|- and w|-
    let write = false;
    for (let p = ts - o; p + 2 < te - o; p++) {
      if (b[p] !== 40) continue;
      const r = b[p + 1];
      const w = b[p + 2];
      if ((r === 114 || r === 45) && (w === 119 || w === 45)) {
        write = w === 119;
        break;
      }
    }
    this.fault(0, this.gfn, this.level, write);
    return undefined;
  }

  private tdpSpteChanged(ts: number, te: number): Result {
    const { b, dv } = this;
    const e = te - this.o;
    // `as id %d gfn %llx level %d old_spte %llx new_spte %llx`, each value read as the template goes
    // (where its reading stopped is where its token ended: the bytes read are number bytes); else by name
    let gfn = NaN;
    let level = NaN;
    // only the low bits of an SPTE are read (present, huge page, writable)
    let ol = -1;
    const g = valueAt(b, litAt(dv, numEnd(b, litAt(dv, ts - this.o, e, T.asId), e), e, T.gfn), e);
    let l = -1;
    let o = -1;
    let nw = -1;
    if (g !== -1) {
      gfn = hexTokenB(b, g, e);
      l = valueAt(b, litAt(dv, bytesStop, e, T.level), e);
    }
    if (l !== -1) {
      level = intTokenB(b, l, e);
      o = valueAt(b, litAt(dv, bytesStop, e, T.old), e);
    }
    if (o !== -1) {
      ol = hexTokenLow12B(b, o, e);
      nw = valueAt(b, litAt(dv, bytesStop, e, T.new), e);
    }
    if (nw === -1) return this.tdpByName(ts, te);
    return this.tdpStore(gfn, level, ol, hexTokenLow12B(b, nw, e));
  }

  /** kvm_tdp_mmu_spte_changed of any other text: its fields found by name (out of line: a rare path). */
  private tdpByName(ts: number, te: number): Result {
    const { b, f, s } = this;
    const e = te - this.o;
    const g = this.chunkAt(f.gfn.value(s, ts, te));
    const l = this.chunkAt(f.level.value(s, ts, te));
    const o = this.chunkAt(f.old.value(s, ts, te));
    const nw = this.chunkAt(f.new.value(s, ts, te));
    const ev = 'kvm_tdp_mmu_spte_changed';
    if (g < 0) return this.missing(ev, 'gfn');
    if (l < 0) return this.missing(ev, 'level');
    if (o < 0) return this.missing(ev, 'old_spte');
    if (nw < 0) return this.missing(ev, 'new_spte');
    return this.tdpStore(
      hexTokenB(b, g, e),
      intTokenB(b, l, e),
      hexTokenLow12B(b, o, e),
      hexTokenLow12B(b, nw, e),
    );
  }

  /** A kvm_tdp_mmu_spte_changed read: a fault, a leaf zap or a count; or what was expected. */
  private tdpStore(gfn: number, level: number, ol: number, nl: number): Result {
    if (Number.isNaN(gfn) || Number.isNaN(level) || ol < 0 || nl < 0)
      return 'kvm_tdp_mmu_spte_changed: expected hex gfn/old_spte/new_spte and a decimal level';
    if (!present(ol) && present(nl) && isLeaf(nl, level)) this.fault(1, gfn, level, (nl & 2) !== 0);
    else if (present(ol) && isLeaf(ol, level) && !present(nl))
      this.table.pushGfn(K_LEAF_ZAP, this.t, this.tid, this.n, gfn, level, 0);
    else countIn(this.report.unknown, 'kvm_tdp_mmu_spte_changed (non-leaf or leaf-to-leaf)');
    return undefined;
  }

  private spteRequested(ts: number, te: number): Result {
    const { b, dv, o } = this;
    const end = te - o;
    // `gfn %llx pfn %llx level %d`
    const g = valueAt(b, litAt(dv, ts - o, end, T.gfnAt0), end);
    const p = litAt(dv, numEnd(b, g, end), end, T.pfn);
    const l = valueAt(b, litAt(dv, numEnd(b, p, end), end, T.level), end);
    const v = this.gfnLevel('kvm_mmu_spte_requested', ts, te, g, l);
    if (v !== true) return v || undefined;
    this.fault(2, this.gfn, this.level, false);
    return undefined;
  }

  /**
   * kvm_mmu_get_page / kvm_mmu_prepare_zap_page. The kernel prints `sp gen %u gfn %llx l%u … new|existing`;
   * trace-cmd report formats them with libtraceevent's kvm plugin instead: `new|existing sp gfn %llx %u q…`
   * for get_page and `%u q…` (no gfn) for prepare_zap_page. The replay only counts these, so a missing gfn
   * or level is counted under missingFields and the event kept (gfn -1, level 0).
   */
  private shadowPage(ts: number, te: number, kind: number): Result {
    const { b, dv, o } = this;
    const ev = kind === K_GET_PAGE ? 'kvm_mmu_get_page' : 'kvm_mmu_prepare_zap_page';
    const e = te - o;
    const t = ts - o;
    // `sp gen %u gfn %llx …`, else by name
    let g = valueAt(b, litAt(dv, numEnd(b, litAt(dv, t, e, T.spGen), e), e, T.gfn), e);
    if (g === -1) g = this.chunkAt(this.f.gfn.value(this.s, ts, te));
    const gfn = g < 0 ? -1 : hexTokenB(b, g, e);
    if (Number.isNaN(gfn)) return `${ev}: expected a hex gfn`;
    if (g < 0) countIn(this.report.missingFields, `${ev}.gfn`);
    const level = this.shadowLevel(ts, te);
    if (level === -1) countIn(this.report.missingFields, `${ev}.level`);
    // ' new' at the end or 'new ' at the start (ASCII: a NON_ASCII byte is none of these)
    const created =
      e - t >= 4 &&
      ((b[e - 4] === 32 && b[e - 3] === 110 && b[e - 2] === 101 && b[e - 1] === 119) ||
        (b[t] === 110 && b[t + 1] === 101 && b[t + 2] === 119 && b[t + 3] === 32));
    this.table.pushGfn(
      kind,
      this.t,
      this.tid,
      this.n,
      gfn,
      level === -1 ? 0 : level,
      created ? B_CREATED : 0,
    );
    return undefined;
  }

  /** The kernel's " l2 ", else the plugin's bare level before " q"; -1 if neither. */
  private shadowLevel(ts: number, te: number): number {
    const s = this.s;
    for (let i = this.lSpace.within(s, ts, te); i !== -1; i = this.lSpace.within(s, i + 1, te)) {
      const d = s.charCodeAt(i + 2);
      if (i + 3 < te && d >= 48 && d <= 57 && s.charCodeAt(i + 3) === 32) return d - 48;
    }
    const m = /^(?:(?:new|existing) sp gfn [0-9a-f]+ )?(\d) q/.exec(s.slice(ts, te));
    return m ? Number(m[1]) : -1;
  }

  private zapAllFast(ts: number, te: number): Result {
    const e = te - this.o;
    // `kvm-mmu-valid-gen %u used_pages %x`, else by name
    let g = valueAt(this.b, litAt(this.dv, ts - this.o, e, T.gen), e);
    if (g === -1) g = this.chunkAt(this.f.gen.value(this.s, ts, te));
    if (g < 0) return this.missing('kvm_mmu_zap_all_fast', 'kvm-mmu-valid-gen');
    const gen = intTokenB(this.b, g, e);
    if (Number.isNaN(gen)) return 'kvm_mmu_zap_all_fast: expected a decimal kvm-mmu-valid-gen';
    const i = this.table.row(K_ZAP_ALL_FAST, S_KERNEL, this.t, this.tid, this.n, 0);
    this.table.v[V_GEN]![i] = gen;
    return undefined;
  }

  private unmapHvaRange(ts: number, te: number): Result {
    const m = /range: (0x[0-9a-f]+|[0-9a-f]+) -- (0x[0-9a-f]+|[0-9a-f]+)/.exec(this.s.slice(ts, te));
    if (!m) return this.missing('kvm_unmap_hva_range', 'range');
    const start = hexAt(m[1]!, 0, m[1]!.length);
    const end = hexAt(m[2]!, 0, m[2]!.length);
    this.table.pushBoxed({
      t: this.t,
      tid: this.tid,
      line: this.n,
      src: 'kernel',
      kind: 'unmap',
      start,
      end,
    });
    return undefined;
  }
}
