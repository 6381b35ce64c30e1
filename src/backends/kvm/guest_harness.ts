/**
 * The guest side of real-KVM guest accesses: a 64-bit CPL3 program, its GDT/TSS and 4-level page
 * tables, laid out in a harness memslot of the VM under test.
 *
 * Kernel counterpart: what a KVM selftest's kvm_vm_elf_load + virt_pg_map + vcpu_setup do
 * (tools/testing/selftests/kvm/lib/x86/processor.c), reduced to one generated program. Why CPL3: on the
 * development host (kvm_pvm, shadow MMU) guest code at CPL0 is run by KVM's instruction emulator and
 * creates no SPTEs; CPL3 long-mode code runs natively (real-kvm-host.md §6). So segments are the Linux
 * user selectors (cs 0x33, ss/ds 0x2b), every mapping the program touches has U/S set, and the program
 * leaves with `out` (hlt would #GP at CPL3).
 *
 * How `out` gets out at CPL3 here: RFLAGS.IOPL=3 is set, but kvm_pvm does not keep IOPL (KVM_GET_REGS
 * after a run shows it cleared), so the OUT #GPs natively and KVM's emulator decides. With CPL > IOPL the
 * emulator consults the TSS I/O permission bitmap (emulate.c#emulator_io_port_access_allowed), reading
 * the TSS through the guest page tables. So the GDT/TSS page is mapped (supervisor-only), and the TSS has
 * an all-zero (all ports allowed) bitmap for ports 0..0xff. Cost: insn_emulation +1 per run, no SPTE for
 * the TSS page (the emulator walks the guest tables in software).
 *
 * Guest PTEs are written with the Accessed bit clear. KVM's shadow MMU prefetches neighbouring gPTEs
 * only when their A bit is set (paging_tmpl.h FNAME(prefetch_invalid_gpte)), so a first touch of each
 * page costs exactly one fault; once the guest walker has set A, later re-faults may prefetch.
 *
 * Harness layout (offsets from its gpa): page 0 GDT (+ TSS at 0x800), pages 1–7 unused, page 8 code,
 * then the access list, then a pool of page-table pages. gva == gpa everywhere (identity map).
 */
import { CC, JMP_R11, R, X86Encoder } from './x86_encoder.ts';
import {
  encodeDtable,
  encodeSegment,
  KVM_SREGS_SIZE,
  SREGS,
  setU64,
  encodeRegs,
  type KvmSegment,
} from './kvm_structs.ts';

export interface HarnessConfig {
  /** memslot id of the harness slot (as_id 0) */
  slot: number;
  /** gpa of the harness slot; must be below 2^guest MAXPHYADDR and clear of the slots under test */
  gpa: number;
  /** size of the harness slot in bytes (code, list, page-table pool) */
  size: number;
  /** I/O port the program writes to when it has finished the list */
  port: number;
  /** pages reserved for the access list (256 accesses per page per run) */
  listPages: number;
}

export const DEFAULT_HARNESS: HarnessConfig = {
  slot: 32763,
  gpa: 0xf_c000_0000, // 63 GiB: below the 64 GiB a vCPU without CPUID (MAXPHYADDR 36) can address
  size: 4 << 20,
  port: 0x10,
  listPages: 16,
};

export const ACCESS_KIND = { read: 0, write: 1, exec: 2 } as const;
const PAGE = 4096;
const GDT_OFF = 0;
const TSS_OFF = 0x800;
// The code starts a new 8-page group: KVM prefetches up to 8 neighbouring gPTEs of the same aligned
// group (PTE_PREFETCH_NUM) when their A bit is set, and the emulator sets A on the GDT/TSS page's PTE
// when it reads the TSS; keeping that page alone in its group keeps it out of the program's fault counts.
const CODE_OFF = 8 * PAGE;
const LIST_OFF = 9 * PAGE;
const PTE_P_RW_US = 0x7n; // present | writable | user; A/D left clear (see header)
const PTE_P_RW = 0x3n; // supervisor-only: the GDT/TSS page, read only by KVM's emulator
const TSS_IOMAP = 0x68; // I/O bitmap right after the 104-byte TSS
const TSS_LIMIT = TSS_IOMAP + 0x20; // bitmap covers ports 0..0xff (32 zero bytes) + the 0xff terminator
const RFLAGS_IOPL3 = 0x3002; // IOPL=3, reserved bit 1; IF=0 (no interrupts are delivered)
export const SEL_USER_DS = 0x2b;
export const SEL_USER_CS = 0x33;
const SEL_TSS = 0x40;

/** The generated program's labels the host needs (loop head for restarts after a skipped access). */
export interface HarnessProgram {
  code: Uint8Array;
  entry: number; // gva
  loop: number; // gva of the loop head: (re)start with rbx = index
}

