/**
 * The one error type the hooks raise on purpose. Its message is shown to the pipeline
 * owner in the job log, so it names parameters and levels but never contains a value.
 */
export class JobSecretsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JobSecretsError";
  }
}

/** Prefix of every line the hooks print to the job log (stderr). */
export const LOG_PREFIX = "ci-fleet job-secrets:";
