import { startSimulator } from './simulator.js';

/** The simulated tenant of the sync benches at a scale (scale 1: the default tenant). */
export type Shape = { users: number; organizations: number; roles: number; largestShare: number; memberRoleWeights: string };

/** Zipf sizes (rank r ≈ largest / r) summing to about 300,000 memberships at scale 1. */
export const shapeFor = (scale: number): Shape => {
  const users = Math.round(100_000 * scale);
  const organizations = Math.max(1, Math.round(2_000 * scale));
  let harmonic = 0;
  for (let rank = 1; rank <= organizations; rank += 1) harmonic += 1 / rank;
  const largestShare = Math.min(0.5, (300_000 * scale) / (users * harmonic * 0.97));
  // About 1.33 roles per member: 400,000 member roles for 300,000 memberships.
  return { users, organizations, roles: 20, largestShare, memberRoleWeights: '0.17,0.45,0.26,0.12' };
};

/** The simulator serving `shape`, answering every request after `latencyMs`. */
export const startTenant = (shape: Shape, latencyMs: number) =>
  startSimulator(['--port', '0', '--users', String(shape.users), '--organizations', String(shape.organizations),
    '--roles', String(shape.roles), '--seed', '2026', '--resource', 'self', '--latency-ms', String(latencyMs),
    '--largest-share', shape.largestShare.toFixed(4), '--member-role-weights', shape.memberRoleWeights]);
