import * as aws from "@pulumi/aws";
import {
  ReportViolation,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  validateResourceOfType,
} from "@pulumi/policy";
import { FLEET_TAGS, SecretState, awsTags, isRecord, secretStateOf, unproxied } from "./support";

export const EC2_INSTANCE_TYPE = "aws:ec2/instance:Instance";
/** Checked in node_modules/@pulumi/equinix-metal/device.js (`Device.__pulumiType`). */
export const EQUINIX_DEVICE_TYPE = "equinix-metal:index/device:Device";

export const ec2Imdsv2HopLimit1: ResourceValidationPolicy = {
  name: "ec2-imdsv2-hop-limit-1",
  description:
    'Every EC2 instance requires IMDSv2 session tokens (metadataOptions.httpTokens = "required") with a response hop limit of 1, so containers and forwarded traffic cannot reach instance credentials.',
  enforcementLevel: "mandatory",
  validateResource: validateResourceOfType(aws.ec2.Instance, (instance, _args, reportViolation) => {
    const metadata = instance.metadataOptions;
    if (metadata?.httpTokens !== "required") {
      reportViolation(`metadataOptions.httpTokens is ${JSON.stringify(metadata?.httpTokens)}, not "required" (IMDSv1 would be open)`);
    }
    if (metadata?.httpPutResponseHopLimit !== 1) {
      reportViolation(`metadataOptions.httpPutResponseHopLimit is ${JSON.stringify(metadata?.httpPutResponseHopLimit)}, not 1`);
    }
  }),
};

export const ec2VolumesEncrypted: ResourceValidationPolicy = {
  name: "ec2-volumes-encrypted",
  description: "Every EC2 instance's root volume and EBS volumes are encrypted.",
  enforcementLevel: "mandatory",
  validateResource: validateResourceOfType(aws.ec2.Instance, (instance, _args, reportViolation) => {
    if (instance.rootBlockDevice?.encrypted !== true) {
      reportViolation("rootBlockDevice.encrypted is not true");
    }
    for (const device of instance.ebsBlockDevices ?? []) {
      if (device.encrypted !== true) reportViolation(`EBS volume ${device.deviceName} is not encrypted`);
    }
  }),
};

export const ec2NoPublicIpExceptTeleport: ResourceValidationPolicy = {
  name: "ec2-no-public-ip-except-teleport",
  description: `Only the Teleport node (tag ${FLEET_TAGS.role}=teleport) has a public IP; every other instance sets associatePublicIpAddress to false explicitly.`,
  enforcementLevel: "mandatory",
  validateResource: validateResourceOfType(aws.ec2.Instance, (instance, _args, reportViolation) => {
    const role = awsTags(instance)[FLEET_TAGS.role];
    if (role === "teleport") return;
    const who = role === undefined ? `an instance without a ${FLEET_TAGS.role} tag` : `a ${role} instance`;
    if (instance.associatePublicIpAddress === true) {
      reportViolation(`${who} asks for a public IP (associatePublicIpAddress = true)`);
    } else if (instance.associatePublicIpAddress === undefined) {
      reportViolation(`${who} leaves associatePublicIpAddress unset, so a public subnet would give it a public IP`);
    }
  }),
};

// --- userData must be a Pulumi secret -----------------------------------------

const SECRET_FIELDS: Record<string, string[]> = {
  [EC2_INSTANCE_TYPE]: ["userData", "userDataBase64"],
  [EQUINIX_DEVICE_TYPE]: ["userData", "customData"],
};

/**
 * What the remediation pass saw, per URN and field. The engine calls Remediate and then Analyze
 * for each resource, in this one policy-pack process (see support.ts for why two passes).
 */
const observedSecretness = new Map<string, Record<string, SecretState>>();

function fieldsOf(args: { type: string; notApplicable(reason?: string): never }): string[] {
  return SECRET_FIELDS[args.type] ?? args.notApplicable(`Policy only applies to ${Object.keys(SECRET_FIELDS).join(", ")}`);
}

function observe(args: ResourceValidationArgs): undefined {
  const raw = unproxied(args.props);
  const seen: Record<string, SecretState> = {};
  for (const field of fieldsOf(args)) seen[field] = secretStateOf(isRecord(raw) ? raw[field] : undefined);
  observedSecretness.set(args.urn, seen);
  return undefined; // observe only: a plain userData must be fixed in the program, not patched here
}

function validate(args: ResourceValidationArgs, reportViolation: ReportViolation): void {
  const fields = fieldsOf(args);
  const seen = observedSecretness.get(args.urn);
  observedSecretness.delete(args.urn);
  for (const field of fields) {
    // Without a remediation pass (a direct call, the offline capture) the value itself may
    // still be recognisably secret: the offline placeholder "[secret]".
    const raw = unproxied(args.props);
    const state = seen?.[field] ?? secretStateOf(isRecord(raw) ? raw[field] : undefined);
    if (state === "absent" || state === "secret") continue;
    if (state === "unknown") {
      // Let @pulumi/policy's proxy raise its UnknownValueError: reported as "can't run during
      // preview" (advisory); `pulumi up` analyzes the known value again.
      void args.props[field];
      continue;
    }
    if (seen === undefined) {
      reportViolation(
        `cannot tell whether ${field} is a secret: the policy's remediation pass did not run (keep this policy at enforcement level "remediate")`,
      );
    } else {
      reportViolation(
        `${field} is not a Pulumi secret: it would sit unencrypted in the state and the preview; wrap it in pulumi.secret()`,
      );
    }
  }
}

export const machineUserDataSecret: ResourceValidationPolicy = {
  name: "machine-user-data-secret",
  description:
    "Machines' bootstrap data (EC2 userData/userDataBase64, Equinix Metal userData/customData) is always a Pulumi secret.",
  // "remediate" only so that @pulumi/policy runs remediateResource, the one hook that sees
  // secrets as secrets; violations of a "remediate" policy are reported as mandatory.
  enforcementLevel: "remediate",
  remediateResource: observe,
  validateResource: validate,
};

export const machinePolicies: ResourceValidationPolicy[] = [
  ec2Imdsv2HopLimit1,
  ec2VolumesEncrypted,
  ec2NoPublicIpExceptTeleport,
  machineUserDataSecret,
];
