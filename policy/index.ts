import { PolicyPack } from "@pulumi/policy";
import { policies } from "./policies";

// Entry point of the policy pack: `pulumi preview --policy-pack policy` (see README.md).
// Constructing the pack starts @pulumi/policy's analyzer server, so nothing else imports this file.
new PolicyPack("ci-fleet", {
  description: "Security invariants of the ci-fleet CI runner fleet.",
  enforcementLevel: "mandatory",
  policies,
});
