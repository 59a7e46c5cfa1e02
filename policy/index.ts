import { PolicyPack } from "@pulumi/policy";
import { PACK_ENFORCEMENT_LEVEL, PACK_NAME, policies } from "./policies";

// Entry point of the policy pack: `pulumi preview --policy-pack policy` (see README.md).
// Constructing the pack starts @pulumi/policy's analyzer server, so nothing else imports this file.
new PolicyPack(PACK_NAME, {
  description: "Security invariants of the ci-fleet CI runner fleet.",
  enforcementLevel: PACK_ENFORCEMENT_LEVEL,
  policies,
});
