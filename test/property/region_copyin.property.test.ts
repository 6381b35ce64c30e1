/**
 * KVM_SET_USER_MEMORY_REGION(2)'s copy-in has a fast path (copyInRegion: named reads, no key array, no
 * generic record) next to the generic `copyIn` over the struct spec (copyInRegionGeneric). Property: on
 * any argument — plain or null-prototype objects with known, unknown and inherited keys and any field
 * values — both give the same Region2, or both throw a KvmError with the same errno, code, syscall and
 * message. Also pins the shape of a thrown KvmError (message, String(e), e.stack, util.inspect, JSON,
 * own keys, instanceof, isNativeError), which KvmError's construction without a stack capture keeps.
 *
 * Replay: fast-check prints seed and path; ZAPLAB_FC_SEED=<seed> npx vitest run test/property/region_copyin
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { inspect, types } from 'node:util';
import { Kvm, KvmError } from '../../src/index.ts';
import { copyInRegion, copyInRegionGeneric } from '../../src/kvm/set_memory_region.ts';

const seed = process.env['ZAPLAB_FC_SEED'] ? Number(process.env['ZAPLAB_FC_SEED']) : undefined;

const FIELDS = [
  'slot',
  'flags',
  'guestPhysAddr',
  'memorySize',
  'userspaceAddr',
  'guestMemfdOffset',
  'guestMemfd',
  'pad1',
  'pad2',
] as const;

/** Field values: valid u32/u64 values, their edges, and what a caller gets wrong. */
const value = fc.oneof(
  fc.constantFrom(undefined, 0, 1, -1, 0x1000, 0x1001, 2 ** 32 - 1, 2 ** 32, 2 ** 53, 2 ** 53 - 1, NaN, 1.5),
  fc.constantFrom(0n, -1n, 2n ** 64n - 1n, 2n ** 64n, 2n ** 53n, 4096n),
  fc.nat(),
  fc.bigInt({ min: -1n, max: 2n ** 65n }),
  fc.constantFrom(null, 'x', true, Symbol('s'), [], {}, Object(4096n), Object.create(null)),
);

/** An argument object: some known fields, maybe unknown ones (first or last), maybe a null prototype. */
const argument = fc
  .record({
    known: fc.dictionary(fc.constantFrom(...FIELDS), value, { maxKeys: 9 }),
    unknown: fc.dictionary(fc.constantFrom('slots', 'size', 'pad3', 'x', '0', 'constructor'), value, {
      maxKeys: 2,
    }),
    unknownFirst: fc.boolean(),
    nullProto: fc.boolean(),
  })
  .map(({ known, unknown, unknownFirst, nullProto }) => {
    const o = (nullProto ? Object.create(null) : {}) as Record<string, unknown>;
    for (const p of unknownFirst ? [unknown, known] : [known, unknown])
      for (const [k, v] of Object.entries(p)) o[k] = v;
    return o as unknown;
  });

function outcome(f: () => unknown): unknown {
  try {
    return { ok: f() };
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    return { code: e.code, errno: e.errno, syscall: e.syscall, message: e.message, stack: e.stack };
  }
}

