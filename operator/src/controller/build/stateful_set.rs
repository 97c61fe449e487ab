//! The StatefulSet: the pods — the agent container (and the application beside it),
//! restricted security, the settings and key mounted, updated `OnDelete` for the
//! operator's oldest-last rollout or `RollingUpdate` for `Ordinal`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    DownwardAPIProjection, DownwardAPIVolumeFile, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::config_map::{CONFIG_HASH, config_hash};
use super::{
    BuildError, CLUSTER_LABEL, CLUSTER_PORT, CONFIG_DIR, KEY_DIR, MANAGEMENT_PORT, Selection,
    TLS_DIR, TLS_VOLUME, TOKEN_DIR, TOKEN_VOLUME, VOLUMES, labels, meta, secret_name, tls,
};
use crate::crd::{ClusterSpec, Retention, RolloutStrategy};
use crate::pod_template;
use crate::validate::Problem;

/// The user and group the pods run as (distroless's `nonroot`).
const NON_ROOT: i64 = 65532;

/// `agent_yaml`: the agents' settings file (its digest goes into the template). The
/// agents talk to the Kubernetes API (their formation record), so the agent container
/// gets a token.
pub fn build(
    cs: &ClusterSpec,
    agent_yaml: &str,
    selection: Selection,
) -> Result<StatefulSet, BuildError> {
    let name = cs.name_any();
    let s = &cs.spec;
    let mut containers = vec![agent(cs)];
    if let Some(app) = &s.application {
        containers.push(Container {
            name: app.name.clone(),
            image: Some(app.image.clone()),
            env: Some(application_env(&app.env, s.tls.enabled)),
            resources: app.resources.clone(),
            command: (!app.command.is_empty()).then(|| app.command.clone()),
            args: (!app.args.is_empty()).then(|| app.args.clone()),
            security_context: Some(restricted()),
            ..Container::default()
        });
    }
    let sched = &s.scheduling;
    let mut volumes = vec![
        Volume {
            name: VOLUMES[0].into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: VOLUMES[1].into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name(cs)),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    if s.tls.enabled {
        // The agent's certificate and key, and the CAs it trusts: the agent
        // container's alone, like the cluster key.
        volumes.push(Volume {
            name: TLS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls::tls_secret_name(cs)),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    {
        volumes.push(token_volume());
        if let Some(agent) = containers.first_mut() {
            agent
                .volume_mounts
                .get_or_insert_with(Vec::new)
                .push(VolumeMount {
                    name: TOKEN_VOLUME.into(),
                    mount_path: TOKEN_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
        }
    }
    let pod = PodSpec {
        service_account_name: Some(name.clone()),
        // Never a token in every container: the agent container mounts its own
        // (`TOKEN_VOLUME`; least privilege).
        automount_service_account_token: Some(false),
        // No `<SERVICE>_SERVICE_HOST` variables: a Service named `muster-…` in the
        // namespace would give the agent MUSTER_… variables it does not know, and it
        // would refuse to start.
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(
            i64::try_from(crate::validate::DEFAULT_GRACE_SECONDS).unwrap_or(30),
        ),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NON_ROOT),
            run_as_group: Some(NON_ROOT),
            fs_group: Some(NON_ROOT),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        containers,
        volumes: Some(volumes),
        node_selector: (!sched.node_selector.is_empty()).then(|| sched.node_selector.clone()),
        tolerations: (!sched.tolerations.is_empty()).then(|| sched.tolerations.clone()),
        affinity: sched.affinity.clone(),
        priority_class_name: sched.priority_class_name.clone(),
        ..PodSpec::default()
    };
    let update = match s.rollout.strategy {
        RolloutStrategy::OldestLast => "OnDelete",
        RolloutStrategy::Ordinal => "RollingUpdate",
    };
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some({
                let mut l = labels(cs);
                l.insert(CLUSTER_LABEL.to_owned(), name.clone());
                l
            }),
            // Agents read agent.yaml at start: a change of it changes the template, so
            // it rolls out (the new-cluster-enabled key, which they follow at run time,
            // is not part of it).
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH.to_owned(),
                config_hash(agent_yaml),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(pod),
    };
    if let Some(user) = &s.pod_template {
        template = with_override(template, user)?;
    }
    let claims = match &s.volume_claim_templates {
        Some(raw) => crate::claims::parse(raw)?
            .into_iter()
            .map(|mut c| {
                // The operator's labels on every claim, beside the user's.
                let mut l = c.metadata.labels.take().unwrap_or_default();
                l.extend(labels(cs));
                c.metadata.labels = Some(l);
                c
            })
            .collect(),
        None => Vec::new(),
    };
    let r = &s.volume_claim_retention;
    // Always built, so that going back to the default can be written (an absent field
    // would leave the live policy as it is); the reconcile leaves the default out where
    // the live StatefulSet has no policy, and `apply` leaves it out for servers before
    // 1.27, which do not know the field.
    let retention = Some({
        let words = |x: Retention| match x {
            Retention::Retain => "Retain".to_owned(),
            Retention::Delete => "Delete".to_owned(),
        };
        StatefulSetPersistentVolumeClaimRetentionPolicy {
            when_deleted: Some(words(r.when_deleted)),
            when_scaled: Some(words(r.when_scaled)),
        }
    });
    Ok(StatefulSet {
        metadata: meta(cs, &name),
        spec: StatefulSetSpec {
            replicas: Some(s.replicas),
            service_name: Some(name),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some(update.into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selection.labels(cs)),
                ..LabelSelector::default()
            },
            template,
            volume_claim_templates: (!claims.is_empty()).then_some(claims),
            persistent_volume_claim_retention_policy: retention,
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    })
}

/// `template` with the user's `spec.podTemplate` merged in (checked before by
/// [`crate::pod_template::check`]).
fn with_override(
    template: PodTemplateSpec,
    user: &serde_json::Value,
) -> Result<PodTemplateSpec, BuildError> {
    let failed = |e: serde_json::Error| {
        BuildError(vec![Problem {
            field: pod_template::FIELD.to_owned(),
            message: format!("cannot be merged into the pod template: {e}"),
        }])
    };
    let base = serde_json::to_value(template).map_err(failed)?;
    let mut merged = base.clone();
    pod_template::merge(&mut merged, user);
    let problems = pod_template::protected(&base, &merged);
    if !problems.is_empty() {
        return Err(BuildError(problems));
    }
    serde_json::from_value(merged).map_err(failed)
}

/// Variables the operator gives the application container, before the user's own, so
/// that the application finds its agent: on Kubernetes the agent listens on the pod IP
/// (the address its peers probe and that it advertises), which the application
/// reaches from inside the pod as well. The checks refuse these names in the user's
/// variables.
pub const AGENT_URL_ENV: &str = "MUSTER_AGENT_URL";
/// The agent's `cluster.app-version`, from the pod's template revision.
pub const APP_VERSION_ENV: &str = "MUSTER_CLUSTER_APP_VERSION";
pub const POD_IP_ENV: &str = "MUSTER_POD_IP";

/// The application container's environment: [`POD_IP_ENV`] (downward API) and
/// [`AGENT_URL_ENV`] (`http://$(MUSTER_POD_IP):8558`, expanded by the kubelet; `https`
/// with `tls`: the management port speaks nothing else then), then `user`'s variables.
fn application_env(user: &[EnvVar], tls: bool) -> Vec<EnvVar> {
    let scheme = if tls { "https" } else { "http" };
    let mut env = vec![
        field_env(POD_IP_ENV, "status.podIP"),
        EnvVar {
            name: AGENT_URL_ENV.into(),
            value: Some(format!("{scheme}://$({POD_IP_ENV}):{MANAGEMENT_PORT}")),
            ..EnvVar::default()
        },
    ];
    env.extend(user.iter().cloned());
    env
}

/// How long a projected service-account token is asked for; the kubelet renews it at
/// 80 % of its life (3607 s, as the admission plugin asks, so that clusters that issue
/// long-lived tokens for compatibility recognise it).
const TOKEN_SECONDS: i64 = 3607;

/// The agent's service-account token, the cluster's CA and the namespace, in the files
/// a Kubernetes client reads in a pod (`TOKEN_DIR`): what the ServiceAccount admission
/// plugin would mount into every container, built here for the agent container alone.
fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            ..KeyToPath::default()
                        }]),
                        ..ConfigMapProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".into()),
                                field_path: "metadata.namespace".into(),
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// A variable from the downward API.
fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The agent container.
fn agent(cs: &ClusterSpec) -> Container {
    let a = &cs.spec.agent;
    let field = field_env;
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    // With TLS the management port speaks HTTPS only; the kubelet checks no
    // certificate on an HTTPS probe.
    let scheme = cs.spec.tls.enabled.then(|| "HTTPS".to_owned());
    let http_probe = |path: &str, period: i32, failures: Option<i32>| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("management".into()),
            scheme: scheme.clone(),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: failures,
        ..Probe::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    Container {
        name: "agent".into(),
        image: Some(a.image.clone()),
        image_pull_policy: Some(a.image_pull_policy.clone()),
        args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/agent.yaml")]),
        env: Some(vec![
            field("POD_IP", "status.podIP"),
            field("POD_NAME", "metadata.name"),
            field("POD_NAMESPACE", "metadata.namespace"),
            // The member's app-version is its pod's template revision (as Akka's
            // AppVersionRevision): members and status show who runs which template.
            field(
                APP_VERSION_ENV,
                "metadata.labels['controller-revision-hash']",
            ),
        ]),
        ports: Some(vec![
            port("management", MANAGEMENT_PORT),
            port("cluster", CLUSTER_PORT),
        ]),
        readiness_probe: Some(http_probe("/ready", 2, None)),
        liveness_probe: Some(http_probe("/alive", 5, Some(3))),
        // Liveness (and readiness) are probed only once the agent answers: its first
        // probe no longer meets a process that has not bound its port yet (a Warning
        // event at every start). Up to 60 s to start, as on a starved node.
        startup_probe: Some(Probe {
            initial_delay_seconds: Some(1),
            ..http_probe("/alive", 1, Some(60))
        }),
        resources: Some(a.resources.clone().unwrap_or_else(|| {
            let q = |v: &str| Quantity(v.into());
            ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".into(), q("10m")),
                    ("memory".into(), q("32Mi")),
                ])),
                limits: Some(BTreeMap::from([("memory".into(), q("64Mi"))])),
                ..ResourceRequirements::default()
            }
        })),
        security_context: Some(restricted()),
        volume_mounts: Some({
            let mut mounts = vec![mount("config", CONFIG_DIR), mount("cluster-key", KEY_DIR)];
            if cs.spec.tls.enabled {
                mounts.push(mount(TLS_VOLUME, TLS_DIR));
            }
            mounts
        }),
        ..Container::default()
    }
}

/// A container's security context under Pod Security "restricted".
fn restricted() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}
