import { GetParameterCommand, GetParametersByPathCommand, SSMClient } from "@aws-sdk/client-ssm";
import type { ParameterStore } from "./ssm";

/**
 * The real store: SDK v3 with the default credential chain (on runners, the
 * `credential_process` in the root-owned config the agent's unit names with
 * AWS_CONFIG_FILE: instance-profile credentials on AWS, IAM Roles Anywhere on Equinix),
 * so the calls are made as the queue's agent role, which IAM limits to the queue's
 * prefix. Region: AWS_REGION, else that config.
 */
export function awsParameterStore(region: string | undefined): ParameterStore {
  const client = new SSMClient(region === undefined || region === "" ? {} : { region });
  return {
    getParameter: (input) => client.send(new GetParameterCommand(input)),
    getParametersByPath: (input) => client.send(new GetParametersByPathCommand(input)),
  };
}
