/**
 * The shadow fault path's specialised steps, each equal to the general one it stands for; a test turns
 * them off in one of two identical models and compares the two on the same workload
 * (test/shadow/fault_walk.property.test.ts):
 *   - `walk`: the fault's guest walk is walkAddrFault (shadow_fault_walk.ts), not walkAddrGeneric;
 *   - `rootCache`: VM entry finds the vCPU's root through ShadowMmu's one-entry cache of `roots`
 *     (shadow_roots.ts#rootOf); off, the cache is never filled and every entry asks the Map.
 *
 * Model-only file (no kernel counterpart).
 */
export const shadowFaultPaths = { walk: true, rootCache: true };
