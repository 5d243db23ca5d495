// Small statistics helpers for the benchmarks: medians of repeated runs and latency percentiles.

/** The sorted copy of a list of numbers (the input is left as is). */
function sorted(values: ArrayLike<number>): Float64Array {
  const copy = Float64Array.from(values as ArrayLike<number>);
  copy.sort();
  return copy;
}

/**
 * The p-th percentile (0-100) with linear interpolation between the closest ranks, the method
 * of most spreadsheets and numpy's default. NaN for an empty list.
 */
export function percentile(values: ArrayLike<number>, p: number): number {
  if (values.length === 0) return NaN;
  return percentileOfSorted(sorted(values), p);
}

function percentileOfSorted(s: Float64Array, p: number): number {
  if (s.length === 0) return NaN;
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (s.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return s[low] + (s[high] - s[low]) * (rank - low);
}

export function median(values: ArrayLike<number>): number {
  return percentile(values, 50);
}

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** p50, p99 and max of latency samples in one sort. */
export function summarize(values: ArrayLike<number>): LatencySummary {
  const s = sorted(values);
  return { count: s.length, p50: percentileOfSorted(s, 50), p99: percentileOfSorted(s, 99), max: s.length ? s[s.length - 1] : NaN };
}

/** Collects latency samples without reallocating on every push. */
export class Samples {
  #data: Float64Array;
  #length = 0;

  constructor(capacity = 1024) {
    this.#data = new Float64Array(Math.max(16, capacity));
  }

  push(value: number): void {
    if (this.#length === this.#data.length) {
      const bigger = new Float64Array(this.#data.length * 2);
      bigger.set(this.#data);
      this.#data = bigger;
    }
    this.#data[this.#length++] = value;
  }

  /** Appends every sample of another collection. */
  add(other: Samples): void {
    const values = other.values();
    for (let i = 0; i < values.length; i++) this.push(values[i]);
  }

  get length(): number {
    return this.#length;
  }

  values(): Float64Array {
    return this.#data.subarray(0, this.#length);
  }
}

/** A figure with about three significant digits, thousands separated ('-' for none). */
export function fmt(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '-';
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** `--only`: whether a workload's label contains the text, or one of its "|"-separated parts (case aside). */
export function matchesOnly(only: string | undefined, label: string): boolean {
  if (only === undefined) return true;
  const lower = label.toLowerCase();
  return only.toLowerCase().split('|').some((part) => part !== '' && lower.includes(part));
}
