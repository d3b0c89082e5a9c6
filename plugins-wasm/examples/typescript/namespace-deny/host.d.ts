// The host interface the runner provides to every plugin.
declare module "event-runner:plugin/host@0.1.0" {
  export type LogLevel = "debug" | "info" | "warn" | "error";
  /** One line in the runner's log, tagged with the stage name. */
  export function log(level: LogLevel, message: string): void;
}
