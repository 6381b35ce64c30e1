/**
 * Reader for KVM's binary statistics fd (KVM_GET_STATS_FD on a VM or vCPU fd).
 *
 * Kernel counterpart: virt/kvm/binary_stats.c (kvm_stats_read) and the layout of
 * include/uapi/linux/kvm.h (struct kvm_stats_header, struct kvm_stats_desc). The header and descriptors
 * never change for the life of the fd, so they are parsed once; each getStats() is one pread() of the
 * data block. pread rather than read: read() advances the file position, so a second read() would
 * return the bytes after the data block (real-kvm-host.md §5).
 *
 * getStats() returns { name: number } for every stat of size 1. The three halt_*_hist log histograms
 * (size 32) are arrays and are left out of that map (the API's KvmStats is name → number); they are
 * available through readAll().
 */
import { check, getLibc } from './libc.ts';
import { KVM_IOCTL } from '../../uapi/kvm.ts';
import { ownFd, release, type Resource } from './resources.ts';

export const KVM_STATS_TYPE_NAMES = ['cumulative', 'instant', 'peak', 'linear_hist', 'log_hist'] as const;
export const KVM_STATS_UNIT_NAMES = ['none', 'bytes', 'seconds', 'cycles', 'boolean'] as const;

export interface KvmStatsHeader {
  flags: number;
  nameSize: number;
  numDesc: number;
  idOffset: number;
  descOffset: number;
  dataOffset: number;
  id: string;
}

export interface KvmStatsDesc {
  name: string;
  type: string;
  unit: string;
  base: 'pow10' | 'pow2';
  exponent: number;
  size: number;
  offset: number;
  bucketSize: number;
}

const HEADER_SIZE = 24;
const DESC_FIXED = 16;

export class BinaryStatsFd {
  readonly header: KvmStatsHeader;
  readonly descs: readonly KvmStatsDesc[];
  private readonly dataBytes: number;
  private readonly buf: Uint8Array;
  private readonly dv: DataView;

  constructor(readonly fd: number) {
    const head = this.pread(HEADER_SIZE, 0);
    const h = new DataView(head.buffer);
    const nameSize = h.getUint32(4, true);
    const numDesc = h.getUint32(8, true);
    const idOffset = h.getUint32(12, true);
    const descOffset = h.getUint32(16, true);
    const dataOffset = h.getUint32(20, true);
    const id = cString(this.pread(nameSize, idOffset));
    this.header = { flags: h.getUint32(0, true), nameSize, numDesc, idOffset, descOffset, dataOffset, id };
    const descSize = DESC_FIXED + nameSize;
    const raw = this.pread(descSize * numDesc, descOffset);
    const dv = new DataView(raw.buffer);
    const descs: KvmStatsDesc[] = [];
    let end = 0;
    for (let i = 0; i < numDesc; i++) {
      const o = i * descSize;
      const flags = dv.getUint32(o, true);
      const d: KvmStatsDesc = {
        type: KVM_STATS_TYPE_NAMES[flags & 0xf] ?? `type${flags & 0xf}`,
        unit: KVM_STATS_UNIT_NAMES[(flags >> 4) & 0xf] ?? `unit${(flags >> 4) & 0xf}`,
        base: ((flags >> 8) & 0xf) === 1 ? 'pow2' : 'pow10',
        exponent: dv.getInt16(o + 4, true),
        size: dv.getUint16(o + 6, true),
        offset: dv.getUint32(o + 8, true),
        bucketSize: dv.getUint32(o + 12, true),
        name: cString(raw.subarray(o + DESC_FIXED, o + descSize)),
      };
      descs.push(d);
      end = Math.max(end, d.offset + d.size * 8);
    }
    this.descs = descs;
    this.dataBytes = end;
    this.buf = new Uint8Array(end);
    this.dv = new DataView(this.buf.buffer);
  }

  /** { name: value } for every scalar stat, in descriptor order. */
  read(): Record<string, number> {
    this.fill();
    const out: Record<string, number> = {};
    for (const d of this.descs) {
      if (d.size === 1) out[d.name] = Number(this.dv.getBigUint64(d.offset, true));
    }
    return out;
  }

  /** Every stat, histograms as arrays of bucket counts. */
  readAll(): Record<string, number | number[]> {
    this.fill();
    const out: Record<string, number | number[]> = {};
    for (const d of this.descs) {
      const vals: number[] = [];
      for (let i = 0; i < d.size; i++) vals.push(Number(this.dv.getBigUint64(d.offset + 8 * i, true)));
      out[d.name] = d.size === 1 ? vals[0]! : vals;
    }
    return out;
  }

  private fill(): void {
    const c = getLibc();
    const n = check(
      c.pread(this.fd, this.buf, this.dataBytes, this.header.dataOffset),
      'pread',
      () => `stats fd ${this.fd} data`,
    );
    if (n !== this.dataBytes)
      throw new Error(`short read of stats fd ${this.fd}: ${n} of ${this.dataBytes} bytes`);
  }

  private pread(n: number, off: number): Uint8Array {
    const b = new Uint8Array(n);
    const got = check(getLibc().pread(this.fd, b, n, off), 'pread', () => `stats fd ${this.fd} at ${off}`);
    if (got !== n) throw new Error(`short read of stats fd ${this.fd} at ${off}: ${got} of ${n} bytes`);
    return b;
  }
}

function cString(b: Uint8Array): string {
  const z = b.indexOf(0);
  return Buffer.from(b.subarray(0, z < 0 ? b.length : z)).toString('latin1');
}

/**
 * KVM_GET_STATS_FD on a VM or vCPU fd: the stats file, parsed, and the resource that closes it. If
 * parsing fails the fd is closed before the error propagates, so a failed call leaks nothing.
 */
export function openBinaryStatsFd(ownerFd: number, label: string): { bsf: BinaryStatsFd; res: Resource } {
  const name = 'KVM_GET_STATS_FD';
  const sfd = check(getLibc().ioctlInt(ownerFd, KVM_IOCTL.KVM_GET_STATS_FD, 0), name, () => label);
  const res = ownFd(sfd, `${label} stats`);
  try {
    return { bsf: new BinaryStatsFd(sfd), res };
  } catch (e) {
    release(res);
    throw e;
  }
}
