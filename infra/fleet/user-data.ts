import { MachineProviderName, MachineRole } from "../config/model";
import {
  buildMinionCloudConfig,
  buildSaltMasterCloudConfig,
  CloudConfig,
  RolesAnywhereCredentials,
  SaltKeyPair,
} from "../bootstrap/cloud-config";

/**
 * The Fleet's view of cloud-init: plain values in, a typed cloud-config out. Rendering
 * (`renderCloudConfig`) happens at the last moment, so the preview can mask secrets
 * structurally (`maskCloudConfigSecrets`) instead of searching text.
 */

/** Networks allowed to reach the master's ZeroMQ ports when the site has no VPC of its own. */
const EQUINIX_PRIVATE_NETWORK = "10.0.0.0/8";

export interface SaltMasterUserDataInput {
  stack: string;
  provider: MachineProviderName;
  hostname: string;
  /** For its own minion's master_finger; the key pairs come from SSM at first boot (SaltMasterPki). */
  masterPublicKeyPem: string;
  /** The fleet VPC's CIDR on aws. */
  vpcCidr?: string;
  repository: { url: string; ref: string; deployKeyPem?: string };
  aws: { region: string; roleArn: string; ssmPillarPrefix: string; rolesAnywhere?: RolesAnywhereCredentials };
}

export function saltMasterCloudConfig(input: SaltMasterUserDataInput): CloudConfig {
  return buildSaltMasterCloudConfig({
    stack: input.stack,
    provider: input.provider,
    masterPublicKeyPem: input.masterPublicKeyPem,
    minionNetworks: [input.vpcCidr ?? EQUINIX_PRIVATE_NETWORK],
    saltRepository: {
      url: input.repository.url,
      ref: input.repository.ref,
      ...(input.repository.deployKeyPem ? { deployKeyPem: input.repository.deployKeyPem } : {}),
    },
    aws: {
      region: input.aws.region,
      roleArn: input.aws.roleArn,
      ssmPillarPrefix: input.aws.ssmPillarPrefix,
      ...(input.aws.rolesAnywhere ? { rolesAnywhere: input.aws.rolesAnywhere } : {}),
    },
  });
}

export interface MinionUserDataInput {
  stack: string;
  provider: MachineProviderName;
  hostname: string;
  role: Exclude<MachineRole, "salt-master">;
  /** The master's stable DNS name: no output of any machine (user-data outlives the master). */
  masterName: string;
  masterPublicKeyPem: string;
  minionKeys: SaltKeyPair;
}

export function minionCloudConfig(input: MinionUserDataInput): CloudConfig {
  return buildMinionCloudConfig({
    stack: input.stack,
    provider: input.provider,
    role: input.role,
    minionId: input.hostname,
    minionKeyPair: input.minionKeys,
    masterName: input.masterName,
    masterPublicKeyPem: input.masterPublicKeyPem,
  });
}
