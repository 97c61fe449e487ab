//! `spec.podTemplate`: a pod template the user writes, merged into the one the operator
//! builds — the way ECK's `podTemplate` and RabbitMQ's `override` work.
//!
//! The merge, on the JSON the user wrote (a field left out changes nothing):
//! - objects merge field by field, the user's value winning;
//! - lists of named things merge by their key: `containers`, `initContainers`,
//!   `ephemeralContainers`, `volumes`, `env`, `imagePullSecrets` by `name`, `ports` by
//!   `containerPort`, `volumeMounts` by `mountPath`; an entry with a new key is added;
//! - every other list (tolerations, topology spread constraints, args, …) is replaced;
//! - `null` removes the operator's value.
//!
//! The checks ([`check`]) refuse what would break the cluster, naming the field: the
//! agent container keeps its essentials (only `env`, `volumeMounts` and
//! `securityContext` may be added to it), the operator's volumes, labels, service
//! account and restart policy stay, the grace period covers the agent's leave, no other
//! container takes the agent's ports, and a field is set in one place only.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec};
use serde_json::{Map, Value};

use crate::validate::Problem;

/// Where the field lives in the ClusterSpec.
pub const FIELD: &str = "spec.podTemplate";

/// The agent container's name.
pub const AGENT: &str = "agent";

/// Lists merged by a key, by the field that holds them.
fn merge_key(list: &str) -> Option<&'static str> {
    match list {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        _ => None,
    }
}

/// `user` merged into `base` (both a pod template as JSON).
pub fn merge(base: &mut Value, user: &Value) {
    merge_value(base, user, "");
}

fn merge_value(base: &mut Value, user: &Value, field: &str) {
    match (base, user) {
        (Value::Object(b), Value::Object(u)) => merge_object(b, u),
        (Value::Array(b), Value::Array(u)) => match merge_key(field) {
            Some(key) => merge_list(b, u, key),
            None => b.clone_from(u),
        },
        (b, u) => *b = u.clone(),
    }
}

fn merge_object(base: &mut Map<String, Value>, user: &Map<String, Value>) {
    for (k, u) in user {
        if u.is_null() {
            base.remove(k);
        } else if let Some(b) = base.get_mut(k) {
            merge_value(b, u, k);
        } else {
            base.insert(k.clone(), u.clone());
        }
    }
}

fn merge_list(base: &mut Vec<Value>, user: &[Value], key: &str) {
    for u in user {
        let found = u
            .get(key)
            .and_then(|k| base.iter_mut().find(|b| b.get(key) == Some(k)));
        match found {
            Some(b) => merge_value(b, u, ""),
            None => base.push(u.clone()),
        }
    }
}

/// What the checks need to know of the rest of the spec.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The application container's name, when there is one.
    pub application: Option<String>,
    /// The longest a stopped agent takes: its `cluster.leave-timeout` or
    /// `cluster.handover-timeout`, whichever is longer.
    pub leave_timeout: Duration,
    /// `spec.scheduling` fields that are set, by their pod spec name
    /// (`nodeSelector`, …).
    pub scheduling_set: Vec<&'static str>,
    /// The operator's volume names, mount paths, ports and pod labels.
    pub volumes: &'a [&'a str],
    /// The operator's volumes that hold the agent's secrets (cluster key, token): no
    /// other container may mount them.
    pub agent_only_volumes: &'a [&'a str],
    pub mount_paths: &'a [&'a str],
    pub ports: &'a [u16],
    pub label_keys: &'a [&'a str],
    pub annotation_keys: &'a [&'a str],
}

