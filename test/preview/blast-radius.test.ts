import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { gunzipSync, gzipSync } from "zlib";
import * as runModule from "../../tools/preview/run";
import type { PreviewRun } from "../../tools/preview/run";
import { buildPreview } from "../../tools/preview/main";
import { BLAST_RADIUS_CHECK, blastRadiusCheck, computeBlastRadius, renderBlastRadiusMarkdown, type BlastRadius, type BlastRadiusRow } from "../../tools/preview/blast-radius";
import { previewStack, ROOT } from "../support/preview";

/**
 * The blast radius: what root on each kind of machine yields, computed from the rendered
 * fleet (the captured resources and the pillar documents the program writes), and the check
 * that fails the preview when a runner of an untrusted queue yields more than its queue's path.
 * The mutations break the rendered fleet one way each, as a bad change to the program would.
 */

const SALT_ROOT = path.join(ROOT, "salt");
const runs: Record<string, PreviewRun> = {};
const results: Record<string, BlastRadius> = {};

/** A deep copy of a run: resources and raw inputs may then be edited freely. */
function copyRun(run: PreviewRun): PreviewRun {
  return {
    ...run,
    resources: JSON.parse(JSON.stringify(run.resources)) as PreviewRun["resources"],
    rawInputs: new Map([...run.rawInputs].map(([k, v]) => [k, JSON.parse(JSON.stringify(v)) as Record<string, unknown>])),
  };
}

const row = (r: BlastRadius, kind: string): BlastRadiusRow => {
  const found = r.rows.find((x) => x.kind === kind);
  if (!found) throw new Error(`no row ${kind} in ${r.rows.map((x) => x.kind).join(", ")}`);
  return found;
};
const text = (lines: string[]) => lines.join("\n");

beforeAll(async () => {
  for (const stack of ["production", "production-aws"]) {
    runs[stack] = await previewStack(stack);
    results[stack] = await computeBlastRadius(runs[stack], { saltRoot: SALT_ROOT });
  }
}, 120_000);

