// What every storage contract suite is given: a way to open a fresh, empty store of one
// backend. The suites are written against the interfaces only (no SQL, no files, time only
// through `now` arguments), so the same suites run against the embedded backends today and
// against Redis or PostgreSQL ones later.

export interface OpenedStore<Store> {
  store: Store;
  /**
   * A second instance on the same data, as another process (a restart, the CLI, another node)
   * would open it. Absent for backends whose state lives in one process only.
   */
  reopen?: () => Promise<Store>;
  /** Closes every instance opened and throws the data away. */
  close: () => Promise<void>;
}

export type OpenStore<Store> = () => Promise<OpenedStore<Store>>;

/** Runs `check` on a fresh store and closes it whatever happens. */
export async function withStore<Store>(open: OpenStore<Store>, check: (opened: OpenedStore<Store>) => Promise<void>): Promise<void> {
  const opened = await open();
  try {
    await check(opened);
  } finally {
    await opened.close();
  }
}