/// The problems of `raw` (the user's `spec.podTemplate`); empty when it may be merged.
pub fn check(raw: &Value, cx: &Context<'_>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |field: String, message: String| out.push(Problem { field, message });
    let template: PodTemplateSpec = match serde_path_to_error::deserialize(raw) {
        Ok(t) => t,
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." {
                FIELD.to_owned()
            } else {
                format!("{FIELD}.{path}")
            };
            bad(
                field,
                format!("{} (it must be a Kubernetes PodTemplateSpec)", e.inner()),
            );
            return out;
        }
    };
    let meta = template.metadata.unwrap_or_default();
    for (what, keys, set) in [
        ("labels", cx.label_keys, meta.labels.unwrap_or_default()),
        (
            "annotations",
            cx.annotation_keys,
            meta.annotations.unwrap_or_default(),
        ),
    ] {
        for key in set.keys().filter(|k| keys.contains(&k.as_str())) {
            bad(
                format!("{FIELD}.metadata.{what}.{key}"),
                "is the operator's (it selects the pods or tracks their settings); use another key"
                    .into(),
            );
        }
    }
    let spec_raw = raw.get("spec").and_then(Value::as_object);
    let Some(spec) = template.spec else {
        return out;
    };
    let written = |name: &str| spec_raw.is_some_and(|s| s.contains_key(name));
    for (name, why) in [
        (
            "serviceAccountName",
            "the agents need the service account the operator grants their permissions to",
        ),
        (
            "serviceAccount",
            "the agents need the service account the operator grants their permissions to",
        ),
        (
            "automountServiceAccountToken",
            "the operator mounts a token into the agent container only (least privilege)",
        ),
        (
            "hostNetwork",
            "every pod would share its node's address and ports: two pods on one node could not both run an agent",
        ),
    ] {
        if written(name) {
            bad(
                format!("{FIELD}.spec.{name}"),
                format!("cannot be set: {why}"),
            );
        }
    }
    for (name, on, why) in [
        (
            "shareProcessNamespace",
            spec.share_process_namespace,
            "every container could read the agent's files through /proc (its cluster key and Kubernetes token), which are the agent container's alone",
        ),
        (
            "hostPID",
            spec.host_pid,
            "the containers would see the node's processes, and through /proc their files",
        ),
        (
            "hostIPC",
            spec.host_ipc,
            "the containers would share the node's IPC namespace",
        ),
    ] {
        if on == Some(true) {
            bad(
                format!("{FIELD}.spec.{name}"),
                format!("cannot be true: {why}"),
            );
        }
    }
    if written("ephemeralContainers") {
        bad(
            format!("{FIELD}.spec.ephemeralContainers"),
            "cannot be part of a pod template (add them to a running pod with kubectl debug)"
                .into(),
        );
    }
    if spec.security_context.as_ref().and_then(|c| c.run_as_user) == Some(0) {
        bad(
            format!("{FIELD}.spec.securityContext.runAsUser"),
            "0 (root) is not allowed: the agent runs as a non-root user".into(),
        );
    }
    if let Some(policy) = spec.restart_policy.as_deref().filter(|p| *p != "Always") {
        bad(
            format!("{FIELD}.spec.restartPolicy"),
            format!("`{policy}` is not allowed: StatefulSet pods restart `Always`"),
        );
    }
    if let Some(grace) = spec.termination_grace_period_seconds {
        let leave = whole_seconds(cx.leave_timeout);
        let least = leave + LEAVE_MARGIN_SECONDS;
        if u64::try_from(grace).map_or(true, |g| g < least) {
            bad(
                format!("{FIELD}.spec.terminationGracePeriodSeconds"),
                format!(
                    "{grace} leaves the agent too little time to leave the cluster (its leave timeout, or its handover timeout if longer, is {leave}s, then it says goodbye and exits): a stopped pod would be killed first, and the others would see a crash; use at least {least}"
                ),
            );
        }
    }
    for name in &cx.scheduling_set {
        if written(name) {
            bad(
                format!("{FIELD}.spec.{name}"),
                format!("is set in spec.scheduling.{name} already: set it in one place"),
            );
        }
    }
    for v in spec.volumes.iter().flatten() {
        if cx.volumes.contains(&v.name.as_str()) {
            bad(
                format!("{FIELD}.spec.volumes[{}]", v.name),
                "is the operator's (the agents' settings, cluster key, token and TLS certificate); name your volume otherwise".into(),
            );
        }
        if v.host_path.is_some() {
            bad(
                format!("{FIELD}.spec.volumes[{}].hostPath", v.name),
                "is not allowed: a folder of the node can hold other pods' secrets (Pod Security \"restricted\" forbids it too)".into(),
            );
        }
        let sources = v.projected.as_ref().and_then(|p| p.sources.as_ref());
        if sources
            .into_iter()
            .flatten()
            .any(|s| s.service_account_token.is_some())
        {
            bad(
                format!("{FIELD}.spec.volumes[{}].projected", v.name),
                "may not project a service-account token: the pods run as the agents' service account, whose token is the agent container's alone (least privilege); an application that needs the Kubernetes API needs a service account of its own, in a pod of its own".into(),
            );
        }
    }
    let mut agent_only = |c: &Container, at: &str| {
        for m in c.volume_mounts.iter().flatten() {
            if cx.agent_only_volumes.contains(&m.name.as_str()) {
                bad(
                    format!("{at}.volumeMounts[{}]", m.mount_path),
                    format!(
                        "mounts the operator's volume {:?}, which holds the agent's secrets (cluster key, service-account token) and is the agent container's alone",
                        m.name
                    ),
                );
            }
        }
    };
    for (i, c) in spec.containers.iter().enumerate() {
        if c.name != AGENT {
            agent_only(c, &format!("{FIELD}.spec.containers[{}]", label(c, i)));
        }
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        agent_only(c, &format!("{FIELD}.spec.initContainers[{}]", label(c, i)));
    }
    let containers_raw = spec_raw
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let mut names = BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let at = format!("{FIELD}.spec.containers[{}]", label(c, i));
        if !names.insert(c.name.clone()) {
            bad(at.clone(), "is listed twice".into());
        }
        let raw_c = containers_raw
            .and_then(|l| l.get(i))
            .and_then(Value::as_object);
        if c.name == AGENT {
            check_agent(c, raw_c, &at, cx, &mut bad);
            continue;
        }
        unprivileged(c, &at, &mut bad);
        let merged_into_app = cx.application.as_deref() == Some(c.name.as_str());
        if merged_into_app {
            if raw_c.is_some_and(|r| r.contains_key("image")) {
                bad(
                    format!("{at}.image"),
                    "is set in spec.application.image: set it in one place".into(),
                );
            }
            for e in c.env.iter().flatten() {
                if OPERATOR_APP_ENV.contains(&e.name.as_str()) {
                    bad(
                        format!("{at}.env[{}]", e.name),
                        "is set by the operator: it tells the application where its agent is"
                            .into(),
                    );
                }
            }
        }
        if !merged_into_app && c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            bad(
                format!("{at}.image"),
                "is required for a container that is neither `agent` nor the application".into(),
            );
        }
        if c.name.is_empty() {
            bad(at.clone(), "has no name".into());
        }
        for p in c.ports.iter().flatten() {
            if u16::try_from(p.container_port).is_ok_and(|port| cx.ports.contains(&port)) {
                bad(
                    format!("{at}.ports[{}]", p.container_port),
                    "is the agent's port: containers of a pod share its network, so only one can listen there".into(),
                );
            }
        }
    }
    // Container names in the pod: the operator's and the template's.
    names.insert(AGENT.to_owned());
    names.extend(cx.application.clone());
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let at = format!("{FIELD}.spec.initContainers[{}]", label(c, i));
        unprivileged(c, &at, &mut bad);
        if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            bad(format!("{at}.image"), "is required".into());
        }
        if names.contains(&c.name) {
            bad(
                at.clone(),
                "has the name of a container: every container of a pod needs its own name".into(),
            );
        }
        // A restartable init container (a native sidecar) listens beside the agent.
        for p in c.ports.iter().flatten() {
            if u16::try_from(p.container_port).is_ok_and(|port| cx.ports.contains(&port)) {
                bad(
                    format!("{at}.ports[{}]", p.container_port),
                    "is the agent's port: containers of a pod share its network, so only one can listen there".into(),
                );
            }
        }
    }
    out
}

