//! The full-shutdown finalizer: a ClusterSpec carries [`FINALIZER`] so that, when it
//! is deleted, the operator can ask its cluster to prepare for a full shutdown before
//! the garbage collector deletes the StatefulSet (and with it every pod at once).
//! Without it the members would leave one by one while the others vanish, and the last
//! ones would down themselves as a minority.
//!
//! Deletion never waits on the cluster: the operator asks once, whatever the answer,
//! and then removes the finalizer. A ClusterSpec deleted with `--cascade=orphan` keeps
//! its pods running, so its cluster is not asked. If the operator does not run, the
//! deletion waits for it; the finalizer can be removed by hand (README).

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use node_agent::base::member::MemberStatus;
use node_agent::base::secret::ManagementToken;
use serde_json::json;

use super::{Context, Error, build, observe};
use crate::crd::ClusterSpec;

/// The finalizer the operator puts on every ClusterSpec it reconciles.
pub const FINALIZER: &str = "muster.dev/full-shutdown";

/// Kubernetes' own finalizer of an object deleted with `--cascade=orphan`.
const ORPHAN: &str = "orphan";

/// Whether `cs` carries the operator's finalizer.
pub fn has(cs: &ClusterSpec) -> bool {
    cs.finalizers().iter().any(|f| f == FINALIZER)
}

/// The finalizers `cs` should carry: its own plus [`FINALIZER`], or without it.
fn with(cs: &ClusterSpec, ours: bool) -> Vec<String> {
    let mut out: Vec<String> = cs
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if ours {
        out.push(FINALIZER.to_owned());
    }
    out
}

/// Writes `finalizers` as of the version read: a change meanwhile is a 409, and the
/// next reconcile (which that change triggers) looks again.
async fn write(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<ClusterSpec> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": cs.resource_version(),
    }});
    match api
        .patch(
            &cs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(
            format!("write the finalizers of {}", cs.name_any()),
            e,
        )),
    }
}

/// Adds the finalizer to a ClusterSpec that lacks it.
pub async fn add(ctx: &Context, cs: &ClusterSpec, ns: &str) -> Result<(), Error> {
    write(ctx, cs, ns, with(cs, true)).await?;
    tracing::info!("added the full-shutdown finalizer");
    Ok(())
}

/// A deleted ClusterSpec that carries the finalizer: asks its cluster (when some member
/// is still Up and its pods are to go) to prepare for a full shutdown, then removes the
/// finalizer, so the garbage collector goes on.
pub async fn finish(ctx: &Context, cs: &ClusterSpec, ns: &str) -> Result<(), Error> {
    if cs.finalizers().iter().any(|f| f == ORPHAN) {
        tracing::info!(
            "deleted with --cascade=orphan: the pods stay, the cluster is not asked to shut down"
        );
    } else if let Some(token) = token(ctx, cs, ns).await? {
        let world = observe::world(ctx, cs, ns).await?;
        let up = world.members.as_ref().is_ok_and(|m| {
            m.members
                .iter()
                .any(|x| matches!(x.status, MemberStatus::Up | MemberStatus::WeaklyUp))
        });
        if up {
            super::prepare_full_shutdown(ctx, cs, &world, &token, "the ClusterSpec is deleted")
                .await;
        }
    }
    write(ctx, cs, ns, with(cs, false)).await?;
    tracing::info!("removed the full-shutdown finalizer");
    Ok(())
}

/// The management token from the cluster's own Secret (owned by this ClusterSpec);
/// `None` when there is none to use.
async fn token(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
) -> Result<Option<ManagementToken>, Error> {
    let name = build::secret_name(cs);
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Secret {name}"), e))?;
    let ours = |s: &Secret| {
        let uid = cs.meta().uid.as_deref();
        s.owner_references()
            .iter()
            .any(|o| Some(o.uid.as_str()) == uid)
    };
    Ok(secret.filter(ours).and_then(|s| {
        let data = s.data.unwrap_or_default();
        let token = data.get(build::MANAGEMENT_TOKEN)?;
        ManagementToken::new(token.0.trim_ascii()).ok()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(finalizers: &[&str]) -> ClusterSpec {
        let mut cs: ClusterSpec = serde_yaml::from_str(
            "apiVersion: muster.dev/v1alpha1\nkind: ClusterSpec\nmetadata: {name: shop, namespace: prod}\nspec: {}",
        )
        .expect("a ClusterSpec");
        cs.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        cs
    }

    #[test]
    fn the_finalizer_is_added_and_removed_beside_the_others() {
        let other = cs(&["example.com/backup"]);
        assert!(!has(&other));
        assert_eq!(with(&other, true), ["example.com/backup", FINALIZER]);
        let both = cs(&["example.com/backup", FINALIZER]);
        assert!(has(&both));
        assert_eq!(with(&both, true), ["example.com/backup", FINALIZER], "once");
        assert_eq!(with(&both, false), ["example.com/backup"]);
    }
}
