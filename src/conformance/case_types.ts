/**
 * The shape of an ABI conformance case: a named sequence of ioctl-shaped calls, each with the outcome
 * the kernel gives ('OK' or the errno name; for KVM_GET_DIRTY_LOG and KVM_CHECK_EXTENSION the data too).
 * Plain data, so one list drives the vitest tables, the model run, the kernel run and the recordings.
 *
 * Addresses that differ between backends are symbolic: an hva is an offset into the case's backing
 * buffer (`{ buf: off }`) or a literal number (0 = NULL, or a deliberately bad address); an fd is a name
 * bound by an earlier call ('g' for a guest_memfd made by `gmem … as: 'g'`), 'kvm' / 'vm' for the
 * /dev/kvm and VM fds, or a literal number (a bogus fd).
 */

export type HvaRef = number | { buf: number };
export type FdRef = string | number;
export type U64 = number | bigint;

export type Call =
  | { op: 'R1'; slot: number; flags: number; gpa: U64; size: U64; hva: HvaRef; gen?: number }
  | {
      op: 'R2';
      slot: number;
      flags: number;
      gpa: U64;
      size: U64;
      hva: HvaRef;
      fd: FdRef;
      off: U64;
      pad?: [number, number];
      gen?: number;
    }
  /** `count` V1 creates (or deletes, size 0) of ids first.. at gpa (id-first)*gpaStep: one result */
  | {
      op: 'R1many';
      first: number;
      count: number;
      size: number;
      gpaBase?: number;
      gpaStep: number;
      hva: HvaRef;
    }
  | { op: 'gmem'; size: U64; flags: U64; as?: string }
  /** KVM_CREATE_GUEST_MEMFD where the case expects no fd (a kernel without guest_memfd): binds nothing */
  | { op: 'gmemNone'; size: U64; flags: U64 }
  /** a guest_memfd created on a second VM of the same /dev/kvm */
  | { op: 'gmemOther'; size: number; as: string }
  /** KVM_SET_USER_MEMORY_REGION2 on that second VM */
  | { op: 'R2other'; slot: number; flags: number; gpa: number; size: number; fd: FdRef; off: number }
  | { op: 'memfd'; size: number; as: string }
  | { op: 'close'; fd: string }
  | { op: 'dirty'; slot: number }
  /** `bytes` null = a NULL bitmap; `fill` is the byte every bitmap byte holds (default 0) */
  | { op: 'clear'; slot: number; first: number; num: number; bytes: number | null; fill?: number | number[] }
  | { op: 'cap'; cap: number; flags?: number; args: U64[] }
  | { op: 'check'; cap: number }
  | { op: 'attrs'; address: U64; size: U64; attributes: U64; flags?: number };

export interface CallStep {
  call: Call;
  /** 'OK', an errno name, or for dirty/check the data form (see outcomeOf in abi_runner.ts) */
  expect: string;
}

/**
 * A host feature a case depends on. A case that creates a guest_memfd needs 'guestMemfd' implicitly
 * (caseNeeds); 'noGuestMemfd' marks cases about a kernel built without it.
 */
export type HostNeed = 'guestMemfd' | 'noGuestMemfd';

/** The host facts `needs` are judged against (a resolved model HostConfig has them). */
export interface HostFacts {
  readonly guestMemfd: boolean;
}

export interface AbiCase {
  /** stable id: the reference section and a short name, e.g. '§8.13 adjacent' */
  id: string;
  /** what the case checks, in a line */
  title: string;
  steps: CallStep[];
  /** features beyond those its calls imply (see caseNeeds) */
  needs?: HostNeed[];
}

/** Every feature a case depends on: its declared needs plus guest_memfd if any call creates one. */
export function caseNeeds(c: AbiCase): HostNeed[] {
  const n = new Set(c.needs ?? []);
  if (c.steps.some((s) => s.call.op === 'gmem' || s.call.op === 'gmemOther')) n.add('guestMemfd');
  return [...n];
}

