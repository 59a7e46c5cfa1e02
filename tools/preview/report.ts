import { renderAccessMatrixMarkdown as renderTeleportAccess } from "../../infra/teleport/access";
import { PreviewRun } from "./run";

/** One named check of the preview; the preview exits non-zero when any fails. */
export interface PreviewCheck {
  name: string;
  ok: boolean;
  detail: string;
}

function table(header: string[], rows: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, "\\|");
  return [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.map(esc).join(" | ")} |`)].join("\n");
}

export function resourceCounts(run: PreviewRun): [string, number][] {
  const counts = new Map<string, number>();
  for (const r of run.resources) counts.set(r.type, (counts.get(r.type) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/** Machines per queue (control plane first), for the summary and the report. */
export function machinesPerQueue(run: PreviewRun): [string, number][] {
  const counts = new Map<string, number>();
  for (const m of run.machines) {
    const key = m.queue ? `queue ${m.queue}` : m.role;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts.entries()];
}

export function renderReport(run: PreviewRun, checks: PreviewCheck[], iamMatrixMarkdown: string): string {
  const c = run.config;
  const out: string[] = [];
  out.push(`# ci-fleet offline preview: stack \`${run.stack}\``, "");
  out.push(
    `Provider **${c.provider}**; ${run.machines.length} machines; ${run.resources.length} resources. ` +
      `Rendered under Pulumi's mock runtime: no cloud was called, ids and addresses are deterministic stand-ins, every secret is \`[secret]\`.`,
    "",
  );

  out.push("## Checks", "", table(["check", "result", "detail"], checks.map((k) => [k.name, k.ok ? "ok" : "**FAILED**", k.detail])), "");

  out.push("## Missing secrets", "");
  if (c.missingSecrets.length === 0) out.push("None: every secret the fleet needs is set.", "");
  else {
    out.push(
      "Unset, or set but not decryptable offline. Placeholders stood in (still handled as secrets); `pulumi up` refuses to run until they are set with `pulumi config set --secret`.",
      "",
      table(["config key"], c.missingSecrets.map((s) => [`\`${s}\``])),
      "",
    );
  }

  out.push("## Machines", "");
  out.push(
    table(
      ["machine", "role", "queue", "plan", "instance type", "private IPv4", "public IPv4", "user-data bytes", "gzip bytes (EC2 limit 16384)"],
      run.machines.map((m) => [m.hostname, m.role, m.queue ?? "", m.plan, m.instanceType, m.privateIpv4, m.publicIpv4 ?? "", String(m.userDataBytes), String(m.gzipBytes)]),
    ),
    "",
  );
  const master = run.machines.find((m) => m.role === "salt-master");
  if (master?.preSeededKeys !== undefined) {
    out.push(
      `The Salt master's user-data pre-seeds ${master.preSeededKeys} of ${run.machines.length} minion keys; its first pillar sync accepts every minion that has a pillar document in SSM before salt-master starts.`,
      "",
    );
  }

  out.push("## Queues", "");
  out.push(
    table(
      ["queue", "agent", "trusted", "runners", "labels", "deploy targets"],
      Object.entries(c.queues).map(([q, spec]) => [
        q,
        spec.agent,
        spec.trusted ? "yes" : "no (pull requests)",
        String(Object.keys(spec.runners).length),
        spec.labels.join(", "),
        Object.entries(spec.deployTargets).map(([t, d]) => `${t} (${d.accountId}/${d.roleName})`).join(", ") || "none",
      ]),
    ),
    "",
  );

  out.push("## CI event archive", "");
  const archive = c.auditArchive;
  const bucket = run.resources.find((r) => r.type === "aws:s3/bucket:Bucket" && r.parent?.endsWith("-ci-events"));
  out.push(
    archive.enabled
      ? `Enabled: Buildkite's EventBridge events from \`${archive.partnerEventSource}\` go through Kinesis Data Firehose to the encrypted, versioned bucket \`${String(bucket?.inputs.bucket ?? "")}\`, one prefix per event type; readable only by the auditor role, assumable by ${(archive.auditorPrincipalArns ?? []).map((a) => `\`${a}\``).join(", ")}.`
      : "Disabled for this stack (`auditArchive.enabled: false`).",
    "",
  );

  out.push("## AWS access matrix (evaluated with an IAM policy simulator)", "", iamMatrixMarkdown.trim(), "");
  out.push("## Engineer access through Teleport", "", "Which GitHub team reaches which machines, with which login (teams only; no user mappings exist).", "", renderTeleportAccess(run.teleportAccess).trim(), "");

  out.push("## Resources by type", "", table(["type", "count"], resourceCounts(run).map(([t, n]) => [`\`${t}\``, String(n)])), "");
  return out.join("\n");
}
