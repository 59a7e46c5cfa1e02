import * as aws from "@pulumi/aws";
import { gzipSync } from "zlib";
import * as pulumi from "@pulumi/pulumi";
import { CiAgentKind, MachineProviderName, MachineRole } from "../config/model";

/**
 * Pillar documents: one JSON document per minion, written to SSM by `pulumi up` and served
 * by the Salt master to that minion only, by its authenticated minion id. The shape is the
 * contract in docs/contracts.md; the Salt states under salt/ read exactly these keys.
 */

export interface RolesAnywherePillar {
  trust_anchor_arn: string;
  profile_arn: string;
  certificate_pem: string;
  /** Secret. */
  private_key_pem: string;
}

export interface RunnerPillar {
  queue: string;
  agent: CiAgentKind;
  trusted: boolean;
  labels: string[];
  runner_group?: string;
  github_organization?: string;
  buildkite_organization?: string;
}

export interface MinionPillar {
  ci_fleet: {
    stack: string;
    minion_id: string;
    role: MachineRole;
    provider: MachineProviderName;
    salt: { master_address: string; repository: string; ref: string; minion_public_key_pem: string };
    /** `ssm_prefix`: the path this minion's role may read (runners: their queue; the master: pillar). */
    aws: { region: string; role_arn: string; ssm_prefix?: string; roles_anywhere?: RolesAnywherePillar };
    teleport: { auth_address: string; node_config?: string; labels: Record<string, string> };
    runner?: RunnerPillar;
  };
  ci_fleet_master?: {
    github_app?: { app_id: string; installation_id: string; private_key_pem: string };
    salt_repository_deploy_key?: string;
  };
  ci_fleet_teleport?: {
    auth_config: string;
    /** Roles and GitHub connector for `tctl create -f` (secret), gzip + base64: the YAML alone outgrows an SSM parameter. */
    resources_gzip_base64: string;
    audit?: { bucket: string; events_table: string; region: string };
  };
}

/** SSM's limit for a parameter (advanced tier); Intelligent-Tiering picks the tier. */
export const PILLAR_MAX_BYTES = 8192;

/** Text for a `*_gzip_base64` pillar field (gzip's header carries no timestamp here, so output is stable). */
export function gzipBase64(text: string): string {
  return gzipSync(new TextEncoder().encode(text), { level: 9 }).toString("base64");
}

/** Stable, compact JSON (keys in insertion order, which the builders fix). */
export function renderPillarDocument(doc: MinionPillar): string {
  const text = JSON.stringify(doc);
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > PILLAR_MAX_BYTES) {
    throw new Error(`pillar document of ${doc.ci_fleet.minion_id} is ${bytes} bytes; SSM parameters hold at most ${PILLAR_MAX_BYTES}`);
  }
  return text;
}

export function pillarParameterName(stack: string, minionId: string): string {
  return `/ci-fleet/${stack}/pillar/${minionId}`;
}

export interface MinionPillarsArgs {
  stack: string;
  kmsKeyArn: pulumi.Input<string>;
  /** Minion id -> rendered pillar document (a Pulumi secret). */
  documents: Record<string, pulumi.Output<string>>;
}

/** One SecureString parameter per minion under `/ci-fleet/<stack>/pillar/`, encrypted with the fleet key. */
export class MinionPillars extends pulumi.ComponentResource {
  readonly parameterNames: Record<string, string> = {};

  constructor(name: string, args: MinionPillarsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:bootstrap:MinionPillars", name, {}, opts);
    for (const minionId of Object.keys(args.documents).sort()) {
      const parameterName = pillarParameterName(args.stack, minionId);
      new aws.ssm.Parameter(
        `${name}-${minionId}`,
        {
          name: parameterName,
          type: "SecureString",
          keyId: args.kmsKeyArn,
          tier: "Intelligent-Tiering",
          value: pulumi.secret(args.documents[minionId]),
          description: `Salt pillar of minion ${minionId} (served by the master to this minion id only)`,
          tags: { "ci-fleet:stack": args.stack, "ci-fleet:role": "pillar", "ci-fleet:minion": minionId },
        },
        { parent: this },
      );
      this.parameterNames[minionId] = parameterName;
    }
    this.registerOutputs({ parameterNames: this.parameterNames });
  }
}
