import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";

/**
 * Salt's key pairs, made by the program so the master can be told every minion's public
 * key before any minion boots (no auto-accept, no autosign) and every minion can pin the
 * master's key with `master_finger`.
 */

export interface SaltKeyPair {
  publicKeyPem: pulumi.Output<string>;
  /** Always a Pulumi secret. */
  privateKeyPem: pulumi.Output<string>;
}

export interface SaltKeysArgs {
  /** Every minion id of the fleet (the master is a minion of itself). */
  minionIds: string[];
}

/** RSA sizes: Salt only speaks RSA; 4096 for the master, 2048 keeps minion keys small in user-data. */
const MASTER_KEY_BITS = 4096;
const MINION_KEY_BITS = 2048;

export class SaltKeys extends pulumi.ComponentResource {
  readonly master: SaltKeyPair;
  readonly minions: Record<string, SaltKeyPair> = {};

  constructor(name: string, args: SaltKeysArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:bootstrap:SaltKeys", name, {}, opts);
    const pair = (resourceName: string, rsaBits: number): SaltKeyPair => {
      const key = new tls.PrivateKey(resourceName, { algorithm: "RSA", rsaBits }, { parent: this });
      return { publicKeyPem: key.publicKeyPem, privateKeyPem: pulumi.secret(key.privateKeyPem) };
    };
    this.master = pair(`${name}-master`, MASTER_KEY_BITS);
    for (const id of [...args.minionIds].sort()) this.minions[id] = pair(`${name}-minion-${id}`, MINION_KEY_BITS);
    this.registerOutputs({});
  }
}