describe.each(["production", "production-aws"])("the blast radius of stack %s", (stack) => {
  const roleName = (kind: string, q?: string) => `ci-fleet-${stack}-${kind}${q ? `-${q}` : ""}`;

  test("one row per kind of machine, with its machines", () => {
    const r = results[stack];
    expect(r.rows.map((x) => [x.kind, x.machines.length])).toEqual([
      ["Salt master", 1],
      ["Teleport", 1],
      ["runner of queue `default` (untrusted)", 4],
      ["runner of queue `infra` (trusted)", 2],
      ["runner of queue `release` (trusted)", 1],
    ]);
    expect(row(r, "runner of queue `default` (untrusted)").machines).toEqual([1, 2, 3, 4].map((n) => `${stack}-default-pr-${n}`));
  });

  test("the untrusted runners yield their own queue's path and nothing else: the check passes", () => {
    const r = results[stack];
    expect(r.problems).toEqual([]);
    expect(blastRadiusCheck(r)).toEqual({ name: BLAST_RADIUS_CHECK, ok: true, detail: "4 untrusted runners checked" });
    const aws = text(row(r, "runner of queue `default` (untrusted)").aws);
    expect(aws).toContain(`wears \`${roleName("agent", "default")}\` (agent of default)`);
    expect(aws).toContain(`reads and decrypts (evaluated): \`/ci-fleet/${stack}/default/*\``);
    for (const other of ["infra", "release", "pillar"]) expect(aws).not.toContain(`/ci-fleet/${stack}/${other}/`);
    expect(aws).not.toMatch(/deploy|salt-master|teleport/);
    if (stack === "production-aws") {
      // The instance wears the queue's host role, which only assumes the queue's agent role.
      expect(aws).toContain(`wears \`${roleName("host", "default")}\` (host of default) via EC2 instance profile \`${roleName("host", "default")}\``);
      expect(aws).toContain(`wears \`${roleName("agent", "default")}\` (agent of default) via sts:AssumeRole from \`${roleName("host", "default")}\``);
    } else {
      expect(aws).toContain("via the certificate the fleet issues it (OU=default");
    }
    // The one fleet-wide pillar file a runner reads holds public data only (the CA pins).
    expect(row(r, "runner of queue `default` (untrusted)").pillar).toContain("`ci_fleet_teleport_ca`: 1 key");
    expect(text(row(r, "runner of queue `default` (untrusted)").pillar)).not.toContain("ci_fleet_teleport_ca.pins` (secret)");
    const access = text(row(r, "runner of queue `default` (untrusted)").access);
    expect(access).toContain("Salt: a minion; requests its own pillar only");
    expect(access).toContain("no access to other machines");
    expect(access).toContain("no forwarded agent");
  });

  test("a trusted runner reaches its queue's deploy roles, and only those", () => {
    const aws = text(row(results[stack], "runner of queue `infra` (trusted)").aws);
    expect(aws).toContain("`ci-fleet-deploy-infra` (deploy of infra, target infra-production, account 456789012345) via sts:AssumeRole");
    expect(aws).toContain("`ci-fleet-deploy-infra` (deploy of infra, target infra-staging, account 345678901234) via sts:AssumeRole");
    expect(aws).not.toContain("ci-fleet-deploy-release");
    expect(aws).not.toContain(`/ci-fleet/${stack}/default/`);
  });

  test("root on the Salt master is root everywhere: every minion takes its orders, it reads every pillar document", () => {
    const master = row(results[stack], "Salt master");
    expect(text(master.access)).toContain("Salt: master of 8 other minions (every other machine)");
    expect(text(master.aws)).toContain(`reads and decrypts (evaluated): \`/ci-fleet/${stack}/pillar/*\``);
    if (stack === "production") {
      // It holds the Roles Anywhere CA key (fleet-issued certificates): it can wear every role.
      for (const q of ["default", "infra", "release"]) expect(text(master.aws)).toContain(`wears \`${roleName("agent", q)}\` (agent of ${q}) via a certificate it signs with the Roles Anywhere CA key`);
      expect(text(master.pillar)).toContain("`ci_fleet_master.roles_anywhere_ca.private_key_pem` (secret)");
    }
  });

  test("root on the Teleport machine holds the cluster's CAs", () => {
    const teleport = row(results[stack], "Teleport");
    expect(text(teleport.access)).toContain("Teleport: the cluster's auth service (its CAs sign any login on every node");
    expect(text(teleport.aws)).toContain(`wears \`${roleName("teleport")}\` (teleport)`);
  });

  test("credentials and how long they last", () => {
    const creds = text(row(results[stack], "runner of queue `default` (untrusted)").credentials);
    expect(creds).toContain(`\`${roleName("agent", "default")}\` (agent of default) session: at most 1 h`);
    // A Teleport join token is reusable until revoked, and minted only on equinix-metal (aws
    // joins with the iam method); a JIT config is single use, and only for GitHub runners.
    const joinToken = "pillar `ci_fleet_inline.teleport_join_token` (only while the orchestration has one for this minion): served at most 15 min, reusable by whoever holds it until the master revokes it";
    if (stack === "production") expect(creds).toContain(joinToken);
    else expect(creds).not.toContain("teleport_join_token");
    expect(creds).toContain("pillar `ci_fleet_inline.github_jit_config` (only while the orchestration has one for this minion): served at most 1 h, single use (one runner registration)");
    expect(text(row(results[stack], "runner of queue `release` (trusted)").credentials)).not.toContain("github_jit_config");
    expect(creds).not.toContain("single use,");
    expect(creds).toContain("its Salt minion key: no expiry");
  });

  test("the Roles Anywhere certificate a runner makes is in its credentials, with its lifetime and no revocation", () => {
    const hours = runs[stack].config.identity.runnerCertificateHours;
    const line = (h: number) => `Roles Anywhere certificate and key it makes (root-only, on the machine): valid ${h} h, the master signs the next one with ${h / 2} h left, so two may be valid at once; no revocation list: a copy works until it expires`;
    const untrusted = text(row(results[stack], "runner of queue `default` (untrusted)").credentials);
    const trusted = text(row(results[stack], "runner of queue `infra` (trusted)").credentials);
    if (stack === "production") {
      expect(untrusted).toContain(line(Math.min(72, hours)));
      expect(trusted).toContain(line(hours));
    } else {
      // On aws the runners hold no certificate: the instance role and sessions of it.
      expect(untrusted).not.toContain("Roles Anywhere certificate");
      expect(trusted).not.toContain("Roles Anywhere certificate");
    }
  });

  test("the table is what report.md shows, and two computations give the same text", async () => {
    const again = await computeBlastRadius(runs[stack], { saltRoot: SALT_ROOT });
    expect(renderBlastRadiusMarkdown(again)).toBe(renderBlastRadiusMarkdown(results[stack]));
    expect(renderBlastRadiusMarkdown(results[stack])).toContain("No runner of an untrusted queue yields anything beyond its own queue's path.");
  });
});

