/**
 * A memslot script whose `userspaceAddr: mmap` asks for more than the model's host can map is an error
 * at the memorySize, exit 2. Before, the host's RangeError escaped replayMemslotScript: "internal error"
 * (exit 70).
 */
import { describe, expect, it } from 'vitest';
import { replayMemslotScript } from '../../src/cli/memslot_script.ts';

describe('memslot script mmap', () => {
  it('a mapping past the 47-bit host is an error at the value', () => {
    const text = `steps:
  - setUserMemoryRegion: { slot: 0, guestPhysAddr: 0, memorySize: 0x1000, userspaceAddr: mmap }
  - setUserMemoryRegion: { slot: 1, guestPhysAddr: 0, memorySize: 0x1000000000000, userspaceAddr: mmap }
`;
    expect(replayMemslotScript(text, 'm.yaml')).toEqual({
      ok: false,
      error:
        "m.yaml:3:67: steps.1.setUserMemoryRegion.memorySize: the host cannot map it for 'userspaceAddr: mmap' (mmap: length must be an integer in [0, 2^47] (got 281474976710656))",
    });
  });

  it('a mapping the host can make still replays', () => {
    const r = replayMemslotScript(
      'steps:\n  - setUserMemoryRegion: { slot: 0, guestPhysAddr: 0, memorySize: 0x200000 }\n',
      'm.yaml',
    );
    expect(r.ok && r.replay.rows.map((x) => x.result)).toEqual(['OK']);
  });
});
