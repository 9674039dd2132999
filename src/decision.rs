//! Pure decisions: what a task's state calls for, and which targets stand for it.
//!
//! Nothing here calls AWS or uses SDK types, so every case is tested with plain values.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::config::{ServiceMapping, TargetGroupRef};
use crate::task::Task;

/// The registrar's action for a task in a given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Not running yet (or a state the registrar does not know): change nothing.
    Wait,
    /// Running and meant to keep running: register its targets.
    Register,
    /// Stopping or stopped: deregister its targets.
    Deregister,
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lifecycle::Wait => "wait",
            Lifecycle::Register => "register",
            Lifecycle::Deregister => "deregister",
        })
    }
}

/// The states after RUNNING, in which the task is going away whatever it was asked to do.
const STOPPING_STATES: &[&str] = &["DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"];

/// Decides from `lastStatus` and `desiredStatus`.
///
/// - desiredStatus STOPPED, or lastStatus DEACTIVATING, STOPPING, DEPROVISIONING or STOPPED:
///   deregister. ECS flips desiredStatus first, so a stop is acted on while lastStatus is
///   still RUNNING.
/// - lastStatus RUNNING with desiredStatus RUNNING: register.
/// - everything else (PROVISIONING, PENDING, ACTIVATING, desiredStatus PENDING, and states
///   ECS may add later): wait, because registering an address before the task runs is the
///   race this function exists to avoid.
pub fn lifecycle(last_status: &str, desired_status: &str) -> Lifecycle {
    if desired_status == "STOPPED" || STOPPING_STATES.contains(&last_status) {
        Lifecycle::Deregister
    } else if last_status == "RUNNING" && desired_status == "RUNNING" {
        Lifecycle::Register
    } else {
        Lifecycle::Wait
    }
}

/// An ELBv2 target: an IP address or an EC2 instance id, plus the port traffic goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Target {
    /// The IPv4 address (target type ip) or instance id (target type instance).
    pub id: String,
    /// The port on that address.
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.port)
    }
}

/// A target that one mapping entry calls for, with the groups it belongs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The mapping entry's name.
    pub service: String,
    /// Where the target goes.
    pub target_groups: Vec<TargetGroupRef>,
    /// The target itself.
    pub target: Target,
}

/// A mapping entry that matched the task but yields no target, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unplaced {
    /// The mapping entry's name.
    pub service: String,
    /// Why no target could be formed.
    pub reason: String,
}

/// The targets a task stands for under the entries it matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Targets to register or deregister.
    pub placements: Vec<Placement>,
    /// Entries that produced no target.
    pub unplaced: Vec<Unplaced>,
}

/// Returns whether forming targets for `task` needs the EC2 instance id of its container instance:
/// true for bridge and host network mode, where the task has no address of its own.
pub fn needs_instance_id(task: &Task) -> bool {
    task.ipv4().is_none() && task.container_instance_arn.is_some()
}

/// Forms the targets of `task` under each matched entry.
///
/// In awsvpc mode the target is the task's IPv4 address on the entry's container port. In
/// bridge and host mode it is the container instance's EC2 instance id (`instance_id`) on the
/// host port that ECS published for that container port. Registration requires the entry's
/// container to be part of the task. Deregistration does not, because a stop event may list
/// fewer containers and removing a target is harmless.
pub fn plan(
    task: &Task,
    services: &[&ServiceMapping],
    instance_id: Option<&str>,
    action: Lifecycle,
) -> Plan {
    let mut plan = Plan::default();
    for service in services {
        match place(task, service, instance_id, action) {
            Ok(target) => plan.placements.push(Placement {
                service: service.name.clone(),
                target_groups: service.target_groups.clone(),
                target,
            }),
            Err(reason) => plan.unplaced.push(Unplaced {
                service: service.name.clone(),
                reason,
            }),
        }
    }
    plan
}

fn place(
    task: &Task,
    service: &ServiceMapping,
    instance_id: Option<&str>,
    action: Lifecycle,
) -> Result<Target, String> {
    let container = task.container(&service.container);
    if container.is_none() && action == Lifecycle::Register {
        let names: Vec<_> = task.containers.iter().map(|c| c.name.as_str()).collect();
        return Err(crate::event::shorten(format!(
            "container {:?} is not part of the task (it has {names:?}); check \"container\" in the mapping",
            service.container
        )));
    }

    if let Some(address) = task.ipv4() {
        return match address.parse::<Ipv4Addr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_broadcast() => Ok(Target {
                id: ip.to_string(),
                port: service.container_port,
            }),
            // The address comes from the task's data, which has no length limit here.
            _ => Err(crate::event::shorten(format!(
                "task address {address:?} is not a usable IPv4 address"
            ))),
        };
    }

    let Some(instance_arn) = task.container_instance_arn.as_deref() else {
        return Err("the task has no IP address yet and no container instance".to_owned());
    };
    let Some(container) = container else {
        return Err(format!(
            "container {:?} is not listed, so its host port is unknown",
            service.container
        ));
    };
    let Some(host_port) = container.host_port(service.container_port) else {
        return Err(format!(
            "container {:?} publishes no host port for container port {}",
            service.container, service.container_port
        ));
    };
    match instance_id {
        Some(id) => Ok(Target {
            id: id.to_owned(),
            port: host_port,
        }),
        None => Err(format!(
            "container instance {instance_arn} has no EC2 instance id (ECS Anywhere instances \
             cannot be load balancer targets by instance id)"
        )),
    }
}

