/**
 * Numbers printed as x.toLocaleString('en-US') prints them ("1,536"), without ICU for integers: the
 * first toLocaleString of a process initialises ICU's number formatting, 20-30 ms, which every CLI
 * command paid (the --max-steps help text, the count columns of compare). Other values (fractions, -0,
 * past 2^53, NaN, ±Infinity) still go through toLocaleString. Model-only file.
 */
export function enUS(x: number): string {
  if (!Number.isSafeInteger(x) || Object.is(x, -0)) return x.toLocaleString('en-US');
  const digits = String(x < 0 ? -x : x);
  // the first group takes what is left over after the groups of three
  let k = digits.length % 3 || 3;
  let out = digits.slice(0, k);
  for (; k < digits.length; k += 3) out += ',' + digits.slice(k, k + 3);
  return x < 0 ? '-' + out : out;
}
