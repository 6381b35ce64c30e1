/**
 * A tiny x86-64 machine-code encoder: just the instructions the real-KVM access harness needs, with
 * labels and rel32 fixups. Not an assembler; every method emits one fixed encoding.
 *
 * Kernel counterpart: none (the kernel's selftests compile their guest code with the host compiler; we
 * cannot, so we emit the bytes). Encodings are from the Intel SDM vol. 2: REX.W=0x48, REX.R extends
 * ModRM.reg, REX.B extends ModRM.rm. Byte-register operands are limited to al/cl/dl/bl so that a REX
 * prefix (needed for r8–r15 bases) never turns them into sil/dil.
 */

export const R = {
  rax: 0,
  rcx: 1,
  rdx: 2,
  rbx: 3,
  rsp: 4,
  rbp: 5,
  rsi: 6,
  rdi: 7,
  r8: 8,
  r9: 9,
  r10: 10,
  r11: 11,
  r12: 12,
  r13: 13,
  r14: 14,
  r15: 15,
} as const;
export type Reg = (typeof R)[keyof typeof R];
/** Byte registers usable without REX ambiguity: al, cl, dl, bl. */
export type Reg8 = 0 | 1 | 2 | 3;

/** Condition codes for Jcc (the low nibble of 0F 8x). */
export const CC = { b: 0x2, ae: 0x3, e: 0x4, ne: 0x5 } as const;

const modrm = (mod: number, reg: number, rm: number): number => (mod << 6) | ((reg & 7) << 3) | (rm & 7);

export class X86Encoder {
  private readonly out: number[] = [];
  private readonly labels = new Map<string, number>();
  private readonly fixups: { at: number; label: string; end: number }[] = [];

  /** Current offset from the start of the code. */
  get pc(): number {
    return this.out.length;
  }

  label(name: string): this {
    if (this.labels.has(name)) throw new Error(`duplicate label ${name}`);
    this.labels.set(name, this.out.length);
    return this;
  }

  private emit(...b: number[]): void {
    for (const x of b) this.out.push(x & 0xff);
  }

  private rex(w: boolean, reg: number, rm: number, force = false): void {
    const v = 0x40 | (w ? 8 : 0) | (reg >= 8 ? 4 : 0) | (rm >= 8 ? 1 : 0);
    if (v !== 0x40 || force) this.emit(v);
  }

  private imm(v: number | bigint, bytes: number): void {
    let x = BigInt.asUintN(bytes * 8, BigInt(v));
    for (let i = 0; i < bytes; i++, x >>= 8n) this.emit(Number(x & 0xffn));
  }

  /** ModRM (+SIB for rsp/r12 bases) with a disp8 memory operand [base + disp]. */
  private mem(reg: number, base: number, disp: number): void {
    if (disp < -128 || disp > 127) throw new RangeError(`disp8 out of range: ${disp}`);
    this.emit(modrm(1, reg, base));
    if ((base & 7) === 4) this.emit(0x24); // SIB: no index, base
    this.emit(disp);
  }

  /** mov r64, imm64 (REX.W B8+r io) */
  movImm64(r: Reg, v: number | bigint): this {
    this.rex(true, 0, r);
    this.emit(0xb8 + (r & 7));
    this.imm(v, 8);
    return this;
  }

  /** mov r32, imm32 (B8+r id); zero-extends into the 64-bit register */
  movImm32(r: Reg, v: number): this {
    this.rex(false, 0, r);
    this.emit(0xb8 + (r & 7));
    this.imm(v, 4);
    return this;
  }

  /** mov dst, src (REX.W 89 /r) */
  movRR(dst: Reg, src: Reg): this {
    this.rex(true, src, dst);
    this.emit(0x89, modrm(3, src, dst));
    return this;
  }

  /** mov dst, qword [base + disp8] (REX.W 8B /r) */
  loadQ(dst: Reg, base: Reg, disp = 0): this {
    this.rex(true, dst, base);
    this.emit(0x8b);
    this.mem(dst, base, disp);
    return this;
  }

