import { queueJobVm, slotPlan } from "../../infra/config/job-vm";
import { renderAccessMatrixMarkdown as renderTeleportAccess } from "../../infra/teleport/access";
import { credentialLifetimes } from "../../infra/identity/lifetimes";
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

/**
 * The warning for a stack whose Salt tree follows a branch (`saltMaster.followBranch`): any
 * commit pushed to it runs as root on every machine. Printed by `npm start` and in report.md.
 */
export function saltRefWarning(config: PreviewRun["config"]): string | undefined {
  if (!config.saltMaster.followBranch) return undefined;
  return (
    `WARNING: the Salt tree follows branch "${config.saltMaster.ref}" (saltMaster.followBranch: true): any commit pushed to it runs as root on every machine within minutes. ` +
    "Pin a commit instead: saltMaster.ref = 40 hex digits, and remove followBranch."
  );
}

/** Issue 15: isolation, the job VM's size and the slots of each runner host (config/job-vm.ts). */
export function jobVmColumns(c: PreviewRun["config"], spec: PreviewRun["config"]["queues"][string]): [string, string, string] {
  const { isolation, jobVm } = queueJobVm(spec);
  if (isolation === "host" || !jobVm) return ["host (jobs on the runner itself)", "", ""];
  const size = `${jobVm.cpus} cpus, ${jobVm.memoryGiB} GiB, ${jobVm.diskGiB} GiB disk, ${jobVm.maxJobMinutes} min max`;
  const slots = Object.entries(spec.runners).map(([r, runner]) => {
    const type = c.plans[runner.plan]?.[c.provider];
    const plan = slotPlan(c.provider, type, jobVm);
    return `${r}: ${plan.slots}${plan.from === "config" ? " (jobVm.slots)" : ` (${type})`}`;
  });
  return ["vm (a fresh VM per job)", size, slots.join(", ")];
}

export function renderReport(run: PreviewRun, checks: PreviewCheck[], iamMatrixMarkdown: string, controlPlaneMarkdown = "", blastRadiusMarkdown = ""): string {
  const c = run.config;
  const out: string[] = [];
  out.push(`# ci-fleet offline preview: stack \`${run.stack}\``, "");
  out.push(
    `Provider **${c.provider}**; ${run.machines.length} machines; ${run.resources.length} resources. ` +
      `Rendered under Pulumi's mock runtime: no cloud was called, ids and addresses are deterministic stand-ins, every secret is \`[secret]\`.`,
    "",
  );
  const refWarning = saltRefWarning(c);
  out.push(refWarning ? `> **${refWarning}**` : `The Salt master serves commit \`${c.saltMaster.ref}\` of \`${c.saltMaster.repository}\` (pinned).`, "");

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
      ["machine", "role", "queue", "plan", "instance type", "private IPv4", "public IPv4", "user-data bytes (equinix-metal receives these)", "gzip bytes (EC2 receives these)"],
      run.machines.map((m) => [m.hostname, m.role, m.queue ?? "", m.plan, m.instanceType, m.privateIpv4, m.publicIpv4 ?? "", String(m.userDataBytes), String(m.gzipBytes)]),
    ),
    "",
  );
  out.push(
    "No user-data carries a key pair of the Salt master or any minion key but the machine's own: the master reads its key pairs from SSM at first boot, and its first pillar sync accepts every minion that has a pillar document, before salt-master starts. So the master's user-data does not grow with the fleet.",
    "",
  );
  // Drain hooks (issue 13): what this program binds is known; what a stack's state has recorded is not, offline.
  const drained = run.resources.filter((r) => r.type !== "aws:ssm/parameter:Parameter" && (r.options as { hooks?: { beforeDelete?: string[] } }).hooks?.beforeDelete?.includes("ci-fleet-drain-runner")).length;
  out.push(
    `Drain hooks: ${drained} runner machine(s) carry \`ci-fleet-drain-runner\` in this program. Which runners have it recorded in the stack's state cannot be known offline (the preview reads no state); Pulumi runs the hooks a machine's state records, so after upgrading from a ci-fleet without them run one \`pulumi up\` before the first replacement (README, "Replacing a runner").`,
    "",
  );
  if (controlPlaneMarkdown) out.push(controlPlaneMarkdown.trim(), "");

  out.push("## Queues", "");
  out.push(
    table(
      ["queue", "agent", "trusted", "isolation", "job VM", "slots per host", "runners", "labels", "deploy targets"],
      Object.entries(c.queues).map(([q, spec]) => [
        q,
        spec.agent,
        spec.trusted ? "yes" : "no (pull requests)",
        ...jobVmColumns(c, spec),
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
  if (blastRadiusMarkdown) {
    out.push(
      "## What root on each machine yields (blast radius)",
      "",
      "Generated by tools/preview/blast-radius.ts from what the program rendered: the roles each machine can wear (instance profile, certificates and keys it holds, evaluated against every trust policy) and every role those can assume, their grants and the SSM paths they read and decrypt (evaluated with the IAM simulator, key policy included); the pillar salt/pillar/top.sls gives it; the minions that take Salt orders from it; Teleport's view of it; the credentials on it. A runner of an untrusted queue must yield nothing beyond its queue's path, or the preview fails.",
      "",
      blastRadiusMarkdown.trim(),
      "",
    );
  }
  out.push(
    "## Credential lifetimes",
    "",
    "Every AWS credential on the fleet's machines: how long it lasts, when the fleet renews it (no `pulumi up` needed) and when the machine raises the alarm (infra/identity/lifetimes.ts; the renewal scripts are held to these numbers by test/identity/pki.test.ts).",
    "",
    table(["credential", "where", "lifetime", "renewed", "alarm"], credentialLifetimes(c).map((r) => [r.credential, r.where, r.lifetime, r.renewed, r.alarm])),
    "",
  );
  out.push("## Engineer access through Teleport", "", "Which GitHub team reaches which machines, with which login (teams only; no user mappings exist).", "", renderTeleportAccess(run.teleportAccess).trim(), "");

  out.push("## Resources by type", "", table(["type", "count"], resourceCounts(run).map(([t, n]) => [`\`${t}\``, String(n)])), "");
  return out.join("\n");
}
