/**
 * `wake` at once when it was not called for `intervalMs`, otherwise once at the end of the interval,
 * however many calls came in between: a stream of deliveries wakes the worker once per interval, and
 * the last delivery of a burst is always followed by a wake.
 */
export const coalescedWake = (wake: () => void, intervalMs: number, onError: (error: unknown) => void): (() => void) => {
  let lastAt = Number.NEGATIVE_INFINITY;
  let timer: NodeJS.Timeout | null = null;
  const fire = () => {
    timer = null;
    lastAt = Date.now();
    try {
      wake();
    } catch (error) {
      onError(error);
    }
  };
  return () => {
    if (timer) return;
    const wait = lastAt + intervalMs - Date.now();
    if (wait <= 0) fire();
    else {
      timer = setTimeout(fire, wait);
      // A process that stops meanwhile leaves the delivery to the worker's poll (or the next process).
      timer.unref();
    }
  };
};
