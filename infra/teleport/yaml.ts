import { stringify } from "yaml";

/**
 * One YAML rendering for every Teleport document: key order is the builders' insertion
 * order (each builder inserts in a fixed order and sorts free-form maps), no line folding
 * (a folded URI or PEM would change meaning), so the same input gives the same bytes.
 */
const YAML_OPTIONS = { lineWidth: 0, minContentWidth: 0, indent: 2 } as const;

export function renderYaml(doc: unknown): string {
  return stringify(doc, YAML_OPTIONS);
}

/** A multi-document YAML stream, as `tctl create -f` reads it. */
export function renderYamlStream(docs: readonly unknown[]): string {
  return docs.map((doc) => `---\n${renderYaml(doc)}`).join("");
}

/** A copy of a string map with keys in sorted order, so label maps render stably. */
export function sortedRecord<T>(record: Readonly<Record<string, T>>): Record<string, T> {
  const sorted: Record<string, T> = {};
  for (const key of Object.keys(record).sort()) sorted[key] = record[key];
  return sorted;
}
