#!/bin/sh
# Event Runner built-in demo agent (preset "demo").
#
# Harmless: no network, no API key, no cluster access. It writes
# output/investigation.md from the event's own data: the fields the runner
# exports ($CLUSTER, $RESOURCE_NAME, ...) and the original payload in
# $EVENT_FILE. Every value is untrusted text from the cluster, so it is only
# ever expanded inside double quotes and printed with printf '%s'.
set -eu

out="${INCIDENT_DIR:-.}/output/investigation.md"
mkdir -p "$(dirname "$out")"

ns="${NAMESPACE:-}"
[ -n "$ns" ] || ns="(cluster-scoped)"

# The fault type as the server sent it (flat `faultType` or legacy `reason`).
ftype=$(sed -n 's/.*"faultType"[[:space:]]*:[[:space:]]*"\([^"\\]*\)".*/\1/p' "$EVENT_FILE" | head -n 1)
[ -n "$ftype" ] || ftype=$(sed -n 's/.*"reason"[[:space:]]*:[[:space:]]*"\([^"\\]*\)".*/\1/p' "$EVENT_FILE" | head -n 1)
[ -n "$ftype" ] || ftype="Unknown"

# What the server said about it (event.json is pretty-printed by the runner:
# one key per line). JSON escapes stay as they are; it is only displayed.
field() {
  sed -n "s/^[[:space:]]*\"$1\"[[:space:]]*:[[:space:]]*\"\\(.*\\)\",\\{0,1\\}[[:space:]]*\$/\\1/p" "$EVENT_FILE" | head -n 1
}
ctx=$(field context)
[ -n "$ctx" ] || ctx=$(field message)

case "$ftype" in
  CrashLoop*|BackOff)
    cause="The container keeps exiting shortly after start, so the kubelet restarts it with back-off."
    next="Read the previous container's logs (kubectl logs --previous) and check recent changes to its image, command and configuration." ;;
  ImagePull*|ErrImagePull)
    cause="The image cannot be pulled: the tag does not exist, the registry is unreachable, or credentials are missing."
    next="Check the image reference and the pod's imagePullSecrets; try pulling the image from a node." ;;
  OOMKilled*)
    cause="The container exceeded its memory limit and was killed by the kernel."
    next="Compare the memory limit with actual usage (kubectl top) and look for a leak or a load increase." ;;
  NodeUnhealthy*|NodeNotReady*)
    cause="The node stopped reporting Ready: the kubelet, the container runtime or the node's network is failing."
    next="Check the node's conditions (kubectl describe node) and the kubelet's logs on the node." ;;
  *)
    cause="The cluster reported a ${ftype} fault for this resource; the demo agent has no specific diagnosis for this type."
    next="Inspect the resource with kubectl describe and its recent events." ;;
esac

{
  printf '# Investigation (demo agent)\n\n'
  printf '## Summary\n\n'
  printf 'Fault %s (severity %s) on %s/%s in namespace %s of cluster %s.\n' \
    "$ftype" "${SEVERITY:-?}" "${RESOURCE_KIND:-?}" "${RESOURCE_NAME:-?}" "$ns" "${CLUSTER:-?}"
  printf 'This report was written by the built-in demo agent from the event alone; no cluster was queried.\n\n'
  printf '## Root Cause\n\n'
  printf '**Confidence: LOW** (derived from the fault type only)\n\n'
  printf '%s\n' "$cause"
  if [ -n "$ctx" ]; then
    printf 'The cluster reported: %s\n' "$ctx"
  fi
  printf '\n'
  printf '## Evidence\n\n'
  printf 'The event as received (event.json):\n\n'
  printf '````json\n'
  cat "$EVENT_FILE"
  printf '\n````\n\n'
  printf '## Recommended Next Steps\n\n'
  printf -- '- %s\n' "$next"
  printf -- '- Re-run with a real agent preset (claude, codex, gemini, goose) for a live investigation.\n'
} > "$out"

printf 'demo agent: wrote %s\n' "$out"