/**
 * rsi = list gva, rbx = index, rcx = count. Entry i at rsi + 16*i: u64 gpa, u64 ctl (kind | value << 8).
 * read: mov dl,[rax]; write: mov [rax],dl(value); exec: lea r11,[rip+next]; jmp rax (target holds jmp r11).
 */
export function buildProgram(codeGva: number, port: number): HarnessProgram {
  const e = new X86Encoder();
  e.label('loop').cmpRR(R.rbx, R.rcx).jcc(CC.ae, 'done');
  e.movRR(R.rdi, R.rbx).shlImm(R.rdi, 4).addRR(R.rdi, R.rsi);
  e.loadQ(R.rax, R.rdi, 0).loadQ(R.rdx, R.rdi, 8);
  e.cmpR8Imm(R.rdx, ACCESS_KIND.write).jcc(CC.e, 'write');
  e.cmpR8Imm(R.rdx, ACCESS_KIND.exec).jcc(CC.e, 'exec');
  e.loadB(R.rdx, R.rax).jmp('next');
  e.label('write').shrImm(R.rdx, 8).storeB(R.rax, R.rdx).jmp('next');
  e.label('exec').leaRip(R.r11, 'next').jmpR(R.rax);
  e.label('next').inc(R.rbx).jmp('loop');
  // Report the end; if re-entered after the exit, report again rather than run off the page.
  e.label('done').movImm32(R.rdx, port).movImm32(R.rax, 0xd0).outDxAl().jmp('done');
  const code = e.assemble();
  return { code, entry: codeGva, loop: codeGva + e.offsetOf('loop') };
}

/** The harness image in guest memory and the JS-side mirror of its page tables. */
export class GuestHarness {
  readonly program: HarnessProgram;
  private readonly dv: DataView;
  private nextTable: number;
  private readonly tableLimit: number;
  private readonly pml4: number; // offset of the PML4 page in the harness
  /** gva page → mapped (the identity mappings written so far) */
  private readonly mapped = new Set<number>();

  constructor(
    readonly cfg: HarnessConfig,
    private readonly mem: Uint8Array,
  ) {
    if (cfg.size % PAGE || cfg.gpa % PAGE) throw new RangeError('harness gpa and size must be page aligned');
    if (!Number.isInteger(cfg.port) || cfg.port < 0 || cfg.port > 0xff)
      throw new RangeError('harness port must be 0..0xff (the TSS I/O bitmap covers those)');
    this.dv = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
    this.nextTable = LIST_OFF + cfg.listPages * PAGE;
    this.tableLimit = cfg.size;
    if (this.nextTable + 4 * PAGE > this.tableLimit)
      throw new RangeError('harness too small for its page tables');
    this.pml4 = this.allocTable();
    this.writeGdt();
    this.program = buildProgram(cfg.gpa + CODE_OFF, cfg.port);
    mem.set(this.program.code, CODE_OFF);
    // The code and the list must be reachable at CPL3.
    for (let off = CODE_OFF; off < LIST_OFF + cfg.listPages * PAGE; off += PAGE) this.mapPage(cfg.gpa + off);
    this.mapPage(cfg.gpa + GDT_OFF, PTE_P_RW);
  }

  get listGva(): number {
    return this.cfg.gpa + LIST_OFF;
  }
  get capacity(): number {
    return (this.cfg.listPages * PAGE) / 16;
  }
  get cr3(): number {
    return this.cfg.gpa + this.pml4;
  }
  /** Whether gpa falls inside the harness slot. */
  contains(gpa: number): boolean {
    return gpa >= this.cfg.gpa && gpa < this.cfg.gpa + this.cfg.size;
  }

  private allocTable(): number {
    if (this.nextTable + PAGE > this.tableLimit) {
      throw new RangeError(
        `harness page-table pool exhausted (${this.cfg.size} bytes); pass a larger harness.size`,
      );
    }
    const off = this.nextTable;
    this.nextTable += PAGE;
    this.mem.fill(0, off, off + PAGE);
    return off;
  }

  /** Identity-map the 4 KiB page holding gva (U/S, RW, A clear). Returns true if it was new. */
  mapPage(gva: number, leafFlags = PTE_P_RW_US): boolean {
    const page = Math.floor(gva / PAGE) * PAGE;
    if (this.mapped.has(page)) return false;
    let table = this.pml4;
    for (let level = 4; level > 1; level--) {
      const idx = Math.floor(page / 2 ** (12 + 9 * (level - 1))) % 512;
      const at = table + idx * 8;
      let e = this.dv.getBigUint64(at, true);
      if (e === 0n) {
        const t = this.allocTable();
        e = BigInt(this.cfg.gpa + t) | PTE_P_RW_US;
        this.dv.setBigUint64(at, e, true);
      }
      table = Number(e & 0x000f_ffff_ffff_f000n) - this.cfg.gpa;
    }
    const idx = Math.floor(page / PAGE) % 512;
    this.dv.setBigUint64(table + idx * 8, BigInt(page) | leafFlags, true);
    this.mapped.add(page);
    return true;
  }

