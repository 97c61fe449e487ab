//! Checks of a `ClusterSpec` that the schema cannot express (the API server on
//! Kubernetes before 1.25 has no CEL rules): each problem names the field, what is
//! wrong and what to write instead. Pure; the controller refuses a spec with problems
//! and reports them in a condition and an event, changing nothing.

use node_agent::config::BootstrapSettings;

use crate::crd::ClusterSpecSpec;

/// One thing wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the field, e.g. `spec.bootstrap.stableMargin`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

/// Every problem of `spec`; empty when it is valid.
pub fn validate(spec: &ClusterSpecSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |field: &str, message: String| {
        out.push(Problem {
            field: field.to_owned(),
            message,
        });
    };
    if spec.replicas < 0 {
        bad(
            "spec.replicas",
            format!(
                "{} is not allowed: use 0 (the cluster stops as a whole) or more pods",
                spec.replicas
            ),
        );
    }
    if spec.agent.image.trim().is_empty() {
        bad(
            "spec.agent.image",
            "is empty: name the muster-agent image, or leave the field out for the default".into(),
        );
    }
    if spec.agent.roles.len() > crate::agents::MAX_ROLES {
        bad(
            "spec.agent.roles",
            format!(
                "{} roles: at most {} (the operator reads no member list with more)",
                spec.agent.roles.len(),
                crate::agents::MAX_ROLES
            ),
        );
    }
    if let Some(role) = spec
        .agent
        .roles
        .iter()
        .find(|r| r.len() > crate::agents::MAX_NAME_CHARS)
    {
        bad(
            "spec.agent.roles",
            format!(
                "a role of {} bytes: at most {} (the operator reads no member list with a longer one)",
                role.len(),
                crate::agents::MAX_NAME_CHARS
            ),
        );
    }
    if !PULL_POLICIES.contains(&spec.agent.image_pull_policy.as_str()) {
        bad(
            "spec.agent.imagePullPolicy",
            format!(
                "`{}` is not one of {}",
                spec.agent.image_pull_policy,
                PULL_POLICIES.join(", ")
            ),
        );
    }
    if let Some(app) = &spec.application {
        if app.image.trim().is_empty() {
            bad(
                "spec.application.image",
                "is empty: name the application's image, or remove `application` to run the agent alone".into(),
            );
        }
        for e in &app.env {
            if ["MUSTER_AGENT_URL", "MUSTER_POD_IP"].contains(&e.name.as_str()) {
                bad(
                    "spec.application.env",
                    format!(
                        "{} is set by the operator: it tells the application where its agent is",
                        e.name
                    ),
                );
            }
        }
        if app.name == "agent" || !is_dns_label(&app.name) {
            bad(
                "spec.application.name",
                format!(
                    "`{}` cannot name the container: use a DNS label (lowercase letters, digits, '-', at most 63) other than `agent`",
                    app.name
                ),
            );
        }
    }
    let b = &spec.bootstrap;
    // Scaled to zero, nothing forms; the numbers are checked against the next scale.
    if let Some(required) = b.required_contact_points
        && required > spec.replicas
        && spec.replicas > 0
    {
        bad(
            "spec.bootstrap.requiredContactPoints",
            format!(
                "{required} is more than the {} replicas: the cluster could never form; use at most spec.replicas or leave it out",
                spec.replicas
            ),
        );
    }
    for (field, value, example) in [
        ("spec.bootstrap.stableMargin", &b.stable_margin, "5s"),
        (
            "spec.membership.stableAfter",
            &spec.membership.stable_after,
            "20s",
        ),
        (
            "spec.rollout.memberUpTimeout",
            &spec.rollout.member_up_timeout,
            "5m",
        ),
    ] {
        match node_agent::config::duration::parse(value) {
            Err(e) => bad(field, format!("`{value}`: {e} (e.g. `{example}`)")),
            // The agents' settings file holds whole milliseconds.
            Ok(d)
                if field == "spec.bootstrap.stableMargin"
                    && d <= BootstrapSettings::default().probing_failure_timeout =>
            {
                bad(
                    field,
                    format!(
                        "`{value}` must be longer than the agents' bootstrap.probing-failure-timeout ({}): answers that old still count, so a shorter margin lets a pod form a cluster on a set its peers have not seen, and two clusters can form (e.g. `5s`)",
                        node_agent::config::duration::format(
                            BootstrapSettings::default().probing_failure_timeout
                        )
                    ),
                );
            }
            Ok(d) if d.subsec_nanos() % 1_000_000 != 0 => bad(
                field,
                format!("`{value}` is not a whole number of milliseconds (e.g. `{example}`)"),
            ),
            Ok(_) => {}
        }
    }
    if spec.disruption_budget.enabled
        && let Err(e) = spec.disruption_budget.max_unavailable()
    {
        bad(
            "spec.disruptionBudget.maxUnavailable",
            format!(
                "{e}: use a number of pods (at least 1) or a percentage such as `25%`; 0 would block every node drain (turn the budget off with enabled: false instead)"
            ),
        );
    }
    let m = &spec.membership;
    if m.downing == crate::crd::Downing::StaticQuorum
        && let Some(q) = m.quorum_size
        && spec.replicas > 0
        && (q <= spec.replicas / 2 || q > spec.replicas)
    {
        bad(
            "spec.membership.quorumSize",
            format!(
                "{q} does not fit {} replicas: with at most half of them both sides of a partition could keep running (two clusters), with more than all of them no side could; use {} to {} (or scale accordingly)",
                spec.replicas,
                spec.replicas / 2 + 1,
                spec.replicas
            ),
        );
    }
    if let Some(role) = &m.downing_role {
        if matches!(
            m.downing,
            crate::crd::Downing::DownAll | crate::crd::Downing::Off
        ) {
            bad(
                "spec.membership.downingRole",
                "has no effect with downing down-all or off; remove it".into(),
            );
        } else if !spec.agent.roles.contains(role) {
            bad(
                "spec.membership.downingRole",
                format!(
                    "`{role}` is not one of spec.agent.roles ({:?}): no member would count, and every partition would down everyone",
                    spec.agent.roles
                ),
            );
        }
    }
    let t = spec.membership.failure_detector_threshold;
    if !(t.is_finite() && t > 0.0) {
        bad(
            "spec.membership.failureDetectorThreshold",
            format!("{t} is not a positive number (default 8)"),
        );
    }
    if let Some(raw) = &spec.pod_template {
        out.extend(crate::pod_template::check(raw, &pod_template_context(spec)));
    }
    if let Some(raw) = &spec.volume_claim_templates {
        match crate::claims::parse(raw) {
            Ok(claims) => {
                let mut taken: std::collections::BTreeSet<String> =
                    crate::controller::build::VOLUMES
                        .iter()
                        .map(|v| (*v).to_owned())
                        .collect();
                let template_volumes = spec
                    .pod_template
                    .as_ref()
                    .and_then(|t| t.pointer("/spec/volumes"))
                    .and_then(serde_json::Value::as_array);
                taken.extend(
                    template_volumes
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned)),
                );
                out.extend(crate::claims::check(&claims, &taken));
            }
            Err(problems) => out.extend(problems),
        }
    }
    let grace_written = spec
        .pod_template
        .as_ref()
        .and_then(|t| t.pointer("/spec/terminationGracePeriodSeconds"))
        .is_some();
    let (stop, field, value) = stop_time(spec);
    let stop = crate::pod_template::whole_seconds(stop);
    if !grace_written && stop + crate::pod_template::LEAVE_MARGIN_SECONDS > DEFAULT_GRACE_SECONDS {
        out.push(Problem {
            field: format!("spec.membership.{field}"),
            message: format!(
                "`{value}` does not fit in the pods' grace period ({DEFAULT_GRACE_SECONDS}s) with {}s to spare for the agent to exit: a stopped pod would be killed before it has left the cluster (or before its application has handed over); shorten it or set a longer spec.podTemplate.spec.terminationGracePeriodSeconds",
                crate::pod_template::LEAVE_MARGIN_SECONDS
            ),
        });
    }
    out
}

