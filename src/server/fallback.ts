import type { Logger } from '../log/logger.ts';

/**
 * A store that answers from `local` while `shared` cannot: for state where a local answer
 * beats none when the cluster's Redis is away (failed logins and lockouts, sending counts,
 * maildrop locks). Every call goes to the shared store first; when it rejects, the same call
 * goes to the local one. The switch and the return are logged once each, and service comes
 * back to the shared store by itself. Only methods that return promises are wrapped; every
 * store interface is async.
 */
export function withFallback<Store extends object>(what: string, shared: Store, local: Store, log: Logger): Store {
  let degraded = false;
  return new Proxy(shared, {
    get(target, property) {
      const method = Reflect.get(target, property) as unknown;
      if (typeof method !== 'function') return method;
      if (property === 'close') {
        return async () => {
          await Promise.allSettled([(method as () => Promise<void>).call(target), (Reflect.get(local, property) as () => Promise<void>).call(local)]);
        };
      }
      return async (...args: unknown[]) => {
        try {
          const result = await (method as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          if (degraded) {
            degraded = false;
            log.info({ event: 'shared_state_back', store: what }, `${what}: the shared store answers again`);
          }
          return result;
        } catch (error) {
          if (!degraded) {
            degraded = true;
            log.error({ event: 'shared_state_unavailable', store: what, err: error }, `${what}: the shared store does not answer; this node answers alone until it does`);
          }
          return (Reflect.get(local, property) as (...a: unknown[]) => Promise<unknown>).apply(local, args);
        }
      };
    },
  });
}
