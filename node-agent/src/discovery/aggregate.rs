//! `aggregate` discovery: several methods in order; the first that returns contact
//! points wins. A method that fails or finds nothing hands over to the next.

use std::sync::Arc;

use super::{BoxFuture, Discovered, Discovery, DiscoveryError};

#[derive(Debug)]
pub struct AggregateDiscovery {
    methods: Vec<Arc<dyn Discovery>>,
}

impl AggregateDiscovery {
    pub fn new(methods: Vec<Arc<dyn Discovery>>) -> Self {
        Self { methods }
    }
}

impl Discovery for AggregateDiscovery {
    fn method(&self) -> &'static str {
        "aggregate"
    }

    fn lookup(&self) -> BoxFuture<'_, Result<Discovered, DiscoveryError>> {
        Box::pin(async move {
            let mut errors = Vec::new();
            let mut empty: Option<Discovered> = None;
            for m in &self.methods {
                match m.lookup().await {
                    Ok(found) if !found.targets.is_empty() => return Ok(found),
                    Ok(found) => {
                        empty.get_or_insert(found);
                    }
                    Err(e) => errors.push(format!("{}: {e}", m.method())),
                }
            }
            // Nothing found anywhere: an empty answer is an answer, unless none answered.
            empty.ok_or(DiscoveryError::AllFailed(errors))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ResolvedTarget;

    #[derive(Debug)]
    struct Fixed(Result<Vec<&'static str>, &'static str>);

    impl Discovery for Fixed {
        fn method(&self) -> &'static str {
            "fixed"
        }
        fn lookup(&self) -> BoxFuture<'_, Result<Discovered, DiscoveryError>> {
            let r = self.0.clone();
            Box::pin(async move {
                r.map(|ips| Discovered {
                    targets: ips
                        .into_iter()
                        .map(|ip| ResolvedTarget {
                            host: ip.into(),
                            port: None,
                            ip: ip.parse().unwrap(),
                        })
                        .collect(),
                    skipped: vec![],
                })
                .map_err(|e| DiscoveryError::Kubernetes(e.into()))
            })
        }
    }

    fn agg(list: Vec<Fixed>) -> AggregateDiscovery {
        AggregateDiscovery::new(
            list.into_iter()
                .map(|f| Arc::new(f) as Arc<dyn Discovery>)
                .collect(),
        )
    }

    #[tokio::test]
    async fn first_that_answers_wins() {
        let a = agg(vec![
            Fixed(Err("down")),
            Fixed(Ok(vec![])),
            Fixed(Ok(vec!["10.0.0.1"])),
            Fixed(Ok(vec!["10.0.0.2"])),
        ]);
        let found = a.lookup().await.unwrap();
        assert_eq!(found.targets.len(), 1);
        assert_eq!(found.targets[0].host, "10.0.0.1");
    }

    #[tokio::test]
    async fn empty_beats_failure_and_all_failing_names_each() {
        let a = agg(vec![Fixed(Err("down")), Fixed(Ok(vec![]))]);
        assert!(a.lookup().await.unwrap().targets.is_empty());
        let a = agg(vec![Fixed(Err("one")), Fixed(Err("two"))]);
        let e = a.lookup().await.unwrap_err().to_string();
        assert!(e.contains("one") && e.contains("two"), "{e}");
    }
}
