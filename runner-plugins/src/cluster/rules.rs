//! Judging a credential by its SelfSubjectRulesReview: the agent's
//! credential may only read, and never Secrets.

use serde_json::Value;

/// Verbs that only read.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];
/// Every authenticated user may create these reviews of itself
/// (system:basic-user); they change nothing.
const SELF_REVIEWS: [&str; 3] = [
    "selfsubjectaccessreviews",
    "selfsubjectrulesreviews",
    "selfsubjectreviews",
];

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn list(v: &[&str]) -> String {
    format!("[{}]", v.join(", "))
}

/// What a rules review says about a credential.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RulesVerdict {
    /// Each rule that grants a write verb or reads Secrets, described.
    pub problems: Vec<String>,
    /// Set when the API server could not list every rule (`incomplete`),
    /// with its evaluation error.
    pub incomplete: Option<String>,
}

/// Judges the `status` of a SelfSubjectRulesReview.
pub(crate) fn judge(status: &Value) -> RulesVerdict {
    let mut v = RulesVerdict::default();
    for rule in status["resourceRules"].as_array().into_iter().flatten() {
        let verbs = strings(&rule["verbs"]);
        let groups = strings(&rule["apiGroups"]);
        let resources = strings(&rule["resources"]);
        let writes: Vec<&str> = verbs
            .iter()
            .copied()
            .filter(|x| !READ_VERBS.contains(x))
            .collect();
        let self_review = writes.iter().all(|w| *w == "create")
            && !resources.is_empty()
            && resources.iter().all(|r| SELF_REVIEWS.contains(r));
        let what = format!(
            "resources {} in API groups {}",
            list(&resources),
            list(&groups)
        );
        if !writes.is_empty() && !self_review {
            v.problems
                .push(format!("grants write verbs {} on {what}", list(&writes)));
        }
        let reads = verbs.iter().any(|x| *x == "*" || READ_VERBS.contains(x));
        let core = groups.iter().any(|g| g.is_empty() || *g == "*");
        let secrets = resources.iter().any(|r| *r == "*" || *r == "secrets");
        if reads && core && secrets {
            v.problems.push(format!(
                "can read Secrets (verbs {} on {what})",
                list(&verbs)
            ));
        }
    }
    for rule in status["nonResourceRules"].as_array().into_iter().flatten() {
        let verbs = strings(&rule["verbs"]);
        let writes: Vec<&str> = verbs
            .iter()
            .copied()
            .filter(|x| !["get", "head"].contains(x))
            .collect();
        if !writes.is_empty() {
            v.problems.push(format!(
                "grants verbs {} on non-resource URLs {}",
                list(&writes),
                list(&strings(&rule["nonResourceURLs"]))
            ));
        }
    }
    if status["incomplete"].as_bool() == Some(true) {
        v.incomplete = Some(
            status["evaluationError"]
                .as_str()
                .unwrap_or("no evaluation error given")
                .to_string(),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn view_role_passes() {
        let st = json!({
            "resourceRules": [
                {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
                {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods", "pods/log", "events"]},
                {"verbs": ["get", "list", "watch"], "apiGroups": ["apps"], "resources": ["*"]}
            ],
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/version"]}],
            "incomplete": false
        });
        assert_eq!(judge(&st), RulesVerdict::default());
    }

    #[test]
    fn writes_secrets_and_wildcards_are_problems() {
        let st = json!({
            "resourceRules": [
                {"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods"]},
                {"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"]},
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "pods"]}
            ],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": true,
            "evaluationError": "webhook authorizer"
        });
        let v = judge(&st);
        let all = v.problems.join("\n");
        assert!(
            all.contains("write verbs [delete] on resources [pods]"),
            "{all}"
        );
        assert!(all.contains("can read Secrets (verbs [list]"), "{all}");
        assert!(all.contains("write verbs [*] on resources [*]"), "{all}");
        assert!(all.contains("can read Secrets (verbs [*]"), "{all}");
        assert!(
            all.contains("write verbs [create] on resources [selfsubjectaccessreviews, pods]"),
            "{all}"
        );
        assert!(all.contains("non-resource URLs [*]"), "{all}");
        assert_eq!(v.problems.len(), 6, "{all}");
        assert_eq!(v.incomplete.as_deref(), Some("webhook authorizer"));
    }

    #[test]
    fn secrets_in_another_group_are_not_core_secrets() {
        let st = json!({"resourceRules": [
            {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["secrets"]}
        ]});
        assert!(judge(&st).problems.is_empty());
    }
}
