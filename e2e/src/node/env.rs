//! A container's environment as the kubelet builds it: `env` values, `fieldRef`s of the
//! downward API, `configMapKeyRef` / `secretKeyRef` and `envFrom` read at container
//! start, and `$(NAME)` expansion in `env` values, commands and arguments.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Client;
use kube::api::Api;

/// The value of a `fieldRef` path, as the downward API gives it.
fn field(pod: &Pod, ip: IpAddr, path: &str) -> Option<String> {
    let m = &pod.metadata;
    match path {
        "status.podIP" => Some(ip.to_string()),
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        other => {
            let key = other
                .strip_prefix("metadata.labels['")?
                .strip_suffix("']")?;
            m.labels.as_ref()?.get(key).cloned()
        }
    }
}

/// Values a container's environment takes from ConfigMaps and Secrets, read at
/// container start as the kubelet does.
#[derive(Debug, Default)]
pub(super) struct Referenced {
    /// From `envFrom`, in order, prefix applied.
    from: Vec<(String, String)>,
    /// `configMapKeyRef` / `secretKeyRef` values by env name.
    keys: BTreeMap<String, String>,
}

/// A ConfigMap's or Secret's data as strings; `None` when it does not exist.
async fn object_data(
    client: &Client,
    ns: &str,
    secret: bool,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    if secret {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        Ok(secrets
            .get_opt(name)
            .await
            .map_err(|e| format!("secret {ns}/{name}: {e}"))?
            .map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            }))
    } else {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        Ok(maps
            .get_opt(name)
            .await
            .map_err(|e| format!("configmap {ns}/{name}: {e}"))?
            .map(|m| m.data.unwrap_or_default()))
    }
}

/// Resolves `envFrom` and the `configMapKeyRef` / `secretKeyRef` env entries. A missing
/// object or key that is not optional is an error naming it (the kubelet's
/// `CreateContainerConfigError`); a missing optional one is left out, as are `envFrom`
/// keys that cannot be variable names.
pub(super) async fn referenced_env(
    client: &Client,
    pod: &Pod,
    c: &Container,
) -> Result<Referenced, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = Referenced::default();
    for source in c.env_from.iter().flatten() {
        let (secret, name, optional) = if let Some(r) = &source.config_map_ref {
            (false, &r.name, r.optional)
        } else if let Some(r) = &source.secret_ref {
            (true, &r.name, r.optional)
        } else {
            continue;
        };
        let kind = if secret { "secret" } else { "configmap" };
        match object_data(client, &ns, secret, name).await? {
            Some(data) => {
                let prefix = source.prefix.clone().unwrap_or_default();
                for (k, v) in data {
                    let var = format!("{prefix}{k}");
                    if var.is_empty() || var.contains('=') || var.contains('\0') {
                        tracing::warn!(%var, "envFrom {kind} {ns}/{name}: not a variable name, skipped");
                        continue;
                    }
                    out.from.push((var, v));
                }
            }
            None if optional == Some(true) => {}
            None => return Err(format!("envFrom: {kind} {ns}/{name} not found")),
        }
    }
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        let (secret, r_name, key, optional) = if let Some(r) = &from.config_map_key_ref {
            (false, &r.name, &r.key, r.optional)
        } else if let Some(r) = &from.secret_key_ref {
            (true, &r.name, &r.key, r.optional)
        } else {
            continue;
        };
        let kind = if secret { "secret" } else { "configmap" };
        let value = object_data(client, &ns, secret, r_name)
            .await?
            .and_then(|mut d| d.remove(key));
        match value {
            Some(v) => {
                out.keys.insert(e.name.clone(), v);
            }
            None if optional == Some(true) => {}
            None => {
                return Err(format!(
                    "env {}: {kind} {ns}/{r_name} has no key {key:?} (or does not exist)",
                    e.name
                ));
            }
        }
    }
    Ok(out)
}

/// `$(NAME)` in a command, an argument or an `env` value becomes the container's
/// variable NAME (for an `env` value: one defined before it), as the kubelet does; `$$` is a literal `$`; an undefined name is left as written.
pub(super) fn expand(arg: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')'))
            && let Some((_, value)) = env.iter().rev().find(|(k, _)| k == name)
        {
            out.push_str(value);
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment as a kubelet gives it: the service variables, then
/// `envFrom`, then `env` (a later entry wins).
pub(super) fn environment(
    pod: &Pod,
    c: &Container,
    ip: IpAddr,
    api_port: u16,
    referenced: &Referenced,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
        (
            "HOSTNAME".to_owned(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        ("KUBERNETES_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), api_port.to_string()),
    ];
    env.extend(referenced.from.iter().cloned());
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            // `$(NAME)` names a variable defined before this one (or a service
            // variable), as in the kubelet; PATH and HOSTNAME come from the image
            // and runtime, which the kubelet does not know.
            (Some(v), _) => {
                let defined: Vec<(String, String)> = env
                    .iter()
                    .filter(|(k, _)| k != "PATH" && k != "HOSTNAME")
                    .cloned()
                    .collect();
                Some(expand(v, &defined))
            }
            (None, Some(from)) => match &from.field_ref {
                Some(f) => field(pod, ip, &f.field_path),
                None => referenced.keys.get(&e.name).cloned(),
            },
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            env.push((e.name.clone(), v));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_in_arguments_are_expanded_as_the_kubelet_does() {
        let env = vec![
            ("POD_IP".to_owned(), "10.0.0.7".to_owned()),
            ("PORT".to_owned(), "80".to_owned()),
        ];
        assert_eq!(expand("$(POD_IP):8080", &env), "10.0.0.7:8080");
        assert_eq!(expand("a$(PORT)b$(PORT)", &env), "a80b80");
        assert_eq!(expand("$$(POD_IP)", &env), "$(POD_IP)", "escaped");
        assert_eq!(
            expand("$(NOPE) $ $(", &env),
            "$(NOPE) $ $(",
            "left as written"
        );
    }

    #[test]
    fn env_values_expand_variables_defined_before_them() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app",
            "env": [
                {"name": "LATER_USE", "value": "$(IP)"},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "URL", "value": "http://$(IP):8558/$$(IP)"},
                {"name": "P", "value": "$(PATH)"},
            ],
        }))
        .expect("a container");
        let pod = Pod::default();
        let ip: IpAddr = "127.0.1.9".parse().expect("an IP");
        let env = environment(&pod, &c, ip, 6443, &Referenced::default());
        let get = |name: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("URL"), Some("http://127.0.1.9:8558/$(IP)"));
        assert_eq!(
            get("LATER_USE"),
            Some("$(IP)"),
            "not yet defined: as written"
        );
    }
}
