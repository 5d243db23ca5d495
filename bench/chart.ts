// A bar chart as a standalone SVG (no library, no fonts to embed): one bar per workload with a
// target, showing how many times better popgate is than the peer, with the target marked.

export interface ChartRow {
  label: string;
  /** popgate over the peer, as "times better" (>1 = popgate ahead). */
  value: number;
  /** The target on the same scale. */
  target: number;
  met: boolean;
}

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function renderChart(rows: ChartRow[], title: string): string {
  const labelWidth = 470;
  const plotWidth = 420;
  const rowHeight = 28;
  const top = 56;
  const height = top + rows.length * rowHeight + 44;
  const width = labelWidth + plotWidth + 90;
  // Past 5x the bars are cut (the figure is still written): one 30x row would squash the rest.
  const max = Math.min(5, Math.max(1, ...rows.map((r) => Math.max(r.value, r.target)))) * 1.1;
  const x = (v: number) => labelWidth + (Math.min(v, max) / max) * plotWidth;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="bold">${escape(title)}</text>`,
    `<text x="16" y="44" fill="#555">popgate's figure over the peer's (times better; bars reach past the dashed mark where the target is met)</text>`,
  ];
  // Grid at every whole multiple.
  for (let v = 0; v <= max; v += 1) {
    parts.push(`<line x1="${x(v)}" y1="${top - 4}" x2="${x(v)}" y2="${top + rows.length * rowHeight}" stroke="${v === 1 ? '#888' : '#e4e4e4'}"/>`);
    parts.push(`<text x="${x(v)}" y="${top + rows.length * rowHeight + 16}" text-anchor="middle" fill="#555">${v}x</text>`);
  }
  rows.forEach((row, i) => {
    const y = top + i * rowHeight;
    parts.push(`<text x="${labelWidth - 10}" y="${y + 17}" text-anchor="end">${escape(row.label)}</text>`);
    parts.push(`<rect x="${labelWidth}" y="${y + 5}" width="${Math.max(1, x(row.value) - labelWidth)}" height="${rowHeight - 10}" fill="${row.met ? '#2e7d32' : '#c62828'}"/>`);
    parts.push(`<line x1="${x(row.target)}" y1="${y + 1}" x2="${x(row.target)}" y2="${y + rowHeight - 1}" stroke="#111" stroke-width="2" stroke-dasharray="4 3"/>`);
    const cut = row.value > max;
    parts.push(`<text x="${x(row.value) + 6}" y="${y + 17}">${cut ? '&#8594; ' : ''}${row.value.toFixed(row.value >= 10 ? 0 : 2)}x</text>`);
  });
  parts.push(`<text x="${labelWidth}" y="${height - 8}" fill="#555">green: target met, red: missed; dashed: the target</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