/// The longest a stopped agent takes before it exits: it leaves (`leaveTimeout`) and
/// waits for its application's handover gate (`handoverTimeout`, counted from the same
/// SIGTERM), so the longer of the two; with the field that sets it, and its text.
fn stop_time(spec: &ClusterSpecSpec) -> (std::time::Duration, &'static str, &str) {
    let m = &spec.membership;
    let handover = node_agent::config::duration::parse(&m.handover_timeout).unwrap_or_else(|_| {
        node_agent::config::Settings::default()
            .cluster
            .handover_timeout
    });
    let leave = leave_timeout(spec);
    if handover > leave {
        (handover, "handoverTimeout", &m.handover_timeout)
    } else {
        (leave, "leaveTimeout", &m.leave_timeout)
    }
}

/// The pods' terminationGracePeriodSeconds unless the pod template sets it.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;

/// The agents' leave timeout (the agent's default when the field does not parse: the
/// agent settings' check reports that).
fn leave_timeout(spec: &ClusterSpecSpec) -> std::time::Duration {
    node_agent::config::duration::parse(&spec.membership.leave_timeout).unwrap_or_else(|_| {
        node_agent::config::Settings::default()
            .cluster
            .leave_timeout
    })
}

/// What the pod template checks need to know of the rest of `spec`.
fn pod_template_context(spec: &ClusterSpecSpec) -> crate::pod_template::Context<'static> {
    use crate::controller::build::{
        AGENT_ONLY_VOLUMES, CLUSTER_PORT, CONFIG_DIR, CONFIG_HASH, KEY_DIR, MANAGEMENT_PORT,
        OPERATOR_LABEL_KEYS, TLS_DIR, TOKEN_DIR, VOLUMES,
    };
    let sched = &spec.scheduling;
    let scheduling_set = [
        ("nodeSelector", !sched.node_selector.is_empty()),
        ("tolerations", !sched.tolerations.is_empty()),
        ("affinity", sched.affinity.is_some()),
        ("priorityClassName", sched.priority_class_name.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    crate::pod_template::Context {
        application: spec.application.as_ref().map(|a| a.name.clone()),
        leave_timeout: stop_time(spec).0,
        scheduling_set,
        volumes: &VOLUMES,
        agent_only_volumes: &AGENT_ONLY_VOLUMES,
        mount_paths: &[CONFIG_DIR, KEY_DIR, TOKEN_DIR, TLS_DIR],
        ports: &[MANAGEMENT_PORT, CLUSTER_PORT],
        label_keys: &OPERATOR_LABEL_KEYS,
        annotation_keys: &[CONFIG_HASH],
    }
}

/// A DNS label (RFC 1123): what a container name must be.
pub fn is_dns_label(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !s.is_empty()
        && s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests;
