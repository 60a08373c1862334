/** Waiting for a promise, but not for ever. */

/**
 * `p`'s value once it settles, or `undefined` when it fails or has not
 * settled within `ms` (the timer is cleared either way, so it never keeps
 * the process alive). For bounded shutdowns and scrapes: the caller goes on
 * in every case.
 */
export async function settleWithin<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([p.catch(() => undefined), late]);
  } finally {
    clearTimeout(timer);
  }
}
