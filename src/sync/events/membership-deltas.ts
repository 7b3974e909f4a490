/**
 * The order of membership deltas in one process. The inbox worker runs membership deliveries
 * concurrently, but the deltas of one organization must apply in the order the deliveries were claimed,
 * and before any member re-read of that organization that starts after they were claimed:
 * - a removal applied before the addition it follows finds nothing to remove and leaves no trace, so
 *   the late addition would then stand;
 * - a delta that waits for users to be read from Logto (its `User.Created` not applied yet) would
 *   otherwise find the members already added by a re-read, and the change would be recorded for the
 *   re-read's delivery and time instead of its own.
 * Deltas never wait for re-reads, so the two cannot wait on each other.
 */
export type MembershipDeltas = {
  /** Runs `applyDelta` once the deltas of the organization queued before it have been applied (or failed). */
  apply<T>(organizationId: string, applyDelta: () => Promise<T>): Promise<T>;
  /** Settles once the deltas of the organization queued so far have been applied (or failed); null when none is queued. */
  applied(organizationId: string): Promise<void> | null;
};

export const createMembershipDeltas = (): MembershipDeltas => {
  const tails = new Map<string, Promise<void>>();
  return {
    apply(organizationId, applyDelta) {
      const result = (tails.get(organizationId) ?? Promise.resolve()).then(applyDelta);
      const tail = result.then(
        () => undefined,
        () => undefined,
      );
      tails.set(organizationId, tail);
      void tail.then(() => {
        if (tails.get(organizationId) === tail) tails.delete(organizationId);
      });
      return result;
    },
    applied: (organizationId) => tails.get(organizationId) ?? null,
  };
};
