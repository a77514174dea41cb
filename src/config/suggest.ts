// "Did you mean": the known name nearest to a misspelt one, if any is near enough to be a typo.

/** Ignores case, dashes and underscores, so `tunnel-path` and `TunnelPath` find `tunnelPath`. */
export function suggestion(name: string, known: readonly string[]): string | undefined {
  const wanted = normalize(name);
  // Two edits turn any short name into another: allow fewer for short ones.
  const nearEnough = Math.min(2, Math.ceil(wanted.length / 4));
  let best: { name: string; distance: number } | undefined;
  for (const candidate of known) {
    const distance = editDistance(wanted, normalize(candidate));
    if (distance <= nearEnough && (best === undefined || distance < best.distance))
      best = { name: candidate, distance };
  }
  return best?.name;
}

function normalize(name: string): string {
  return name.toLowerCase().replace(/[-_]/g, '');
}

/** Levenshtein distance, one row at a time. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      row.push(Math.min(previous[j]! + 1, row[j - 1]! + 1, substitution));
    }
    previous = row;
  }
  return previous[b.length]!;
}
