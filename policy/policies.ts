import { EnforcementLevel, Policies } from "@pulumi/policy";
import { iamPolicies } from "./iam";
import { jobIsolationPolicies } from "./job-isolation";
import { machinePolicies } from "./machines";
import { networkPolicies } from "./network";
import { storagePolicies } from "./storage";

/**
 * Every ci-fleet policy, in one list: the pack (index.ts) serves it to `pulumi preview`, and the
 * offline preview (offline.ts) runs the same objects over the resources it captured.
 * All of them block a deployment ("mandatory", or "remediate" for the userData check, whose
 * violations @pulumi/policy reports as mandatory) but one: a deploy role without a permissions
 * boundary is a warning ("advisory", iam.ts `iamDeployRoleHasBoundary`).
 */
export const policies: Policies = [...iamPolicies, ...storagePolicies, ...machinePolicies, ...networkPolicies, ...jobIsolationPolicies];

export const PACK_NAME = "ci-fleet";
/** The Pulumi project the pack guards (URNs: urn:pulumi:<stack>::ci-fleet::<type>::<name>). */
export const PROJECT = "ci-fleet";
/** Default level of the pack; every policy also sets its own. */
export const PACK_ENFORCEMENT_LEVEL: EnforcementLevel = "mandatory";