/// Removes from a deregistration plan every IP target that is now another task's target,
/// according to `in_use` (target to task ARN). ECS gives a stopped task's address back to the
/// subnet, where a new task can get it. A stop event delivered late, or replayed from the
/// dead-letter queue, must not remove that new task's target. A target at the same address on
/// another port is not the new task's target, so it is removed.
pub fn keep_reused_addresses(mut plan: Plan, in_use: &HashMap<Target, String>) -> Plan {
    let (kept, reused): (Vec<_>, Vec<_>) = plan
        .placements
        .into_iter()
        .partition(|placement| !in_use.contains_key(&placement.target));
    plan.placements = kept;
    for placement in reused {
        let owner = in_use.get(&placement.target).map_or("", String::as_str);
        plan.unplaced.push(Unplaced {
            service: placement.service,
            reason: format!(
                "target {} now belongs to running task {owner}; it is left in place",
                placement.target
            ),
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterRef;
    use crate::task::{Container, PortBinding};

    const LAST: &[&str] = &[
        "PROVISIONING",
        "PENDING",
        "ACTIVATING",
        "RUNNING",
        "DEACTIVATING",
        "STOPPING",
        "DEPROVISIONING",
        "STOPPED",
        "SOMETHING_NEW",
    ];
    const DESIRED: &[&str] = &["RUNNING", "PENDING", "STOPPED", "SOMETHING_NEW"];

    fn expected(last: &str, desired: &str) -> Lifecycle {
        use Lifecycle::*;
        match (last, desired) {
            (_, "STOPPED") => Deregister,
            ("DEACTIVATING" | "STOPPING" | "DEPROVISIONING" | "STOPPED", _) => Deregister,
            ("RUNNING", "RUNNING") => Register,
            _ => Wait,
        }
    }

    #[test]
    fn lifecycle_table_covers_every_pair() {
        for last in LAST {
            for desired in DESIRED {
                assert_eq!(
                    lifecycle(last, desired),
                    expected(last, desired),
                    "lastStatus {last}, desiredStatus {desired}"
                );
            }
        }
    }

    #[test]
    fn lifecycle_named_cases() {
        assert_eq!(lifecycle("PROVISIONING", "RUNNING"), Lifecycle::Wait);
        assert_eq!(lifecycle("PENDING", "RUNNING"), Lifecycle::Wait);
        assert_eq!(lifecycle("ACTIVATING", "RUNNING"), Lifecycle::Wait);
        assert_eq!(lifecycle("RUNNING", "RUNNING"), Lifecycle::Register);
        assert_eq!(lifecycle("RUNNING", "STOPPED"), Lifecycle::Deregister);
        assert_eq!(lifecycle("STOPPED", "STOPPED"), Lifecycle::Deregister);
        assert_eq!(lifecycle("PENDING", "STOPPED"), Lifecycle::Deregister);
        assert_eq!(lifecycle("running", "running"), Lifecycle::Wait);
    }

    fn service(name: &str, container: &str, port: u16, groups: &[&str]) -> ServiceMapping {
        ServiceMapping {
            name: name.into(),
            cluster: ClusterRef::Name("c".into()),
            family: Some("f".into()),
            group: None,
            container: container.into(),
            container_port: port,
            target_groups: groups
                .iter()
                .map(|g| TargetGroupRef::Name((*g).into()))
                .collect(),
        }
    }

    fn awsvpc_task(ip: &str) -> Task {
        Task {
            eni_ipv4: Some(ip.into()),
            containers: vec![
                Container {
                    name: "app".into(),
                    ..Container::default()
                },
                Container {
                    name: "admin".into(),
                    ..Container::default()
                },
            ],
            ..Task::default()
        }
    }

    fn bridge_task() -> Task {
        Task {
            container_instance_arn: Some(
                "arn:aws:ecs:us-east-1:123456789012:container-instance/c/abc".into(),
            ),
            containers: vec![Container {
                name: "nginx".into(),
                ipv4: None,
                bindings: vec![
                    PortBinding {
                        container_port: 80,
                        host_port: 49153,
                    },
                    PortBinding {
                        container_port: 80,
                        host_port: 49153,
                    },
                ],
            }],
            ..Task::default()
        }
    }

    #[test]
    fn awsvpc_task_targets_ip_on_container_port() {
        let app = service("app", "app", 8080, &["tg-a", "tg-b"]);
        let admin = service("app-admin", "admin", 9080, &["tg-admin"]);
        let plan = plan(
            &awsvpc_task("10.0.1.5"),
            &[&app, &admin],
            None,
            Lifecycle::Register,
        );
        assert!(plan.unplaced.is_empty(), "{plan:?}");
        assert_eq!(plan.placements.len(), 2);
        assert_eq!(
            plan.placements[0].target,
            Target {
                id: "10.0.1.5".into(),
                port: 8080
            }
        );
        assert_eq!(plan.placements[0].target_groups.len(), 2);
        assert_eq!(
            plan.placements[1].target,
            Target {
                id: "10.0.1.5".into(),
                port: 9080
            }
        );
    }

    #[test]
    fn missing_container_blocks_registration_only() {
        let other = service("other", "worker", 8080, &["tg"]);
        let task = awsvpc_task("10.0.1.5");
        let register = plan(&task, &[&other], None, Lifecycle::Register);
        assert!(register.placements.is_empty());
        assert!(
            register.unplaced[0]
                .reason
                .contains("\"worker\" is not part of the task")
        );
        let deregister = plan(&task, &[&other], None, Lifecycle::Deregister);
        assert_eq!(deregister.placements.len(), 1);
    }

    #[test]
    fn garbage_address_is_not_a_target() {
        let app = service("app", "app", 8080, &["tg"]);
        for address in [
            "10.0.0",
            "0.0.0.0",
            "255.255.255.255",
            "example.com",
            "10.0.0.1:80",
        ] {
            let plan = plan(&awsvpc_task(address), &[&app], None, Lifecycle::Register);
            assert!(plan.placements.is_empty(), "{address} was accepted");
            assert!(
                plan.unplaced[0].reason.contains("not a usable IPv4"),
                "{address}"
            );
        }
    }

    #[test]
    fn bridge_task_targets_instance_on_host_port() {
        let web = service("web", "nginx", 80, &["tg"]);
        let task = bridge_task();
        assert!(needs_instance_id(&task));
        let plan = plan(&task, &[&web], Some("i-0abc"), Lifecycle::Register);
        assert_eq!(
            plan.placements[0].target,
            Target {
                id: "i-0abc".into(),
                port: 49153
            }
        );
    }

    #[test]
    fn bridge_task_without_host_port_or_instance() {
        let wrong_port = service("web", "nginx", 8080, &["tg"]);
        let plan_port = plan(
            &bridge_task(),
            &[&wrong_port],
            Some("i-0abc"),
            Lifecycle::Register,
        );
        assert!(
            plan_port.unplaced[0]
                .reason
                .contains("no host port for container port 8080")
        );
        let web = service("web", "nginx", 80, &["tg"]);
        let plan_external = plan(&bridge_task(), &[&web], None, Lifecycle::Register);
        assert!(
            plan_external.unplaced[0]
                .reason
                .contains("no EC2 instance id")
        );
    }

    #[test]
    fn reused_address_is_kept_registered() {
        let app = service("app", "app", 8080, &["tg"]);
        let admin = service("app-admin", "admin", 9080, &["tg-admin"]);
        let plan = plan(
            &awsvpc_task("10.0.1.5"),
            &[&app, &admin],
            None,
            Lifecycle::Deregister,
        );
        let target = |id: &str, port| Target {
            id: id.to_owned(),
            port,
        };
        let in_use = HashMap::from([
            (target("10.0.1.5", 8080), "arn:task/new".to_owned()),
            (target("10.0.1.5", 9080), "arn:task/new".to_owned()),
        ]);
        let kept = keep_reused_addresses(plan.clone(), &in_use);
        assert!(kept.placements.is_empty());
        assert_eq!(kept.unplaced.len(), 2);
        assert!(
            kept.unplaced[0]
                .reason
                .contains("belongs to running task arn:task/new")
        );
        let elsewhere = HashMap::from([(target("10.0.9.9", 8080), "arn:task/other".to_owned())]);
        assert_eq!(keep_reused_addresses(plan.clone(), &elsewhere), plan);
    }

    #[test]
    fn reused_address_on_another_port_is_removed() {
        let app = service("app", "app", 8080, &["tg"]);
        let plan = plan(
            &awsvpc_task("10.0.1.5"),
            &[&app],
            None,
            Lifecycle::Deregister,
        );
        let other_service = Target {
            id: "10.0.1.5".to_owned(),
            port: 9090,
        };
        let in_use = HashMap::from([(other_service, "arn:task/api".to_owned())]);
        let kept = keep_reused_addresses(plan.clone(), &in_use);
        assert_eq!(kept.placements, plan.placements);
        assert!(kept.unplaced.is_empty());
    }

    #[test]
    fn task_without_any_address_is_unplaced() {
        let app = service("app", "app", 8080, &["tg"]);
        let task = Task {
            containers: vec![Container {
                name: "app".into(),
                ..Container::default()
            }],
            ..Task::default()
        };
        assert!(!needs_instance_id(&task));
        let plan = plan(&task, &[&app], None, Lifecycle::Register);
        assert!(plan.unplaced[0].reason.contains("no IP address yet"));
    }
}
