/**
 * Memslot scripts: a YAML (or JSON) list of ioctl-shaped calls replayed on a model VM. Validation errors
 * point at file:line:col. This is the CLI's first job; the scenario format (issue: scenarios) grows from it.
 */
import { LineCounter, parseDocument, isMap, isSeq, type Node } from 'yaml';
import { z } from 'zod';
import { Kvm, KvmError } from '../index.ts';
import { yamlValue, yamlValueError } from '../scenario/yaml_doc.ts';

const u64 = z.union([z.number().int().nonnegative(), z.string().regex(/^0x[0-9a-fA-F]+$/)]);
const region = z.strictObject({
  slot: z.number().int().nonnegative(),
  flags: z.number().int().nonnegative().optional(),
  guestPhysAddr: u64,
  memorySize: u64,
  userspaceAddr: z.union([u64, z.literal('mmap'), z.literal('keep')]).optional(),
});
const step = z.union([
  z.strictObject({ setUserMemoryRegion: region }),
  z.strictObject({ disableQuirks2: u64 }),
]);
const script = z.strictObject({
  profile: z.enum(['upstream-6.18', 'pvm-6.18']).optional(),
  vmType: z.number().int().min(0).max(5).optional(),
  zapDesign: z.enum(['quirk', 'vm-type', 'slot-flag']).optional(),
  steps: z.array(step),
});
export type MemslotScript = z.infer<typeof script>;

export interface ReplayRow {
  call: string;
  result: string;
  gen0: number;
}
export interface Replay {
  rows: ReplayRow[];
  slots: { id: number; gpa: string; size: string; flags: number }[];
  generations: number[];
  model: Record<string, number>;
}

const big = (v: number | string): number | bigint => (typeof v === 'number' ? v : BigInt(v));
const hx = (v: number | string): string => (typeof v === 'number' ? '0x' + v.toString(16) : v);

/** Parse, validate and run a script; errors name file:line:col. */
export function replayMemslotScript(
  text: string,
  file: string,
): { ok: true; replay: Replay } | { ok: false; error: string } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const p = lc.linePos(e.pos[0]);
    return { ok: false, error: `${file}:${p.line}:${p.col}: ${e.message.split('\n')[0]}` };
  }
  const value = yamlValue(doc);
  const bad = yamlValueError(value);
  if (bad !== null) return { ok: false, error: `${file}:1:1: YAML: ${bad}` };
  const parsed = script.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const node = nodeAt(doc.contents, issue.path);
    const p = lc.linePos(node?.range?.[0] ?? 0);
    return {
      ok: false,
      error: `${file}:${p.line}:${p.col}: ${issue.path.join('.') || '(top)'}: ${issue.message}`,
    };
  }
  const s = parsed.data;
  const kvm = new Kvm({ profile: s.profile ?? 'upstream-6.18' });
  const vm = kvm.createVm(s.vmType ?? 0, { zapDesign: s.zapDesign ?? 'quirk' });
  const rows: ReplayRow[] = [];
  // 'mmap' maps fresh host memory; 'keep' reuses the hva of the existing slot (for FLAGS_ONLY / MOVE).
  const hvaFor = (u: number | string | undefined, size: number | bigint): number | bigint => {
    if (u === 'keep') return 0;
    if (u === 'mmap' || u === undefined) return size === 0 ? 0 : kvm.host.mmap(Number(size));
    return big(u);
  };
  for (const [i, st] of s.steps.entries()) {
    let call: string;
    let f: () => void;
    if ('setUserMemoryRegion' in st) {
      const r = st.setUserMemoryRegion;
      const size = big(r.memorySize);
      let hva: number | bigint;
      try {
        hva = hvaFor(r.userspaceAddr, size);
      } catch (e) {
        // the host cannot map it (past the 47-bit address space): the script asks for the impossible
        if (!(e instanceof RangeError)) throw e;
        const at = ['steps', i, 'setUserMemoryRegion', 'memorySize'];
        const p = lc.linePos(nodeAt(doc.contents, at)?.range?.[0] ?? 0);
        return {
          ok: false,
          error: `${file}:${p.line}:${p.col}: ${at.join('.')}: the host cannot map it for 'userspaceAddr: mmap' (${e.message})`,
        };
      }
      call = `SET_USER_MEMORY_REGION slot=${r.slot} gpa=${hx(r.guestPhysAddr)} size=${hx(r.memorySize)} flags=${r.flags ?? 0}`;
      const keep = r.userspaceAddr === 'keep';
      f = () => {
        const existing = keep
          ? vm.memslots(r.slot >>> 16).find((m) => m.id === (r.slot & 0xffff))
          : undefined;
        const addr = existing ? existing.userspaceAddr : hva;
        vm.setUserMemoryRegion({
          slot: r.slot,
          flags: r.flags ?? 0,
          guestPhysAddr: big(r.guestPhysAddr),
          memorySize: size,
          userspaceAddr: addr,
        });
      };
    } else {
      call = `ENABLE_CAP DISABLE_QUIRKS2 ${String(st.disableQuirks2)}`;
      f = () => vm.enableCap({ cap: 213, args: [big(st.disableQuirks2)] });
    }
    let result = 'OK';
    try {
      f();
    } catch (e) {
      if (!(e instanceof KvmError)) throw e;
      result = e.code;
    }
    rows.push({ call, result, gen0: vm.memslotsGeneration(0) });
  }
  return {
    ok: true,
    replay: {
      rows,
      slots: vm.memslots(0).map((m) => ({
        id: m.id,
        gpa: '0x' + (m.baseGfn * 4096).toString(16),
        size: '0x' + (m.npages * 4096).toString(16),
        flags: m.flags,
      })),
      generations: Array.from({ length: vm.nrAs }, (_, a) => vm.memslotsGeneration(a)),
      model: vm.getModelStats(),
    },
  };
}