  /** Write the access list for one run. */
  writeList(list: readonly { gpa: number; kind: keyof typeof ACCESS_KIND; value: number }[]): void {
    if (list.length > this.capacity) throw new RangeError(`list of ${list.length} exceeds ${this.capacity}`);
    list.forEach((a, i) => {
      setU64(this.dv, LIST_OFF + 16 * i, a.gpa);
      setU64(this.dv, LIST_OFF + 16 * i + 8, ACCESS_KIND[a.kind] | ((a.value & 0xff) << 8));
    });
  }

  private writeGdt(): void {
    const g = (i: number, v: bigint) => this.dv.setBigUint64(GDT_OFF + 8 * i, v, true);
    g(2, 0x00af9a000000ffffn); // 0x10 kernel code, 64-bit
    g(3, 0x00cf92000000ffffn); // 0x18 kernel data
    g(4, 0x00cffa000000ffffn); // 0x20 user code, 32-bit (unused)
    g(5, 0x00cff2000000ffffn); // 0x2b user data
    g(6, 0x00affa000000ffffn); // 0x33 user code, 64-bit
    // 0x40: 16-byte 64-bit TSS descriptor (type 0xb busy, present)
    const base = BigInt(this.cfg.gpa + TSS_OFF);
    const lo =
      BigInt(TSS_LIMIT) | ((base & 0xffffffn) << 16n) | (0x8bn << 40n) | (((base >> 24n) & 0xffn) << 56n);
    g(8, lo);
    g(9, base >> 32n);
    // TSS: io_map_base at offset 102 points just past the TSS; the bitmap bytes stay 0 (allowed), and the
    // byte after the bitmap is 0xff as the SDM requires.
    this.dv.setUint16(TSS_OFF + 102, TSS_IOMAP, true);
    this.dv.setUint8(TSS_OFF + TSS_LIMIT, 0xff);
  }

  /** Patch a kvm_sregs image (from KVM_GET_SREGS) into 64-bit long mode at CPL3. */
  patchSregs(sregs: Uint8Array): void {
    if (sregs.length !== KVM_SREGS_SIZE) throw new RangeError('kvm_sregs must be 312 bytes');
    const dv = new DataView(sregs.buffer, sregs.byteOffset, sregs.byteLength);
    const flat = { base: 0, limit: 0xffffffff, present: 1, dpl: 3, s: 1, g: 1 };
    const data: KvmSegment = { ...flat, selector: SEL_USER_DS, type: 3, db: 1, l: 0 };
    encodeSegment(dv, SREGS.cs, { ...flat, selector: SEL_USER_CS, type: 11, db: 0, l: 1 });
    for (const s of ['ds', 'es', 'fs', 'gs', 'ss'] as const) encodeSegment(dv, SREGS[s], data);
    const tss = this.cfg.gpa + TSS_OFF;
    encodeSegment(dv, SREGS.tr, {
      base: tss,
      limit: TSS_LIMIT,
      selector: SEL_TSS,
      type: 11,
      present: 1,
      dpl: 0,
      db: 0,
      s: 0,
      l: 0,
      g: 0,
    });
    encodeSegment(dv, SREGS.ldt, {
      base: 0,
      limit: 0,
      selector: 0,
      type: 2,
      present: 0,
      dpl: 0,
      db: 0,
      s: 0,
      l: 0,
      g: 0,
      unusable: 1,
    });
    encodeDtable(dv, SREGS.gdt, this.cfg.gpa + GDT_OFF, 10 * 8 - 1);
    // No IDT: any exception in the guest is a triple fault (KVM_EXIT_SHUTDOWN), reported per access.
    encodeDtable(dv, SREGS.idt, 0, 0);
    setU64(dv, SREGS.cr0, 0x80000031); // PG | NE | ET | PE
    setU64(dv, SREGS.cr3, this.cr3);
    setU64(dv, SREGS.cr4, 0x20); // PAE
    setU64(dv, SREGS.efer, 0x500); // LMA | LME
  }

  /** kvm_regs to (re)start the program at list index `start` of `count`. */
  regs(start: number, count: number): Uint8Array {
    return encodeRegs({
      rip: start === 0 ? this.program.entry : this.program.loop,
      rflags: RFLAGS_IOPL3,
      rsi: this.listGva,
      rbx: start,
      rcx: count,
    });
  }
}

export { JMP_R11 };
