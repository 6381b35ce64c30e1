/** Why a live record-and-replay test cannot run on this machine (null: it can), shared by the live tests. */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { recordAvailability } from '../../src/replay/record.ts';

export function liveSkipReason(): string | null {
  if (process.env['ZAPLAB_SKIP_REAL_KVM']) return 'ZAPLAB_SKIP_REAL_KVM is set';
  if (!existsSync('/dev/kvm')) return 'no /dev/kvm';
  if (spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { stdio: 'ignore' }).status !== 0)
    return 'qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)';
  const a = recordAvailability();
  return a.ok ? null : a.reason;
}