/** Why `c` cannot run on a host with `facts`, or null when it applies. */
export function notApplicable(c: AbiCase, facts: HostFacts): string | null {
  for (const need of caseNeeds(c)) {
    if (need === 'guestMemfd' && !facts.guestMemfd)
      return 'needs guest_memfd: this kernel reports KVM_CAP_GUEST_MEMFD = 0 (built without CONFIG_KVM_GUEST_MEMFD)';
    if (need === 'noGuestMemfd' && facts.guestMemfd)
      return 'about kernels without guest_memfd: this one reports KVM_CAP_GUEST_MEMFD = 1';
  }
  return null;
}

/** Shorthand constructors, so a case reads like memslot-abi.md's R1/R2 notation. */
export const buf = (off = 0): { buf: number } => ({ buf: off });
export const R1 = (
  slot: number,
  flags: number,
  gpa: U64,
  size: U64,
  hva: HvaRef = buf(),
  gen?: number,
): Call =>
  gen === undefined
    ? { op: 'R1', slot, flags, gpa, size, hva }
    : { op: 'R1', slot, flags, gpa, size, hva, gen };
export const R2 = (
  slot: number,
  flags: number,
  gpa: U64,
  size: U64,
  hva: HvaRef,
  fd: FdRef,
  off: U64,
): Call => ({ op: 'R2', slot, flags, gpa, size, hva, fd, off });
export const step = (call: Call, expect: string): CallStep => ({ call, expect });

/** A readable one-line form of a call, used in tables and as the recording's per-call key. */
export function describeCall(c: Call): string {
  const h = (v: U64) =>
    typeof v === 'bigint' ? `0x${v.toString(16)}` : v < 10 ? String(v) : `0x${v.toString(16)}`;
  const hva = (r: HvaRef) => (typeof r === 'number' ? h(r) : r.buf === 0 ? 'buf' : `buf+${h(r.buf)}`);
  switch (c.op) {
    case 'R1':
      return `R1(${c.slot}, ${h(c.flags)}, ${h(c.gpa)}, ${h(c.size)}, ${hva(c.hva)})`;
    case 'R2':
      return `R2(${c.slot}, ${h(c.flags)}, ${h(c.gpa)}, ${h(c.size)}, ${hva(c.hva)}, ${c.fd}, ${h(c.off)}${
        c.pad ? `, pad ${c.pad.join('/')}` : ''
      })`;
    case 'R1many':
      return `R1 ×${c.count} ids ${c.first}.. size ${h(c.size)} gpa ${h(c.gpaBase ?? 0)} step ${h(c.gpaStep)}`;
    case 'gmem':
      return `CREATE_GUEST_MEMFD(size ${h(c.size)}, flags ${h(c.flags)})${c.as ? ` → ${c.as}` : ''}`;
    case 'gmemNone':
      return `CREATE_GUEST_MEMFD(size ${h(c.size)}, flags ${h(c.flags)})`;
    case 'gmemOther':
      return `other VM: CREATE_GUEST_MEMFD(size ${h(c.size)}) → ${c.as}`;
    case 'R2other':
      return `other VM: R2(${c.slot}, ${h(c.flags)}, ${h(c.gpa)}, ${h(c.size)}, 0, ${c.fd}, ${h(c.off)})`;
    case 'memfd':
      return `memfd_create(size ${h(c.size)}) → ${c.as}`;
    case 'close':
      return `close(${c.fd})`;
    case 'dirty':
      return `GET_DIRTY_LOG(${c.slot})`;
    case 'clear':
      return `CLEAR_DIRTY_LOG(${c.slot}, first ${c.first}, num ${c.num}, ${c.bytes === null ? 'NULL' : `${c.bytes} B`})`;
    case 'cap':
      return `ENABLE_CAP(${c.cap}, flags ${c.flags ?? 0}, [${c.args.map(h).join(', ')}])`;
    case 'check':
      return `CHECK_EXTENSION(${c.cap}) on the VM`;
    case 'attrs':
      return `SET_MEMORY_ATTRIBUTES(${h(c.address)}, ${h(c.size)}, ${h(c.attributes)}, flags ${c.flags ?? 0})`;
  }
}
