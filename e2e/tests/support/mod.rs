//! Shared by the e2e tests.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;

/// Creates the headless Service `name` in `default` selecting `app=NAME`, with the
/// agents' management port (named `management`, 8558).
pub async fn create_headless_service(client: &kube::Client, name: &str, publish_not_ready: bool) {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": publish_not_ready,
            "selector": {"app": name},
            "ports": [{"name": "management", "port": 8558, "targetPort": "management"}],
        },
    }))
    .expect("a valid Service");
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await
        .expect("create the Service");
}