describe('region copy-in: fast path equals the generic copyIn', () => {
  it('same Region2 or the same KvmError, V1 and V2', () => {
    fc.assert(
      fc.property(argument, fc.boolean(), (arg, v2) => {
        const sc = v2 ? 'KVM_SET_USER_MEMORY_REGION2' : 'KVM_SET_USER_MEMORY_REGION';
        expect(outcome(() => copyInRegion(sc, arg, v2))).toEqual(
          outcome(() => copyInRegionGeneric(sc, arg, v2)),
        );
      }),
      seed === undefined ? { numRuns: 3000 } : { numRuns: 3000, seed },
    );
  });

  it('non-objects, arrays, class instances and pollution of Object.prototype', () => {
    for (const arg of [undefined, null, 7, 'x', Symbol('s'), [], new Map(), new Date(0), () => 0]) {
      for (const v2 of [false, true]) {
        const sc = v2 ? 'KVM_SET_USER_MEMORY_REGION2' : 'KVM_SET_USER_MEMORY_REGION';
        expect(outcome(() => copyInRegion(sc, arg, v2))).toEqual(
          outcome(() => copyInRegionGeneric(sc, arg, v2)),
        );
      }
    }
    // An enumerable key on Object.prototype is inherited by every plain object: Object.keys does not
    // list it, so neither path may call it an unknown field.
    const proto = Object.prototype as Record<string, unknown>;
    proto['pollution'] = 1;
    try {
      const arg = { slot: 1, memorySize: 0x1000 };
      expect(copyInRegion('KVM_SET_USER_MEMORY_REGION', arg, false)).toEqual(
        copyInRegionGeneric('KVM_SET_USER_MEMORY_REGION', arg, false),
      );
      expect(copyInRegion('KVM_SET_USER_MEMORY_REGION', arg, false).slot).toBe(1);
    } finally {
      delete proto['pollution'];
    }
  });

  it('an unknown field is named, first in the object order', () => {
    const arg = { slot: 0, sizee: 1, guestPhysAddr: 0, other: 2 };
    expect(outcome(() => copyInRegion('KVM_SET_USER_MEMORY_REGION', arg, false))).toMatchObject({
      code: 'EINVAL',
      message:
        "KVM_SET_USER_MEMORY_REGION: EINVAL: field 'sizee' is not a field of this struct (fields: slot, flags, guestPhysAddr, memorySize, userspaceAddr)",
    });
    expect(outcome(() => copyInRegion('KVM_SET_USER_MEMORY_REGION', { guestMemfd: 3 }, false))).toMatchObject(
      {
        code: 'EINVAL',
        message:
          "KVM_SET_USER_MEMORY_REGION: EINVAL: field 'guestMemfd' is not a field of this struct (fields: slot, flags, guestPhysAddr, memorySize, userspaceAddr)",
      },
    );
  });
});

describe('a thrown KvmError (no stack capture)', () => {
  const msg = 'KVM_SET_USER_MEMORY_REGION: EINVAL: memory_size 0x1001 is not a multiple of PAGE_SIZE';
  function rejected(): KvmError {
    const vm = new Kvm().createVm(0);
    try {
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 0x1001, userspaceAddr: 0x10000 });
    } catch (e) {
      return e as KvmError;
    }
    throw new Error('did not throw');
  }

  it('is a native Error and a KvmError with errno, code, syscall and message', () => {
    const e = rejected();
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(KvmError);
    expect(types.isNativeError(e)).toBe(true);
    expect([e.name, e.code, e.errno, e.syscall, e.message]).toEqual([
      'KvmError',
      'EINVAL',
      22,
      'KVM_SET_USER_MEMORY_REGION',
      msg,
    ]);
  });

  it('prints its message: String, stack, util.inspect, JSON and own keys as before', () => {
    const e = rejected();
    expect(String(e)).toBe(`KvmError: ${msg}`);
    expect(e.stack).toBe(`KvmError: ${msg}`);
    expect(inspect(e)).toBe(
      `[KvmError: ${msg}] {\n  code: 'EINVAL',\n  errno: 22,\n  syscall: 'KVM_SET_USER_MEMORY_REGION'\n}`,
    );
    expect(JSON.stringify(e)).toBe(
      '{"name":"KvmError","code":"EINVAL","errno":22,"syscall":"KVM_SET_USER_MEMORY_REGION"}',
    );
    expect(Object.keys(e)).toEqual(['name', 'code', 'errno', 'syscall']);
    expect(Object.getOwnPropertyNames(e)).toEqual(['stack', 'message', 'name', 'code', 'errno', 'syscall']);
    expect(structuredClone(e).message).toBe(msg);
  });

  it('leaves Error.stackTraceLimit as it was, and other errors keep their stacks', () => {
    const before = Error.stackTraceLimit;
    rejected();
    expect(Error.stackTraceLimit).toBe(before);
    expect(new Error('x').stack).toMatch(/^Error: x\n {4}at /);
  });
});
