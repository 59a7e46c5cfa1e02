import { ResourceValidationPolicy } from "@pulumi/policy";
import { awsTags, isRecord, unproxied } from "./support";

/** Checked in node_modules/@pulumi/aws (`Parameter.__pulumiType`). */
export const SSM_PARAMETER_TYPE = "aws:ssm/parameter:Parameter";

/**
 * Issue 15: a runner of an untrusted queue runs every job in a fresh VM. Each runner's pillar
 * document (the SSM parameter Salt's master serves it from, which decides whether Salt applies
 * runner.job_vm) carries its queue's `ci-fleet:trusted` and `ci-fleet:isolation` tags; an
 * untrusted queue with isolation other than `vm`, or a runner document without those tags, is
 * refused (fail closed).
 */
export const untrustedQueueJobVm: ResourceValidationPolicy = {
  name: "untrusted-queue-job-vm",
  description: "A runner of an untrusted queue (trusted: false) runs each job in a fresh VM: its pillar document says isolation vm.",
  enforcementLevel: "mandatory",
  validateResource: (args, reportViolation) => {
    if (args.type !== SSM_PARAMETER_TYPE) return;
    const props = unproxied(args.props);
    if (!isRecord(props)) return;
    const tags = awsTags(props);
    if (tags["ci-fleet:role"] !== "pillar" || tags["ci-fleet:queue"] === undefined) return;
    const trusted = tags["ci-fleet:trusted"];
    const isolation = tags["ci-fleet:isolation"];
    if (trusted !== "true" && trusted !== "false") {
      reportViolation(`runner pillar of ${tags["ci-fleet:minion"] ?? "?"} has no ci-fleet:trusted tag (true|false): cannot tell whether its queue may run jobs on the host`);
      return;
    }
    if (trusted === "false" && isolation !== "vm") {
      reportViolation(
        `queue ${tags["ci-fleet:queue"]} is untrusted (pull requests) but its runner ${tags["ci-fleet:minion"] ?? "?"} has isolation ${JSON.stringify(isolation ?? null)}: ` +
          "set queues.<queue>.isolation: vm (the default), so each job runs in a fresh VM and nothing of it reaches the next",
      );
    }
  },
};

export const jobIsolationPolicies: ResourceValidationPolicy[] = [untrustedQueueJobVm];
