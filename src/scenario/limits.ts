/**
 * Scenario limits the CLI names in its help without loading the parser. Model-only file.
 */

/**
 * The most leaf steps a timeline may unroll to (repeats multiplied out) unless the caller raises it
 * (`--max-steps`): a typo like `repeat: 1e9` is refused before anything runs.
 */
export const DEFAULT_MAX_STEPS = 1_000_000;