/// References in `spec` to the cluster's Secret (`key_secret`: the cluster key and the
/// management token) or to a legacy token Secret of the agents' service account
/// (`<account>-token-…`, which Kubernetes before 1.24 makes): from the application's
/// env, or from the pod template's volumes, projected sources, env and envFrom. Each is
/// refused: the key, the token and the agents' Kubernetes token are the agent
/// container's alone (it reads them from its own mounts).
pub fn secret_references(
    application_env: &[EnvVar],
    template: Option<&Value>,
    key_secret: &str,
    account: &str,
) -> Vec<Problem> {
    // Any `…-cluster-key`, `…-muster-ca` or `…-muster-tls`: the operator names every
    // cluster's Secrets so, and another ClusterSpec of the namespace must not mount
    // this one's either.
    use crate::controller::build::tls::{CA_SECRET_SUFFIX, TLS_SECRET_SUFFIX};
    let refused = |name: &str| {
        name == key_secret
            || name.ends_with("-cluster-key")
            || name.ends_with(CA_SECRET_SUFFIX)
            || name.ends_with(TLS_SECRET_SUFFIX)
            || name.starts_with(&format!("{account}-token-"))
    };
    let problem = |field: String, name: &str| Problem {
        field,
        message: format!(
            "refers to Secret {name}, which holds the agents' secrets (the cluster key and management token, the cluster's CA or the agents' TLS key, or their Kubernetes token): they are the agent container's alone (the CA's, the operator's alone)"
        ),
    };
    let mut out = Vec::new();
    let env_refs = |at: &str, env: &[EnvVar], out: &mut Vec<Problem>| {
        for e in env {
            let name = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|r| r.name.as_str());
            if let Some(name) = name.filter(|n| refused(n)) {
                out.push(problem(format!("{at}.env[{}]", e.name), name));
            }
        }
    };
    env_refs("spec.application", application_env, &mut out);
    let Some(spec) = template
        .and_then(|t| serde_json::from_value::<PodTemplateSpec>(t.clone()).ok())
        .and_then(|t| t.spec)
    else {
        return out;
    };
    for v in spec.volumes.iter().flatten() {
        let direct = v.secret.as_ref().and_then(|s| s.secret_name.as_deref());
        let projected = v
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .filter_map(|s| s.secret.as_ref().map(|x| x.name.as_str()));
        for name in direct.into_iter().chain(projected).filter(|n| refused(n)) {
            out.push(problem(format!("{FIELD}.spec.volumes[{}]", v.name), name));
        }
    }
    let containers = spec.containers.iter().map(|c| ("containers", c)).chain(
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| ("initContainers", c)),
    );
    for (list, c) in containers {
        let at = format!("{FIELD}.spec.{list}[{}]", c.name);
        env_refs(&at, c.env.as_deref().unwrap_or_default(), &mut out);
        for (i, from) in c.env_from.iter().flatten().enumerate() {
            let name = from.secret_ref.as_ref().map(|r| r.name.as_str());
            if let Some(name) = name.filter(|n| refused(n)) {
                out.push(problem(format!("{at}.envFrom[{i}]"), name));
            }
        }
    }
    out
}

