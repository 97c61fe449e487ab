//! Bringing a lost cluster back (issue 19 A1). Under `newClusterEnabled: auto` a formed
//! cluster locks forming off for good, so when every member is gone — the resolver
//! downed them all (`down-all`, a lease-majority side cut from the API server), or
//! every pod was deleted — the new pods wait to join a cluster that no longer exists.
//! The operator opens forming again by itself, once, only on evidence that no member
//! of the old cluster is alive anywhere it could be:
//!
//! - every pod the StatefulSet should have exists, has an IP, and is not terminating;
//! - no pod is stranded ([`crate::stranded`]: stuck terminating, or on a node that is
//!   not Ready — a member may run on behind a cut);
//! - every pod's agent answers, and none is a member (a member cut off from the rest
//!   answers as one, and one that cannot be asked proves nothing);
//! - all of that for [`CONFIRM`] on end.
//!
//! Then the formation record is opened (a compare-and-swap on that Lease, written only
//! while this operator leads): the agents' own rules let exactly one pod form, the one
//! that claims the record, and the others join it; once the cluster is formed again the
//! lock closes as after any first formation.

use std::time::Duration;

use crate::crd::NewClusterEnabled;

/// How long the evidence must hold on end before forming is opened.
pub const CONFIRM: Duration = Duration::from_secs(10);

/// One pod, as the operator looked at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLook {
    pub name: String,
    pub terminating: bool,
    pub has_ip: bool,
    /// Its agent's member count, or why it did not answer (`None`: not asked).
    pub members: Option<Result<usize, String>>,
}

/// What the evidence says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to recover: not formed, not `auto`, scaled to zero, or some member is Up.
    NotLost,
    /// Every member may be gone, but it is not proven: why, in words.
    Unproven(String),
    /// No member of the old cluster is alive anywhere it could be.
    Lost,
}

/// Whether to ask every pod's agent at all: a formed cluster under `auto`, with pods to
/// form, and no Up member in the list the operator already has.
pub fn worth_looking(
    mode: NewClusterEnabled,
    formed: bool,
    replicas: i32,
    up: Option<i32>,
) -> bool {
    mode == NewClusterEnabled::Auto && formed && replicas > 0 && up.is_none_or(|u| u == 0)
}

/// The verdict from every pod of the cluster (`replicas` expected) and the stranded
/// pods' count.
pub fn judge(replicas: i32, pods: &[PodLook], stranded: usize) -> Verdict {
    let why = |w: String| Verdict::Unproven(w);
    let expected = usize::try_from(replicas).unwrap_or(0);
    if pods.len() < expected {
        return why(format!(
            "{} of {expected} pods exist: a missing pod may be a member that still runs somewhere",
            pods.len()
        ));
    }
    if stranded > 0 {
        return why(format!(
            "{stranded} pod(s) may still run unseen (see condition StrandedPods)"
        ));
    }
    for p in pods {
        if p.terminating {
            return why(format!("pod {} is terminating", p.name));
        }
        if !p.has_ip {
            return why(format!("pod {} has no IP yet", p.name));
        }
        match &p.members {
            None => return why(format!("pod {}'s agent was not asked", p.name)),
            Some(Err(e)) => {
                return why(format!(
                    "pod {}'s agent does not answer ({e}): it may be a member cut off from the rest",
                    p.name
                ));
            }
            Some(Ok(0)) => {}
            Some(Ok(n)) => {
                return why(format!(
                    "pod {}'s agent is a member of a cluster of {n}: the cluster is not lost, and the other pods join it once they reach it",
                    p.name
                ));
            }
        }
    }
    Verdict::Lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(name: &str, members: Result<usize, &str>) -> PodLook {
        PodLook {
            name: name.into(),
            terminating: false,
            has_ip: true,
            members: Some(members.map_err(str::to_owned)),
        }
    }

    #[test]
    fn only_a_formed_auto_cluster_with_nobody_up_is_looked_at() {
        use NewClusterEnabled::{Auto, False, True};
        assert!(worth_looking(Auto, true, 3, Some(0)));
        assert!(worth_looking(Auto, true, 3, None), "no agent answered");
        assert!(!worth_looking(Auto, true, 3, Some(1)));
        assert!(
            !worth_looking(Auto, false, 3, Some(0)),
            "never formed: it forms anyway"
        );
        assert!(!worth_looking(Auto, true, 0, Some(0)), "scaled to zero");
        assert!(
            !worth_looking(True, true, 3, Some(0)),
            "forming is on anyway"
        );
        assert!(
            !worth_looking(False, true, 3, Some(0)),
            "the user keeps it off"
        );
    }

    #[test]
    fn lost_only_when_every_pod_answers_as_no_member_and_nothing_may_run_unseen() {
        let idle = [
            look("shop-0", Ok(0)),
            look("shop-1", Ok(0)),
            look("shop-2", Ok(0)),
        ];
        assert_eq!(judge(3, &idle, 0), Verdict::Lost);
        let unproven = |v: Verdict, says: &str| match v {
            Verdict::Unproven(w) => assert!(w.contains(says), "{w}"),
            other => panic!("{other:?}"),
        };
        unproven(judge(3, &idle[..2], 0), "2 of 3 pods exist");
        unproven(judge(3, &idle, 1), "may still run unseen");
        let mut cut = idle.clone();
        cut[0] = look("shop-0", Ok(1));
        unproven(
            judge(3, &cut, 0),
            "pod shop-0's agent is a member of a cluster of 1",
        );
        cut[0] = look("shop-0", Err("no answer within 5s"));
        unproven(judge(3, &cut, 0), "pod shop-0's agent does not answer");
        let mut going = idle.clone();
        going[1].terminating = true;
        unproven(judge(3, &going, 0), "pod shop-1 is terminating");
        let mut new = idle.clone();
        new[2].has_ip = false;
        unproven(judge(3, &new, 0), "pod shop-2 has no IP");
        new[2] = PodLook {
            members: None,
            ..idle[2].clone()
        };
        unproven(judge(3, &new, 0), "not asked");
        // More pods than replicas (a scale-down under way) are all asked.
        let mut more = idle.to_vec();
        more.push(look("shop-3", Ok(2)));
        unproven(judge(3, &more, 0), "shop-3");
    }
}
