import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { normalizePem } from "../bootstrap/cloud-config";
import { PILLAR_MAX_BYTES } from "../bootstrap/pillar";
import { saltMasterPkiParameterName } from "../bootstrap/salt-config";
import { SaltKeyPair } from "./salt-keys";

/**
 * The Salt master's key pairs, for its first boot, in SSM instead of user-data: the master's
 * own (`master.pem`, RSA 4096) and its minion's. They are the largest part of what the master
 * needs before Salt runs (user-data must fit 16 KiB as each provider receives it), and they
 * must be the same on every replacement of the machine (every minion pins `master_finger`).
 * One SecureString under the master's own path, encrypted with the fleet key; read once by
 * `salt/salt_master/files/ci_fleet_master_pki.py` before salt-master starts.
 */

/** The parameter's JSON document: the keys the first boot reads (ci_fleet_master_pki.py FILES). */
export interface SaltMasterPkiDocument {
  master_private_key_pem: string;
  master_public_key_pem: string;
  minion_private_key_pem: string;
  minion_public_key_pem: string;
}

interface PlainPair {
  publicKeyPem: string;
  privateKeyPem: string;
}

/** Compact JSON, fixed key order; refuses a document SSM would not hold. Call inside an apply (secret). */
export function renderSaltMasterPkiDocument(master: PlainPair, minion: PlainPair): string {
  const doc: SaltMasterPkiDocument = {
    master_private_key_pem: normalizePem(master.privateKeyPem),
    master_public_key_pem: normalizePem(master.publicKeyPem),
    minion_private_key_pem: normalizePem(minion.privateKeyPem),
    minion_public_key_pem: normalizePem(minion.publicKeyPem),
  };
  const text = JSON.stringify(doc);
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > PILLAR_MAX_BYTES) throw new Error(`the Salt master's key document is ${bytes} bytes; SSM parameters hold at most ${PILLAR_MAX_BYTES}`);
  return text;
}

export interface SaltMasterPkiArgs {
  stack: string;
  kmsKeyArn: pulumi.Input<string>;
  master: SaltKeyPair;
  /** The master's own minion key pair (it is a minion of itself). */
  minion: SaltKeyPair;
}

export class SaltMasterPki extends pulumi.ComponentResource {
  readonly parameterName: string;
  /** The master machine depends on it: the parameter exists before the first boot reads it. */
  readonly parameter: aws.ssm.Parameter;

  constructor(name: string, args: SaltMasterPkiArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:fleet:SaltMasterPki", name, {}, opts);
    this.parameterName = saltMasterPkiParameterName(args.stack);
    const value = pulumi
      .all([args.master.publicKeyPem, args.master.privateKeyPem, args.minion.publicKeyPem, args.minion.privateKeyPem])
      .apply(([masterPub, masterPriv, minionPub, minionPriv]) =>
        renderSaltMasterPkiDocument({ publicKeyPem: masterPub, privateKeyPem: masterPriv }, { publicKeyPem: minionPub, privateKeyPem: minionPriv }),
      );
    this.parameter = new aws.ssm.Parameter(
      `${name}-parameter`,
      {
        name: this.parameterName,
        type: "SecureString",
        keyId: args.kmsKeyArn,
        tier: "Intelligent-Tiering",
        value: pulumi.secret(value),
        description: "The Salt master's key pairs (its own and its minion's), read once at its first boot",
        tags: { "ci-fleet:stack": args.stack, "ci-fleet:role": "salt-master" },
      },
      { parent: this },
    );
    this.registerOutputs({ parameterName: this.parameterName });
  }
}