/// Variables the operator gives the application container.
const OPERATOR_APP_ENV: [&str; 2] = ["MUSTER_AGENT_URL", "MUSTER_POD_IP"];

/// `d` in whole seconds, rounded up (a grace period is whole seconds).
pub fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Seconds a pod's grace period must give beyond the agent's leave timeout: the agent
/// tells the others it is gone, then the process exits.
pub const LEAVE_MARGIN_SECONDS: u64 = 5;

/// Whether `path` is `dir`, under it, or above it (a mount there would hide it).
fn overlaps(path: &str, dir: &str) -> bool {
    let norm = |p: &str| {
        let t = p.trim_end_matches('/');
        if t.is_empty() {
            "/".to_owned()
        } else {
            t.to_owned()
        }
    };
    let (p, d) = (norm(path), norm(dir));
    let within = |inner: &str, outer: &str| {
        inner == outer
            || outer == "/"
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    within(&p, &d) || within(&d, &p)
}

/// What the merge must leave as the operator built it (`base`), checked on the merged
/// template: a `null` or a replaced list in the override could otherwise remove the
/// agent's variables, mounts, ports or security settings, the operator's volumes, the
/// selector labels or the settings digest. Each problem names the field.
pub fn protected(base: &Value, merged: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut changed = |field: String| {
        out.push(Problem {
            field,
            message: "is the operator's and must stay as it builds it: the override removes or changes it".into(),
        });
    };
    let get = |v: &Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, k| v.get(*k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for map in ["labels", "annotations"] {
        if let Some(Value::Object(entries)) = base.get("metadata").and_then(|m| m.get(map)) {
            for (k, v) in entries {
                if get(merged, &["metadata", map, k]) != *v {
                    changed(format!("{FIELD}.metadata.{map}.{k}"));
                }
            }
        }
    }
    for path in [
        &["spec", "serviceAccountName"][..],
        &["spec", "automountServiceAccountToken"],
        &["spec", "enableServiceLinks"],
        &["spec", "securityContext", "runAsNonRoot"],
        &["spec", "securityContext", "seccompProfile"],
    ] {
        if get(base, path) != get(merged, path) {
            changed(format!("{FIELD}.{}", path.join(".")));
        }
    }
    let named = |v: &Value, list: &str, key: &str, name: &Value| {
        v.get("spec")
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find(|x| x.get(key) == Some(name)))
            .cloned()
    };
    for v in base
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = v.get("name").cloned().unwrap_or_default();
        if named(merged, "volumes", "name", &name).as_ref() != Some(v) {
            changed(format!(
                "{FIELD}.spec.volumes[{}]",
                name.as_str().unwrap_or_default()
            ));
        }
    }
    let agent = Value::String(AGENT.to_owned());
    let at = format!("{FIELD}.spec.containers[{AGENT}]");
    let (Some(Value::Object(before)), after) = (
        named(base, "containers", "name", &agent),
        named(merged, "containers", "name", &agent),
    ) else {
        return out;
    };
    let Some(Value::Object(after)) = after else {
        changed(at);
        return out;
    };
    for (k, v) in &before {
        let now = after.get(k).cloned().unwrap_or(Value::Null);
        match (k.as_str(), v) {
            // Lists the user may add to: each of the operator's entries stays.
            ("env" | "volumeMounts", Value::Array(entries)) => {
                let key = if k == "env" { "name" } else { "mountPath" };
                for e in entries {
                    let id = e.get(key).cloned().unwrap_or_default();
                    let kept = now.as_array().is_some_and(|l| l.iter().any(|x| x == e));
                    if !kept {
                        changed(format!("{at}.{k}[{}]", id.as_str().unwrap_or_default()));
                    }
                }
            }
            // Fields the user may add: each of the operator's stays.
            ("securityContext", Value::Object(fields)) => {
                for (f, fv) in fields {
                    if now.get(f) != Some(fv) {
                        changed(format!("{at}.securityContext.{f}"));
                    }
                }
            }
            _ if now != *v => changed(format!("{at}.{k}")),
            _ => {}
        }
    }
    out
}