  /** mov dst8, byte [base + disp8] (8A /r) */
  loadB(dst: Reg8, base: Reg, disp = 0): this {
    this.rex(false, dst, base);
    this.emit(0x8a);
    this.mem(dst, base, disp);
    return this;
  }

  /** mov byte [base + disp8], src8 (88 /r) */
  storeB(base: Reg, src: Reg8, disp = 0): this {
    this.rex(false, src, base);
    this.emit(0x88);
    this.mem(src, base, disp);
    return this;
  }

  /** add dst, src (REX.W 01 /r) */
  addRR(dst: Reg, src: Reg): this {
    this.rex(true, src, dst);
    this.emit(0x01, modrm(3, src, dst));
    return this;
  }

  /** cmp a, b: flags of a - b (REX.W 39 /r, r/m = a) */
  cmpRR(a: Reg, b: Reg): this {
    this.rex(true, b, a);
    this.emit(0x39, modrm(3, b, a));
    return this;
  }

  /** cmp r8, imm8 (80 /7 ib) */
  cmpR8Imm(r: Reg8, v: number): this {
    this.emit(0x80, modrm(3, 7, r), v);
    return this;
  }

  /** shl r64, imm8 (REX.W C1 /4 ib) */
  shlImm(r: Reg, n: number): this {
    this.rex(true, 0, r);
    this.emit(0xc1, modrm(3, 4, r), n);
    return this;
  }

  /** shr r64, imm8 (REX.W C1 /5 ib) */
  shrImm(r: Reg, n: number): this {
    this.rex(true, 0, r);
    this.emit(0xc1, modrm(3, 5, r), n);
    return this;
  }

  /** inc r64 (REX.W FF /0) */
  inc(r: Reg): this {
    this.rex(true, 0, r);
    this.emit(0xff, modrm(3, 0, r));
    return this;
  }

  /** jcc rel32 (0F 8x cd) */
  jcc(cc: number, label: string): this {
    this.emit(0x0f, 0x80 | cc);
    return this.rel32(label);
  }

  /** jmp rel32 (E9 cd) */
  jmp(label: string): this {
    this.emit(0xe9);
    return this.rel32(label);
  }

  /** jmp r64 (FF /4) */
  jmpR(r: Reg): this {
    this.rex(false, 0, r);
    this.emit(0xff, modrm(3, 4, r));
    return this;
  }

  /** lea r64, [rip + label] (REX.W 8D /r, mod=00 rm=101) */
  leaRip(r: Reg, label: string): this {
    this.rex(true, r, 0);
    this.emit(0x8d, modrm(0, r, 5));
    return this.rel32(label);
  }

  /** out dx, al (EE) */
  outDxAl(): this {
    this.emit(0xee);
    return this;
  }

  /** hlt (F4); #GP at CPL3, so the harness never uses it as a terminator */
  hlt(): this {
    this.emit(0xf4);
    return this;
  }

  private rel32(label: string): this {
    const at = this.out.length;
    this.emit(0, 0, 0, 0);
    this.fixups.push({ at, label, end: this.out.length });
    return this;
  }

  /** Resolve labels and return the code bytes. */
  assemble(): Uint8Array {
    const b = Uint8Array.from(this.out);
    const dv = new DataView(b.buffer);
    for (const f of this.fixups) {
      const t = this.labels.get(f.label);
      if (t === undefined) throw new Error(`undefined label ${f.label}`);
      dv.setInt32(f.at, t - f.end, true);
    }
    return b;
  }

  /** Offset of a label (after assemble() or once defined). */
  offsetOf(name: string): number {
    const t = this.labels.get(name);
    if (t === undefined) throw new Error(`undefined label ${name}`);
    return t;
  }
}

/** `jmp r11` (41 FF E3): the 3-byte stub the harness places at an exec target so the guest returns. */
export const JMP_R11 = Uint8Array.of(0x41, 0xff, 0xe3);
