// The plugin interface (plugins-wasm/wit/event-runner-plugin.wit) as
// componentize-js represents it in JavaScript: records are objects with
// camelCase fields, enums are their case names as strings, `option<T>` is
// `T | undefined`, variants are `{ tag, val }`, and a thrown value is the
// `err` of a `result`.

export type Severity = "debug" | "info" | "warning" | "error" | "critical";

export interface ResourceRef {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid: string;
}

export interface Event {
  faultId?: string;
  cluster: string;
  resource: ResourceRef;
  faultType: string;
  severity: Severity;
  context: string;
  timestamp?: string;
  /** The original notification payload as JSON text. */
  rawJson: string;
}

export type Verdict =
  | { tag: "keep" }
  | { tag: "drop"; val: string }
  | { tag: "replace"; val: Event };
