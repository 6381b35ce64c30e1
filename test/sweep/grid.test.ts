/** Grid specs (src/sweep/grid.ts): lists, ranges with step or factor, sizes, products, and the errors. */
import { describe, expect, it } from 'vitest';
import {
  gridPoints,
  parseParamSpec,
  parseSize,
  pointParams,
  spansDecades,
  GridError,
} from '../../src/sweep/grid.ts';

const G = 2 ** 30;
const err = (arg: string): string => {
  try {
    parseParamSpec(arg);
  } catch (e) {
    if (e instanceof GridError) return e.message;
    throw e;
  }
  return 'no error';
};

describe('parseSize', () => {
  it('reads integers, hex and binary sizes, and nothing else', () => {
    expect(parseSize('12')).toBe(12);
    expect(parseSize('0x1_000')).toBe(4096);
    expect(parseSize('64K')).toBe(65536);
    expect(parseSize('2m')).toBe(2 * 2 ** 20);
    expect(parseSize('1GiB')).toBe(G);
    expect(parseSize('1Gi')).toBe(G);
    expect(parseSize('1T')).toBe(2 ** 40);
    expect(parseSize('1.5G')).toBeNull();
    expect(parseSize('-1')).toBeNull();
    expect(parseSize('1X')).toBeNull();
    expect(parseSize('99999999999T')).toBeNull(); // past 2^53
  });
});

describe('parseParamSpec', () => {
  it('expands lists, factor ranges and step ranges', () => {
    expect(parseParamSpec('ram=1G,4G,16G')).toEqual({
      name: 'ram',
      spec: '1G,4G,16G',
      values: [G, 4 * G, 16 * G],
      texts: ['1G', '4G', '16G'],
      numeric: true,
    });
    expect(parseParamSpec('backing=4k,1g,thp').texts).toEqual(['4k', '1g', 'thp']);
    expect(parseParamSpec('n=1..4*2,0x10').texts).toEqual(['1', '2', '4', '0x10']);
    expect(parseParamSpec('unplug=1..256*2').values).toEqual([1, 2, 4, 8, 16, 32, 64, 128, 256]);
    expect(parseParamSpec('ram=1G..256G*4').values).toEqual([G, 4 * G, 16 * G, 64 * G, 256 * G]);
    expect(parseParamSpec('n=8..40+8').values).toEqual([8, 16, 24, 32, 40]);
    expect(parseParamSpec('n=8..30+8').values).toEqual([8, 16, 24]); // the end is not reached exactly
    expect(parseParamSpec('v=1..4').values).toEqual([1, 2, 3, 4]);
    expect(parseParamSpec('v=1..3,16,2,64').values).toEqual([1, 2, 3, 16, 64]); // mixed, duplicate dropped
    expect(parseParamSpec('v=5').values).toEqual([5]);
    expect(parseParamSpec('snoopScope=attached,none')).toEqual({
      name: 'snoopScope',
      spec: 'attached,none',
      values: ['attached', 'none'],
      texts: ['attached', 'none'],
      numeric: false,
    });
  });

  it('names the flag and the problem on bad specs', () => {
    expect(err('unplug')).toBe('-p unplug: expected name=values (e.g. unplug=1..256*2, ram=1G,4G,16G)');
    expect(err('unplug=')).toBe('-p unplug=: no values after "="');
    expect(err('1x=3')).toMatch(/^-p 1x=3: expected name=values/);
    expect(err('n=1..8*1')).toBe('-p n=1..8*1: "1..8*1": factor must be an integer ≥ 2');
    expect(err('n=0..8*2')).toBe('-p n=0..8*2: "0..8*2": a factor range cannot start at 0');
    expect(err('n=1..8+0')).toBe('-p n=1..8+0: "1..8+0": step must be an integer ≥ 1');
    expect(err('n=9..8')).toBe('-p n=9..8: "9..8": start 9 is past end 8');
    expect(err('n=1..x')).toBe('-p n=1..x: "1..x": end "x" is not a number or a size (64K, 2M, 1G)');
    expect(err('n=1..8*2.5')).toBe(
      '-p n=1..8*2.5: "1..8*2.5": factor "2.5" is not a number or a size (64K, 2M, 1G)',
    );
    expect(err('n=1..1T')).toBe('-p n=1..1T: "1..1T": more than 4096 values');
    expect(err('n=1.5G')).toBe(
      '-p n=1.5G: "1.5G" is not a number, a size (64K, 2M, 1G), a range (1..8, 1G..64G*2, 8..256+8) or a word',
    );
    expect(err('n=1,,2')).toMatch(/^-p n=1,,2: "" is not a number/);
  });
});

describe('gridPoints', () => {
  it('is the product, first axis slowest', () => {
    const pts = gridPoints([parseParamSpec('a=1,2'), parseParamSpec('b=x,y,z')]);
    expect(pts).toEqual([
      { a: 1, b: 'x' },
      { a: 1, b: 'y' },
      { a: 1, b: 'z' },
      { a: 2, b: 'x' },
      { a: 2, b: 'y' },
      { a: 2, b: 'z' },
    ]);
    expect(gridPoints([])).toEqual([{}]);
    const axes = [parseParamSpec('ram=1G..4G*4'), parseParamSpec('b=2m,1g')];
    expect(pointParams(axes, { ram: 4 * G, b: G })).toEqual({ ram: '4294967296', b: '1g' });
  });

  it('refuses a parameter given twice and grids past the limit', () => {
    expect(() => gridPoints([parseParamSpec('a=1'), parseParamSpec('a=2')])).toThrow(
      '-p a: given twice; put every value in one spec (a=v1,v2,…)',
    );
    expect(() => gridPoints([parseParamSpec('a=1..4096'), parseParamSpec('b=1..17')])).toThrow(
      '-p: the grid has 69632 points (4096 × 17); at most 65536',
    );
  });

  it('says when an axis spans decades', () => {
    expect(spansDecades([1, 2, 4, 8, 16, 32, 64, 128])).toBe(true);
    expect(spansDecades([8, 16, 64])).toBe(false);
    expect(spansDecades(['a', 'b'])).toBe(false);
  });
});
