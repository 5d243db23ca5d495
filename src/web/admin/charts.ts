// The dashboard's charts, drawn on the server as SVG: no script, no chart library, nothing the
// strict content security policy would have to allow. The only text in the drawing is built
// here from numbers and our own titles, escaped anyway.

const WIDTH = 576;
const HEIGHT = 120;
const PAD = 28;

function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A bar chart of one series (oldest value first), with its maximum and the time axis labelled. */
export function barChart(title: string, values: readonly number[], totalLabel: string): string {
  const max = Math.max(1, ...values);
  const plotHeight = HEIGHT - PAD;
  const step = WIDTH / values.length;
  const bars = values
    .map((value, i) => {
      if (value <= 0) return '';
      const height = Math.max(1, (value / max) * (plotHeight - 4));
      return `<rect x="${(i * step).toFixed(1)}" y="${(plotHeight - height).toFixed(1)}" width="${Math.max(1, step - 0.5).toFixed(1)}" height="${height.toFixed(1)}"/>`;
    })
    .join('');
  const label = `${title}: ${totalLabel}, at most ${max} in 5 minutes`;
  return (
    `<svg class="chart" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="${escapeXml(label)}" xmlns="http://www.w3.org/2000/svg">` +
    `<title>${escapeXml(label)}</title>` +
    `<line class="axis" x1="0" y1="${plotHeight}" x2="${WIDTH}" y2="${plotHeight}"/>` +
    `<g class="bars">${bars}</g>` +
    `<text x="0" y="${HEIGHT - 8}">24 h ago</text><text x="${WIDTH}" y="${HEIGHT - 8}" text-anchor="end">now</text>` +
    `<text x="${WIDTH}" y="12" text-anchor="end">max ${max}</text>` +
    '</svg>'
  );
}
