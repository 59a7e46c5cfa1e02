import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as zlib from "zlib";
import { parse, parseAllDocuments } from "yaml";
import { teleportNodeLabels, TELEPORT_ASSIGNED_LABEL_PREFIX, TELEPORT_JOIN_TOKEN_PATH } from "../../infra/teleport/config";
import { TELEPORT_EC2_IID_TTL } from "../../infra/teleport/resources";
import type { TeleportRole } from "../../infra/teleport/roles";
import type { PreviewRun } from "../../tools/preview/run";
import { previewStack, ROOT } from "../support/preview";

/**
 * What the program really renders for Teleport on both stacks (the pillar documents it writes
 * to SSM, the resources stream `tctl create -f` applies, the AWS resources), against what a
 * rooted machine must not be able to do:
 * - join as anything but itself: aws joins with the `ec2` token, under the host id the auth
 *   service derives from the AWS-signed instance identity document; equinix-metal with a token
 *   file only the master fills, through the machine's own pillar;
 * - choose the labels roles select on: every key of every role's node_labels is an assigned
 *   (`dynamic/`) label that no node config renders; the master hands out exactly each
 *   machine's own labels (the orchestration run on the stack's real pillar documents);
 * - alter its recordings: the proxy records (proxy-sync) and checks node host keys;
 * - lose the cluster with its disk: the state is in DynamoDB (PITR), apart from the events.
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

interface Document {
  ci_fleet: { role: string; provider: string; teleport: { labels: Record<string, string>; node_config?: string } };
  ci_fleet_teleport?: { auth_config: string; resources_gzip_base64: string };
}

interface Rendered {
  run: PreviewRun;
  stack: string;
  documents: Record<string, Document>;
  teleportId: string;
  auth: any;
  nodeConfigs: Record<string, any>;
  resources: any[];
  roles: TeleportRole[];
}

async function render(stack: string): Promise<Rendered> {
  const run = await previewStack(stack);
  const documents: Record<string, Document> = {};
  for (const [key, inputs] of run.rawInputs) {
    const name = inputs.name as string | undefined;
    if (key.startsWith("aws:ssm/parameter:Parameter::") && name?.startsWith(`/ci-fleet/${run.config.stack}/pillar/`) && !name.slice(`/ci-fleet/${run.config.stack}/pillar/`.length).includes("/")) {
      const id = name.slice(`/ci-fleet/${run.config.stack}/pillar/`.length);
      // Minion documents only (not, e.g., bootstrap/... material under the same prefix).
      if (run.machines.some((m) => m.hostname === id)) documents[id] = JSON.parse(inputs.value as string);
    }
  }
  const teleportId = Object.keys(documents).find((id) => documents[id].ci_fleet.role === "teleport")!;
  const teleport = documents[teleportId].ci_fleet_teleport!;
  const resources = parseAllDocuments(zlib.gunzipSync(new Uint8Array(Buffer.from(teleport.resources_gzip_base64, "base64"))).toString("utf8")).map((d) => d.toJSON());
  const nodeConfigs: Record<string, any> = {};
  for (const [id, doc] of Object.entries(documents)) if (doc.ci_fleet.teleport.node_config) nodeConfigs[id] = parse(doc.ci_fleet.teleport.node_config);
  return {
    run,
    stack: run.config.stack,
    documents,
    teleportId,
    auth: parse(teleport.auth_config),
    nodeConfigs,
    resources,
    roles: resources.filter((r) => r.kind === "role"),
  };
}

const cache = new Map<string, Promise<Rendered>>();
const rendered = (stack: string) => {
  if (!cache.has(stack)) cache.set(stack, render(stack));
  return cache.get(stack)!;
};

/** Every label key a role's allow or deny node_labels names (the `*` wildcard aside). */
function roleLabelKeys(roles: TeleportRole[]): string[] {
  const keys = new Set<string>();
  for (const role of roles) {
    for (const side of [role.spec.allow, role.spec.deny]) for (const key of Object.keys(side.node_labels ?? {})) if (key !== "*") keys.add(key);
  }
  return [...keys].sort();
}