describe("a mutated fleet fails the check, with the problem named", () => {
  const stack = "production";
  const where = `${stack}-default-pr-1 (queue default, untrusted)`;

  async function mutated(edit: (run: PreviewRun) => void, which = stack): Promise<BlastRadius> {
    const run = copyRun(runs[which]);
    edit(run);
    return computeBlastRadius(run, { saltRoot: SALT_ROOT });
  }

  function editPolicy(run: PreviewRun, resourceName: string, statement: Record<string, unknown>): void {
    const policy = run.resources.find((r) => r.type === "aws:iam/rolePolicy:RolePolicy" && r.name === resourceName);
    if (!policy) throw new Error(`no role policy ${resourceName}`);
    const doc = JSON.parse(policy.inputs.policy as string) as { Statement: unknown[] };
    doc.Statement.push(statement);
    policy.inputs.policy = JSON.stringify(doc);
  }

  function editPillar(run: PreviewRun, minion: string, edit: (doc: Record<string, any>) => void): void {
    const key = [...run.rawInputs.keys()].find((k) => k.startsWith("aws:ssm/parameter:Parameter::") && run.rawInputs.get(k)!.name === `/ci-fleet/${stack}/pillar/${minion}`);
    if (!key) throw new Error(`no pillar document of ${minion}`);
    const inputs = run.rawInputs.get(key)!;
    const doc = JSON.parse(inputs.value as string) as Record<string, any>;
    edit(doc);
    inputs.value = JSON.stringify(doc);
  }

  test("a pillar file every minion includes, other than the declared public ones, fails closed", async () => {
    // A copy of the Salt tree whose minion pillar includes one more fleet-wide file.
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-blast-salt-"));
    try {
      fs.cpSync(SALT_ROOT, root, { recursive: true });
      const minionSls = path.join(root, "pillar/minion.sls");
      const original = fs.readFileSync(minionSls, "utf8");
      fs.writeFileSync(minionSls, original.replace("{% include 'teleport/ca_pins.json' ignore missing %}", "{% include 'teleport/all_tokens.json' ignore missing %}"));
      expect(fs.readFileSync(minionSls, "utf8")).not.toBe(original);
      const r = await computeBlastRadius(runs[stack], { saltRoot: root });
      expect(r.problems.join("\n")).toContain(`${where}: pillar: salt/pillar/minion.sls: includes 'inline/' ~ opts.id ~ '/' ~ key ~ '.json', 'teleport/all_tokens.json': not files named by opts.id (fail closed)`);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test("the default queue's role granted another queue's SSM path", async () => {
    const r = await mutated((run) =>
      editPolicy(run, `${stack}-identity-agent-default`, { Sid: "Oops", Effect: "Allow", Action: "ssm:GetParameter", Resource: `arn:aws:ssm:us-east-2:210987654321:parameter/ci-fleet/${stack}/infra/*` }),
    );
    expect(r.problems).toEqual(
      expect.arrayContaining([
        `${where}: role ci-fleet-${stack}-agent-default grants ssm:GetParameter on arn:aws:ssm:us-east-2:210987654321:parameter/ci-fleet/${stack}/infra/*`,
        `${where}: role ci-fleet-${stack}-agent-default can read SSM /ci-fleet/${stack}/infra/ (evaluated: GetParameter or GetParametersByPath allowed)`,
      ]),
    );
    const check = blastRadiusCheck(r);
    expect(check.ok).toBe(false);
    expect(check.detail).toContain(`grants ssm:GetParameter on arn:aws:ssm:us-east-2:210987654321:parameter/ci-fleet/${stack}/infra/*`);
    // The table says it too.
    expect(renderBlastRadiusMarkdown(r)).toContain("**What an untrusted runner yields beyond its queue's path:**");
  });

  test("a wildcard grant on the fleet's whole prefix", async () => {
    const r = await mutated((run) => editPolicy(run, `${stack}-identity-agent-default`, { Sid: "Wide", Effect: "Allow", Action: ["ssm:GetParameters*"], Resource: `arn:aws:ssm:us-east-2:210987654321:parameter/ci-fleet/${stack}/*` }));
    expect(r.problems).toEqual(expect.arrayContaining([`${where}: role ci-fleet-${stack}-agent-default can read SSM /ci-fleet/${stack}/pillar/ (evaluated: GetParameter or GetParametersByPath allowed)`]));
  });

  test("another queue's role that admits the untrusted queue's certificate", async () => {
    const r = await mutated((run) => {
      const role = run.resources.find((x) => x.type === "aws:iam/role:Role" && x.name === `${stack}-identity-agent-infra`)!;
      role.inputs.assumeRolePolicy = String(role.inputs.assumeRolePolicy).replace('"aws:PrincipalTag/x509Subject/OU":"infra"', '"aws:PrincipalTag/x509Subject/OU":["infra","default"]');
    });
    expect(r.problems).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`^${where.replace(/[()]/g, "\\$&")}: can wear ci-fleet-${stack}-agent-infra \\(agent of infra\\) through the certificate the fleet issues it`))]));
    // Through the infra role, the deploy roles too.
    expect(r.problems.some((p) => p.startsWith(`${where}: can wear ci-fleet-deploy-infra (deploy of infra`))).toBe(true);
  });

  test("on aws: the default host role may assume another queue's agent role", async () => {
    const aws = "production-aws";
    const r = await mutated((run) => {
      const infra = run.resources.find((x) => x.type === "aws:iam/role:Role" && x.name === `${aws}-identity-agent-infra`)!;
      const trust = JSON.parse(infra.inputs.assumeRolePolicy as string) as { Statement: { Principal: { AWS: string | string[] } }[] };
      trust.Statement[0].Principal.AWS = [trust.Statement[0].Principal.AWS as string, `arn:aws:iam::210987654321:role/ci-fleet-${aws}-host-default`];
      infra.inputs.assumeRolePolicy = JSON.stringify(trust);
      editPolicy(run, `${aws}-identity-host-default`, { Sid: "Oops", Effect: "Allow", Action: "sts:AssumeRole", Resource: `arn:aws:iam::210987654321:role/ci-fleet-${aws}-agent-infra` });
    }, aws);
    const w = `${aws}-default-pr-1 (queue default, untrusted)`;
    expect(r.problems).toEqual(
      expect.arrayContaining([
        `${w}: can wear ci-fleet-${aws}-agent-infra (agent of infra) through sts:AssumeRole from ci-fleet-${aws}-host-default`,
        `${w}: role ci-fleet-${aws}-host-default grants sts:AssumeRole on arn:aws:iam::210987654321:role/ci-fleet-${aws}-agent-infra`,
      ]),
    );
  });

  test("a pillar key of another machine in an untrusted runner's document", async () => {
    const r = await mutated((run) => editPillar(run, `${stack}-default-pr-1`, (doc) => (doc.ci_fleet_master = { github_app: { private_key_pem: "x" } })));
    expect(r.problems).toEqual([`${where}: pillar key ci_fleet_master is the salt-master's`]);
  });

  test("a pillar value naming another runner, or another queue's path", async () => {
    const r = await mutated((run) =>
      editPillar(run, `${stack}-default-pr-1`, (doc) => {
        doc.ci_fleet.runner.peer = `${stack}-infra-infra-1`;
        doc.ci_fleet.aws.ssm_prefix = `/ci-fleet/${stack}/infra/`;
      }),
    );
    expect(r.problems).toEqual([`${where}: pillar ci_fleet.aws.ssm_prefix names /ci-fleet/${stack}/infra/, outside /ci-fleet/${stack}/default/`, `${where}: pillar ci_fleet.runner.peer names another runner, ${stack}-infra-infra-1`]);
  });

  test("Salt peer rights that match an untrusted runner", async () => {
    const r = await mutated((run) =>
      editPillar(run, `${stack}-salt-master`, (doc) => {
        doc.ci_fleet_master.master_config = String(doc.ci_fleet_master.master_config).replace("peer: {}", "peer:\n  .*:\n    - test.ping");
      }),
    );
    expect(r.problems).toEqual([1, 2, 3, 4].map((n) => `${stack}-default-pr-${n} (queue default, untrusted): Salt peer: test.ping (it could publish to other minions)`));
  });

  test("Teleport: a runner's node config that runs the auth service", async () => {
    const r = await mutated((run) =>
      editPillar(run, `${stack}-default-pr-1`, (doc) => {
        doc.ci_fleet.teleport.node_config = String(doc.ci_fleet.teleport.node_config).replace("auth_service:\n  enabled: false", "auth_service:\n  enabled: true");
      }),
    );
    expect(r.problems).toEqual([`${where}: runs Teleport's auth_service`]);
  });

  test("Teleport: a role reaching the untrusted runners that forwards the engineer's agent", async () => {
    const r = await mutated((run) =>
      editPillar(run, `${stack}-teleport`, (doc) => {
        const yaml = gunzipSync(new Uint8Array(Buffer.from(doc.ci_fleet_teleport.resources_gzip_base64, "base64"))).toString("utf8");
        const edited = yaml.replace(/(name: runner-operator-default\n[\s\S]*?forward_agent: )false/, "$1true");
        expect(edited).not.toBe(yaml);
        doc.ci_fleet_teleport.resources_gzip_base64 = gzipSync(new Uint8Array(Buffer.from(edited, "utf8"))).toString("base64");
      }),
    );
    expect(r.problems).toEqual([1, 2, 3, 4].map((n) => `${stack}-default-pr-${n} (queue default, untrusted): team maintainers forwards agents (forward_agent): every machine its roles reach, while one of them is logged in here`));
  });

  test("a failed check fails the preview: `npm start` exits 1, report.md names the problem", async () => {
    const bad = copyRun(runs[stack]);
    editPolicy(bad, `${stack}-identity-agent-default`, { Sid: "Oops", Effect: "Allow", Action: "ssm:GetParameter", Resource: `arn:aws:ssm:us-east-2:210987654321:parameter/ci-fleet/${stack}/release/*` });
    const spy = jest.spyOn(runModule, "runPreview").mockResolvedValue(bad);
    try {
      const out = await buildPreview(ROOT, stack);
      const check = out.checks.find((k) => k.name === BLAST_RADIUS_CHECK)!;
      expect(check.ok).toBe(false);
      expect(check.detail).toContain(`${where}: role ci-fleet-${stack}-agent-default grants ssm:GetParameter on arn:aws:ssm:us-east-2:210987654321:parameter/ci-fleet/${stack}/release/*`);
      expect(out.files["report.md"]).toContain(`| ${BLAST_RADIUS_CHECK} | **FAILED** |`);
      expect(out.files["report.md"]).toContain(`- ${where}: role ci-fleet-${stack}-agent-default can read SSM /ci-fleet/${stack}/release/`);
    } finally {
      spy.mockRestore();
    }
  }, 120_000);
});