/// A container by name in a field path, by index when it has none.
fn label(c: &Container, i: usize) -> String {
    if c.name.is_empty() {
        i.to_string()
    } else {
        c.name.clone()
    }
}

/// Any container: not privileged and no capability beyond NET_BIND_SERVICE (as Pod
/// Security "restricted"): a privileged container reaches the node, and through it the
/// agent's key and token.
fn unprivileged(c: &Container, at: &str, bad: &mut impl FnMut(String, String)) {
    let Some(sc) = &c.security_context else {
        return;
    };
    if sc.privileged == Some(true) {
        bad(
            format!("{at}.securityContext.privileged"),
            "cannot be true: a privileged container reaches the node, and through it the agent's cluster key and token".into(),
        );
    }
    for cap in sc.capabilities.iter().flat_map(|c| c.add.iter().flatten()) {
        if cap != "NET_BIND_SERVICE" {
            bad(
                format!("{at}.securityContext.capabilities.add[{cap}]"),
                "only NET_BIND_SERVICE may be added (as under Pod Security \"restricted\")".into(),
            );
        }
    }
}

/// The agent container: its essentials stay the operator's.
fn check_agent(
    c: &Container,
    raw: Option<&Map<String, Value>>,
    at: &str,
    cx: &Context<'_>,
    bad: &mut impl FnMut(String, String),
) {
    const MAY_ADD: [&str; 4] = ["name", "env", "volumeMounts", "securityContext"];
    for key in raw.into_iter().flat_map(Map::keys) {
        if !MAY_ADD.contains(&key.as_str()) {
            let instead = match key.as_str() {
                "image" | "imagePullPolicy" | "resources" => {
                    format!("; use spec.agent.{key}")
                }
                "args" | "command" => {
                    "; the agent's settings come from spec.bootstrap and spec.membership".to_owned()
                }
                _ => String::new(),
            };
            bad(
                format!("{at}.{key}"),
                format!(
                    "is the operator's: only env, volumeMounts and securityContext may be added to the agent container{instead}"
                ),
            );
        }
    }
    for e in c.env.iter().flatten() {
        if e.name.starts_with("MUSTER_")
            || ["POD_IP", "POD_NAME", "POD_NAMESPACE"].contains(&e.name.as_str())
        {
            bad(
                format!("{at}.env[{}]", e.name),
                "is how the operator configures the agent; the agent's settings come from spec.bootstrap and spec.membership".into(),
            );
        }
    }
    for m in c.volume_mounts.iter().flatten() {
        if cx.mount_paths.iter().any(|d| overlaps(&m.mount_path, d)) {
            bad(
                format!("{at}.volumeMounts[{}]", m.mount_path),
                "would hide or replace the agent's settings, key or token (mounted at /etc/muster/config, /etc/muster/key and /var/run/secrets/kubernetes.io/serviceaccount); mount elsewhere".into(),
            );
        }
    }
    if let Some(sc) = &c.security_context
        && (sc.run_as_user == Some(0) || sc.privileged == Some(true))
    {
        bad(
            format!("{at}.securityContext"),
            "may not make the agent root or privileged".into(),
        );
    }
}

#[cfg(test)]
mod tests;