function nodeAt(root: unknown, path: PropertyKey[]): Node | null {
  let n = root as Node | null;
  for (const k of path) {
    if (isMap(n))
      n = (n.items.find((it) => (it.key as { value?: unknown })?.value === k)?.value as Node) ?? n;
    else if (isSeq(n) && typeof k === 'number') n = (n.items[k] as Node) ?? n;
    else break;
  }
  return n;
}

export function formatReplay(r: Replay): string {
  const lines = r.rows.map(
    (x, i) => `${String(i + 1).padStart(3)}  ${x.call.padEnd(70)} ${x.result.padEnd(7)} gen ${x.gen0}`,
  );
  lines.push('', 'slot  gpa            size         flags');
  for (const s of r.slots)
    lines.push(`${String(s.id).padStart(4)}  ${s.gpa.padEnd(14)} ${s.size.padEnd(12)} ${s.flags}`);
  lines.push('', `generations: ${r.generations.join(', ')}`);
  lines.push(
    `zap-all-fast: ${r.model['memslot_zap_all_fast']}, precise zaps: ${r.model['memslot_zap_precise']}`,
  );
  return lines.join('\n') + '\n';
}

/** A SeaBIOS/OVMF-like boot: RAM, the VGA hole, option-ROM toggles and a BAR being sized and mapped. */
export const DEMO_SCRIPT = `# zaplab memslot demo: a firmware-boot-like sequence of memslot calls
profile: upstream-6.18
vmType: 0
steps:
  - setUserMemoryRegion: { slot: 0, guestPhysAddr: 0x0, memorySize: 0xa0000, userspaceAddr: mmap }
  - setUserMemoryRegion: { slot: 1, guestPhysAddr: 0x100000, memorySize: 0x7ff00000, userspaceAddr: mmap }
  - setUserMemoryRegion: { slot: 2, guestPhysAddr: 0xc0000, memorySize: 0x20000, flags: 2, userspaceAddr: mmap }
  - setUserMemoryRegion: { slot: 2, guestPhysAddr: 0xc0000, memorySize: 0 }
  - setUserMemoryRegion: { slot: 3, guestPhysAddr: 0xfebc0000, memorySize: 0x20000, userspaceAddr: mmap }
  - setUserMemoryRegion: { slot: 3, guestPhysAddr: 0xfebc0000, memorySize: 0 }
  - setUserMemoryRegion: { slot: 3, guestPhysAddr: 0x800000000, memorySize: 0x20000, userspaceAddr: mmap }
  - setUserMemoryRegion: { slot: 4, guestPhysAddr: 0xa0000, memorySize: 0x1000, userspaceAddr: mmap }
  - setUserMemoryRegion: { slot: 1, guestPhysAddr: 0x100000, memorySize: 0x7ff00000, flags: 1, userspaceAddr: keep }
  - disableQuirks2: 0x80
  - setUserMemoryRegion: { slot: 4, guestPhysAddr: 0xa0000, memorySize: 0 }
`;
