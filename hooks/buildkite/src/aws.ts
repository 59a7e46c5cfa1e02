import { GetParameterCommand, GetParametersByPathCommand, SSMClient } from "@aws-sdk/client-ssm";
import type { ParameterStore } from "./ssm";

/**
 * The real store: SDK v3 with the default credential chain (instance profile on AWS,
 * `credential_process` with IAM Roles Anywhere on Equinix), so the calls are made as
 * the queue's agent role, which IAM limits to the queue's prefix.
 */
export function awsParameterStore(region: string): ParameterStore {
  const client = new SSMClient({ region });
  return {
    getParameter: (input) => client.send(new GetParameterCommand(input)),
    getParametersByPath: (input) => client.send(new GetParametersByPathCommand(input)),
  };
}