describe.each([
  ["production", "equinix-metal"],
  ["production-aws", "aws"],
])("Teleport as the program renders it for stack %s (%s)", (stack, provider) => {
  let r: Rendered;
  beforeAll(async () => {
    r = await rendered(stack);
    expect(r.run.config.provider).toBe(provider);
    expect(Object.keys(r.nodeConfigs).length).toBe(r.run.machines.length - 1);
  }, 120_000);

  test("every node joins with the strongest method its provider allows", () => {
    const tokens = r.resources.filter((d) => d.kind === "token");
    for (const [id, config] of Object.entries(r.nodeConfigs)) {
      const join = config.teleport.join_params;
      if (provider === "equinix-metal") {
        // A file only the master's orchestration fills, through this machine's own pillar.
        expect({ id, join }).toEqual({ id, join: { method: "token", token_name: TELEPORT_JOIN_TOKEN_PATH } });
        continue;
      }
      // issue 12.3: `ec2`, the one aws method whose legacy join RPC too binds the host id
      // (<account>-<instance id>, from the AWS-signed identity document); `iam` and `token`
      // sign whatever host id the client asks for on Teleport 18's legacy RPCs.
      expect({ id, method: join.method }).toEqual({ id, method: "ec2" });
      const token = tokens.find((t) => t.metadata.name === join.token_name);
      expect({ id, token: join.token_name, found: token !== undefined }).toEqual({ id, token: join.token_name, found: true });
      // The account and region the machine really runs in: its instance's role's account, the stack's region.
      const instance = r.run.resources.find((res) => res.type === "aws:ec2/instance:Instance" && (res.inputs.tags as Record<string, string>)?.Name === id)!;
      const profile = r.run.resources.find((res) => res.type === "aws:iam/instanceProfile:InstanceProfile" && res.inputs.name === instance.inputs.iamInstanceProfile)!;
      const role = r.run.resources.find((res) => res.type === "aws:iam/role:Role" && res.inputs.name === profile.inputs.role)!;
      const account = String(role.outputs.arn).split(":")[4];
      expect({ id, spec: token.spec }).toEqual({
        id,
        spec: { roles: ["Node"], join_method: "ec2", aws_iid_ttl: TELEPORT_EC2_IID_TTL, allow: [{ aws_account: account, aws_regions: [r.run.config.aws!.region] }] },
      });
    }
    if (provider === "equinix-metal") expect(tokens).toEqual([]);
    else expect(tokens.map((t) => t.spec.join_method)).toEqual(["ec2"]);
  });

  test("which join lets a client choose its host id: none on aws (ec2 only, checked by the auth service); on equinix-metal every join does", () => {
    const methods = r.resources.filter((d) => d.kind === "token").map((t) => t.spec.join_method);
    // The Teleport machine's role: the auth service calls ec2:DescribeInstances itself (lib/join/ec2join checkInstanceRunning).
    const teleportInstance = r.run.resources.find((res) => res.type === "aws:ec2/instance:Instance" && (res.inputs.tags as Record<string, string>)?.Name === r.teleportId);
    const ec2Policies = r.run.resources.filter((res) => res.type === "aws:iam/rolePolicy:RolePolicy" && res.inputs.name === "teleport-ec2-join");
    if (provider === "equinix-metal") {
      // The truth on equinix-metal: no token resource at all; every node joins with the `token`
      // method (a token the master mints, one per machine until forget_teleport_host), whose
      // legacy join RPC signs whatever host id the client asks for. What holds the host id is
      // the master's record of each machine's own host_uuid (test_teleport_trust.py
      // TeleportReviewFindingsTest), not the join.
      expect({ methods, teleportInstance, ec2Policies }).toEqual({ methods: [], teleportInstance: undefined, ec2Policies: [] });
      expect(Object.values(r.nodeConfigs).map((c) => c.teleport.join_params.method)).toEqual(Object.values(r.nodeConfigs).map(() => "token"));
      return;
    }
    expect(methods).toEqual(["ec2"]);
    const profile = r.run.resources.find((res) => res.type === "aws:iam/instanceProfile:InstanceProfile" && res.inputs.name === teleportInstance!.inputs.iamInstanceProfile)!;
    // Written out, not recomputed by the function that rendered it.
    expect(ec2Policies.map((p) => ({ role: p.outputs.role ?? p.inputs.role, policy: JSON.parse(p.inputs.policy as string) }))).toEqual([
      {
        role: profile.inputs.role,
        policy: {
          Version: "2012-10-17",
          Statement: [
            {
              Sid: "Ec2JoinInstanceIsRunning",
              Effect: "Allow",
              Action: "ec2:DescribeInstances",
              Resource: "*",
              Condition: { StringEquals: { "aws:RequestedRegion": r.run.config.aws!.region } },
            },
          ],
        },
      },
    ]);
  });

  test("the master reads each machine's host id where that machine's Teleport keeps it (<data_dir>/host_uuid)", () => {
    // lib/utils/hostid: FileName = "host_uuid", GetPath(dataDir) = filepath.Join(dataDir, FileName).
    const module = fs.readFileSync(path.join(ROOT, "salt/_modules/ci_fleet_teleport.py"), "utf8");
    const file = /^HOST_UUID_FILE = "([^"]+)"$/m.exec(module)?.[1];
    for (const [id, config] of [[r.teleportId, r.auth], ...Object.entries(r.nodeConfigs)] as [string, any][]) {
      expect({ id, file }).toEqual({ id, file: `${config.teleport.data_dir}/host_uuid` });
    }
  });

  test("no teleport.yaml configures ssh_service.commands (a command label would be an impostor signal, locked)", () => {
    // RBAC matches GetAllLabels = CombineLabels(metadata.labels, spec.cmd_labels), a command's
    // result winning (api/types/server.go): the master locks any node announcing one.
    for (const [id, config] of [[r.teleportId, r.auth], ...Object.entries(r.nodeConfigs)] as [string, any][]) {
      expect({ id, ssh: config.ssh_service.enabled, commands: config.ssh_service.commands }).toEqual({ id, ssh: true, commands: undefined });
    }
  });

  test("no token, static or otherwise, is in any teleport.yaml", () => {
    for (const text of [JSON.stringify(r.auth), ...Object.values(r.nodeConfigs).map((c) => JSON.stringify(c))]) {
      expect(text).not.toMatch(/"auth_token"|"tokens"/);
    }
  });

  test("every label a role selects on is assigned by the auth service, and no teleport.yaml sets one", () => {
    const keys = roleLabelKeys(r.roles);
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.filter((k) => !k.startsWith(TELEPORT_ASSIGNED_LABEL_PREFIX))).toEqual([]);
    for (const [id, config] of [[r.teleportId, r.auth], ...Object.entries(r.nodeConfigs)] as [string, any][]) {
      const own = Object.keys(config.ssh_service.labels ?? {});
      expect({ id, roleRelevant: own.filter((k) => keys.includes(k) || k.startsWith(TELEPORT_ASSIGNED_LABEL_PREFIX)) }).toEqual({ id, roleRelevant: [] });
    }
    // ...and every key roles use is one the fleet assigns to some machine.
    const assignedKeys = new Set(Object.values(r.documents).flatMap((d) => Object.keys(d.ci_fleet.teleport.labels)));
    expect(keys.filter((k) => !assignedKeys.has(k))).toEqual([]);
  });

  test("each machine's pillar gives the orchestration exactly that machine's labels", () => {
    for (const m of r.run.machines) {
      expect({ id: m.hostname, labels: r.documents[m.hostname].ci_fleet.teleport.labels }).toEqual({
        id: m.hostname,
        labels: teleportNodeLabels({ stack: r.stack, role: m.role, ...(m.queue ? { queue: m.queue } : {}) }),
      });
    }
  });

  test("the master's orchestration, run on these pillar documents, writes exactly those labels into each machine's server_info", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-teleport-labels-"));
    const file = path.join(dir, "documents.json");
    fs.writeFileSync(file, JSON.stringify(r.documents), { mode: 0o600 });
    try {
      const proc = spawnSync(python, [path.join(ROOT, "test/orchestration/assign_labels_probe.py"), file, r.stack], { encoding: "utf8" });
      if (proc.status !== 0) throw new Error(proc.stderr);
      const written = JSON.parse(proc.stdout) as { assigned: Record<string, Record<string, string>>; locked: string[] };
      expect(written.locked).toEqual([]);
      const expected = Object.fromEntries(
        r.run.machines.map((m) => [m.hostname, teleportNodeLabels({ stack: r.stack, role: m.role, ...(m.queue ? { queue: m.queue } : {}) })]),
      );
      expect(written.assigned).toEqual(expected);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("sessions are recorded at the proxy, which checks every node's host certificate", () => {
    expect(r.auth.auth_service.session_recording).toBe("proxy-sync");
    expect(r.auth.auth_service.proxy_checks_host_keys).toBe(true);
    // One source of truth: no session_recording_config resource competes with the file.
    expect(r.resources.filter((d) => d.kind === "session_recording_config")).toEqual([]);
  });

  test("the cluster state is in its own DynamoDB table with PITR, stream and TTL, encrypted like the audit events", () => {
    const storage = r.auth.teleport.storage;
    expect(storage.type).toBe("dynamodb");
    const tables = r.run.resources.filter((res) => res.type === "aws:dynamodb/table:Table");
    const state = tables.find((t) => t.inputs.name === storage.table_name)!;
    const events = tables.find((t) => storage.audit_events_uri[0].startsWith(`dynamodb://${t.inputs.name}?`))!;
    expect(state).toBeDefined();
    expect(events).toBeDefined();
    expect(state.inputs.name).not.toBe(events.inputs.name);
    expect(String(state.outputs.arn).split(":")[3]).toBe(storage.region);
    expect(state.inputs).toMatchObject({
      hashKey: "HashKey",
      rangeKey: "FullPath",
      streamEnabled: true,
      streamViewType: "NEW_IMAGE",
      ttl: { attributeName: "Expires", enabled: true },
      pointInTimeRecovery: { enabled: true },
      deletionProtectionEnabled: true,
      serverSideEncryption: events.inputs.serverSideEncryption,
    });
    expect((events.inputs.serverSideEncryption as { kmsKeyArn?: string }).kmsKeyArn).toBeTruthy();
    // Teleport would call UpdateContinuousBackups / Application Auto Scaling for these: unset.
    expect(storage).not.toHaveProperty("continuous_backups");
    expect(storage).not.toHaveProperty("auto_scaling");
  });
});
