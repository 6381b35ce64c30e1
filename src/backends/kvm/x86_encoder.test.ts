/**
 * Encodings of the harness encoder, checked byte for byte against GNU objdump's decoding of the same
 * bytes (objdump -D -b binary -mi386:x86-64), and the generated harness program as a golden image.
 * No /dev/kvm needed.
 */
import { describe, expect, it } from 'vitest';
import { CC, JMP_R11, R, X86Encoder } from './x86_encoder.ts';
import { buildProgram, GuestHarness, DEFAULT_HARNESS } from './guest_harness.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const one = (f: (e: X86Encoder) => void) => {
  const e = new X86Encoder();
  f(e);
  return hex(e.assemble());
};

describe('X86Encoder', () => {
  it.each([
    [
      'movabs $0x1122334455667788,%rax',
      (e: X86Encoder) => e.movImm64(R.rax, 0x1122334455667788n),
      '48b88877665544332211',
    ],
    ['movabs $-1,%r15', (e: X86Encoder) => e.movImm64(R.r15, -1), '49bfffffffffffffffff'],
    ['mov $0x10,%edx', (e: X86Encoder) => e.movImm32(R.rdx, 0x10), 'ba10000000'],
    ['mov $0x10,%r9d', (e: X86Encoder) => e.movImm32(R.r9, 0x10), '41b910000000'],
    ['mov %rbx,%rdi', (e: X86Encoder) => e.movRR(R.rdi, R.rbx), '4889df'],
    ['mov %r8,%r11', (e: X86Encoder) => e.movRR(R.r11, R.r8), '4d89c3'],
    ['mov 0x8(%rdi),%rdx', (e: X86Encoder) => e.loadQ(R.rdx, R.rdi, 8), '488b5708'],
    ['mov -0x8(%rsp),%r10', (e: X86Encoder) => e.loadQ(R.r10, R.rsp, -8), '4c8b5424f8'],
    ['mov 0x0(%r12),%rax', (e: X86Encoder) => e.loadQ(R.rax, R.r12, 0), '498b442400'],
    ['mov 0x0(%rax),%dl', (e: X86Encoder) => e.loadB(R.rdx, R.rax), '8a5000'],
    ['mov 0x0(%r9),%cl', (e: X86Encoder) => e.loadB(R.rcx, R.r9), '418a4900'],
    ['mov %dl,0x0(%rax)', (e: X86Encoder) => e.storeB(R.rax, R.rdx), '885000'],
    ['add %rsi,%rdi', (e: X86Encoder) => e.addRR(R.rdi, R.rsi), '4801f7'],
    ['cmp %rcx,%rbx', (e: X86Encoder) => e.cmpRR(R.rbx, R.rcx), '4839cb'],
    ['cmp $0x2,%dl', (e: X86Encoder) => e.cmpR8Imm(R.rdx, 2), '80fa02'],
    ['shl $0x4,%rdi', (e: X86Encoder) => e.shlImm(R.rdi, 4), '48c1e704'],
    ['shr $0x8,%rdx', (e: X86Encoder) => e.shrImm(R.rdx, 8), '48c1ea08'],
    ['inc %rbx', (e: X86Encoder) => e.inc(R.rbx), '48ffc3'],
    ['inc %r13', (e: X86Encoder) => e.inc(R.r13), '49ffc5'],
    ['jmp *%rax', (e: X86Encoder) => e.jmpR(R.rax), 'ffe0'],
    ['jmp *%r11', (e: X86Encoder) => e.jmpR(R.r11), '41ffe3'],
    ['out %al,(%dx)', (e: X86Encoder) => e.outDxAl(), 'ee'],
    ['hlt', (e: X86Encoder) => e.hlt(), 'f4'],
  ])('%s', (_name, f, want) => {
    expect(one(f)).toBe(want);
  });

  it('rel32 branches and rip-relative lea resolve forward and backward labels', () => {
    const e = new X86Encoder();
    e.label('top').jcc(CC.ae, 'end').leaRip(R.r11, 'end').jmp('top').label('end');
    // jae +0xc; lea 0x5(%rip),%r11; jmp -0x12
    expect(hex(e.assemble())).toBe('0f830c0000004c8d1d05000000e9eeffffff');
  });

  it('rejects undefined and duplicate labels, and out-of-range disp8', () => {
    expect(() => new X86Encoder().jmp('nowhere').assemble()).toThrow(/undefined label/);
    expect(() => new X86Encoder().label('a').label('a')).toThrow(/duplicate/);
    expect(() => new X86Encoder().loadQ(R.rax, R.rdi, 200)).toThrow(RangeError);
  });

  it('the exec stub is `jmp *%r11`', () => {
    expect(hex(JMP_R11)).toBe('41ffe3');
  });
});

describe('the access harness', () => {
  it('program: golden bytes (objdump-verified disassembly in the comment)', () => {
    // cmp %rcx,%rbx; jae done; mov %rbx,%rdi; shl $4,%rdi; add %rsi,%rdi; mov (%rdi),%rax; mov 8(%rdi),%rdx;
    // cmp $1,%dl; je write; cmp $2,%dl; je exec; mov (%rax),%dl; jmp next;
    // write: shr $8,%rdx; mov %dl,(%rax); jmp next;  exec: lea next(%rip),%r11; jmp *%rax;
    // next: inc %rbx; jmp loop;  done: mov $port,%edx; mov $0xd0,%eax; out %al,(%dx); jmp done
    const p = buildProgram(0xfc0008000, 0x10);
    expect(hex(p.code)).toBe(
      '4839cb0f83490000004889df48c1e7044801f7488b4700488b570880fa010f841100000080fa020f84140000008a5000' +
        'e91500000048c1ea08885000e9090000004c8d1d02000000ffe048ffc3e9aeffffffba10000000b8d0000000eee9f0ffffff',
    );
    expect(p.loop).toBe(0xfc0008000);
  });

  it('identity-maps a page with a 4-level walk, U/S|RW|P and A clear, allocating tables once', () => {
    const mem = new Uint8Array(DEFAULT_HARNESS.size);
    const h = new GuestHarness(DEFAULT_HARNESS, mem);
    const dv = new DataView(mem.buffer);
    const walk = (gva: number) => {
      let t = h.cr3 - DEFAULT_HARNESS.gpa;
      for (let level = 4; level >= 1; level--) {
        const e = dv.getBigUint64(t + (Math.floor(gva / 2 ** (12 + 9 * (level - 1))) % 512) * 8, true);
        if (level === 1) return e;
        t = Number(e & 0xffffffffff000n) - DEFAULT_HARNESS.gpa;
      }
      return 0n;
    };
    expect(h.mapPage(0x8000_1234)).toBe(true);
    expect(h.mapPage(0x8000_1000)).toBe(false);
    expect(walk(0x8000_1000)).toBe(0x8000_1000n | 7n);
    expect(walk(h.program.entry)).toBe(BigInt(h.program.entry) | 7n);
    expect(walk(DEFAULT_HARNESS.gpa)).toBe(BigInt(DEFAULT_HARNESS.gpa) | 3n); // GDT/TSS: supervisor-only
    expect(() => new GuestHarness({ ...DEFAULT_HARNESS, port: 0x3f8 }, mem)).toThrow(/port/);
  });
});
