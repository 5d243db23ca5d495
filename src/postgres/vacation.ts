import type pg from 'pg';
import type { Vacation, VacationStore } from '../vacation/store.ts';
import { inTransaction, statement } from './pool.ts';

interface VacationRow {
  subject: string;
  body: string;
  since: string;
  until: string | null;
}

const get = statement<VacationRow>('vacation_get', 'SELECT subject, body, since, until FROM popgate_vacations WHERE address = $1');
const upsert = statement(
  'vacation_set',
  'INSERT INTO popgate_vacations (address, subject, body, since, until) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (address) DO UPDATE SET subject = excluded.subject, body = excluded.body, since = excluded.since, until = excluded.until',
);
const remove = statement('vacation_remove', 'DELETE FROM popgate_vacations WHERE address = $1');
const forgetReplies = statement('vacation_replies_forget', 'DELETE FROM popgate_vacation_replies WHERE address = $1');
const list = statement<{ address: string } & VacationRow>('vacation_list', 'SELECT address, subject, body, since, until FROM popgate_vacations ORDER BY address');
// The row lock of the conflicting row makes concurrent claims wait for each other, and the
// WHERE then sees the time the first one wrote: one reply per interval, across nodes.
const claim = statement(
  'vacation_reply_claim',
  'INSERT INTO popgate_vacation_replies (address, sender, sent_at) VALUES ($1, $2, $3) ON CONFLICT (address, sender) DO UPDATE SET sent_at = excluded.sent_at WHERE popgate_vacation_replies.sent_at <= $3 - $4::bigint',
);
const sweep = statement('vacation_replies_sweep', 'DELETE FROM popgate_vacation_replies WHERE sent_at < $1');

function vacationOf(row: VacationRow): Vacation {
  return { subject: row.subject, body: row.body, since: Number(row.since), ...(row.until === null ? {} : { until: Number(row.until) }) };
}

/** Vacation replies in the cluster's PostgreSQL. */
export class PostgresVacationStore implements VacationStore {
  readonly #pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async get(address: string): Promise<Vacation | undefined> {
    const row = (await get(this.#pool, [address])).rows[0];
    return row && vacationOf(row);
  }

  async set(address: string, vacation: Vacation): Promise<void> {
    await inTransaction(this.#pool, async (client) => {
      await upsert(client, [address, vacation.subject, vacation.body, vacation.since, vacation.until ?? null]);
      await forgetReplies(client, [address]);
    });
  }

  async remove(address: string): Promise<boolean> {
    await forgetReplies(this.#pool, [address]);
    return ((await remove(this.#pool, [address])).rowCount ?? 0) > 0;
  }

  async list(): Promise<({ address: string } & Vacation)[]> {
    return (await list(this.#pool)).rows.map((row) => ({ address: row.address, ...vacationOf(row) }));
  }

  async claimReply(address: string, sender: string, now: number, intervalMs: number): Promise<boolean> {
    return (await claim(this.#pool, [address, sender, now, intervalMs])).rowCount === 1;
  }

  async sweep(before: number): Promise<number> {
    return (await sweep(this.#pool, [before])).rowCount ?? 0;
  }
}
