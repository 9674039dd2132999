//! The registrar's own view of an ECS task, built from an event or from DescribeTasks.
//!
//! Both sources are reduced to this one type so that the decision logic is written once and
//! never uses SDK or serde types.

/// An ECS task as far as target registration needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    /// The task ARN, old (`task/ID`) or new (`task/CLUSTER/ID`) format.
    pub task_arn: String,
    /// The ARN of the cluster the task runs in.
    pub cluster_arn: String,
    /// ECS's `lastStatus`: PROVISIONING through STOPPED.
    pub last_status: String,
    /// ECS's `desiredStatus`: RUNNING, PENDING or STOPPED.
    pub desired_status: String,
    /// The task's own change counter; a higher value is newer. Missing in some sources.
    pub version: Option<i64>,
    /// The task definition ARN, which carries the family.
    pub task_definition_arn: Option<String>,
    /// The task group: `service:NAME`, `family:NAME` or a custom string.
    pub group: Option<String>,
    /// FARGATE, EC2 or EXTERNAL; missing in old events.
    pub launch_type: Option<String>,
    /// The container instance, for tasks in bridge or host network mode.
    pub container_instance_arn: Option<String>,
    /// Why ECS stopped the task, once it is stopping.
    pub stop_code: Option<String>,
    /// ECS's free-text stop reason.
    pub stopped_reason: Option<String>,
    /// When ECS last changed the task, as an ISO-8601 string.
    pub updated_at: Option<String>,
    /// The private IPv4 address of the task's ENI (awsvpc network mode only).
    pub eni_ipv4: Option<String>,
    /// The task's containers.
    pub containers: Vec<Container>,
}

/// One container of a task.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    /// The container name from the task definition.
    pub name: String,
    /// The address ECS lists for the container's network interface, if any.
    pub ipv4: Option<String>,
    /// Port mappings in bridge and host network mode.
    pub bindings: Vec<PortBinding>,
}

/// A container port published on the container instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBinding {
    /// The port the application listens on inside the container.
    pub container_port: u16,
    /// The port on the host that maps to it.
    pub host_port: u16,
}

impl Task {
    /// Returns the task definition family, parsed from `task-definition/FAMILY:REVISION`.
    pub fn family(&self) -> Option<&str> {
        let arn = self.task_definition_arn.as_deref()?;
        let name = arn.rsplit_once(":task-definition/").map(|(_, rest)| rest)?;
        Some(name.split_once(':').map_or(name, |(family, _)| family))
    }

    /// Returns the task's IPv4 address: the ENI attachment's when present, since that is the
    /// authority when it and a container's interface disagree, otherwise the first container's.
    pub fn ipv4(&self) -> Option<&str> {
        self.eni_ipv4
            .as_deref()
            .or_else(|| self.containers.iter().find_map(|c| c.ipv4.as_deref()))
    }

    /// Returns the task id, the last part of the ARN. The same task has an old (`task/ID`) and
    /// a new (`task/CLUSTER/ID`) ARN format, so ids, not ARNs, say whether two tasks are one.
    pub fn id(&self) -> &str {
        task_id(&self.task_arn)
    }

    /// Whether ECS has released the task's network interface, so that its address may now
    /// belong to another task.
    pub fn address_released(&self) -> bool {
        matches!(self.last_status.as_str(), "DEPROVISIONING" | "STOPPED")
    }

    /// Finds a container by name.
    pub fn container(&self, name: &str) -> Option<&Container> {
        self.containers
            .iter()
            .find(|container| container.name == name)
    }
}

impl Container {
    /// Returns the host port published for `container_port`, in bridge or host network mode.
    /// ECS often lists each binding twice (IPv4 and IPv6); both carry the same host port.
    pub fn host_port(&self, container_port: u16) -> Option<u16> {
        self.bindings
            .iter()
            .find(|binding| binding.container_port == container_port)
            .map(|binding| binding.host_port)
    }
}

/// The parts of an ARN the registrar compares: partition, region, account and resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: &'a str,
    /// The service namespace, such as `ecs`.
    pub service: &'a str,
    /// The region, such as `us-east-1`.
    pub region: &'a str,
    /// The 12-digit account id.
    pub account: &'a str,
    /// Everything after the account, such as `cluster/NAME`.
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// Splits an ARN into its parts, or returns `None` when it has fewer than six fields.
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        Some(Arn {
            partition: parts.next()?,
            service: parts.next()?,
            region: parts.next()?,
            account: parts.next()?,
            resource: parts.next()?,
        })
    }
}

/// Returns the id of a task ARN: its last path segment.
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Returns the cluster name of a cluster ARN (`...:cluster/NAME`), or the input when it is a
/// bare name already.
pub fn cluster_name(cluster: &str) -> &str {
    match Arn::parse(cluster) {
        Some(arn) => arn
            .resource
            .strip_prefix("cluster/")
            .unwrap_or(arn.resource),
        None => cluster,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_with_definition(arn: &str) -> Task {
        Task {
            task_definition_arn: Some(arn.to_owned()),
            ..Task::default()
        }
    }

    #[test]
    fn family_comes_from_definition_arn() {
        let task =
            task_with_definition("arn:aws:ecs:us-east-1:123456789012:task-definition/auth-api:12");
        assert_eq!(task.family(), Some("auth-api"));
    }

    #[test]
    fn family_without_revision() {
        let task = task_with_definition("arn:aws:ecs:us-east-1:123456789012:task-definition/pdf");
        assert_eq!(task.family(), Some("pdf"));
    }

    #[test]
    fn family_missing_or_malformed() {
        assert_eq!(Task::default().family(), None);
        assert_eq!(task_with_definition("pdf:3").family(), None);
    }

    #[test]
    fn eni_address_wins_over_container_address() {
        let task = Task {
            eni_ipv4: Some("10.0.0.1".into()),
            containers: vec![Container {
                name: "app".into(),
                ipv4: Some("10.0.0.2".into()),
                bindings: vec![],
            }],
            ..Task::default()
        };
        assert_eq!(task.ipv4(), Some("10.0.0.1"));
    }

    #[test]
    fn container_address_is_the_fallback() {
        let task = Task {
            containers: vec![Container {
                name: "app".into(),
                ipv4: Some("10.0.0.2".into()),
                bindings: vec![],
            }],
            ..Task::default()
        };
        assert_eq!(task.ipv4(), Some("10.0.0.2"));
    }

    #[test]
    fn host_port_for_container_port() {
        let container = Container {
            name: "web".into(),
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
                PortBinding {
                    container_port: 9090,
                    host_port: 32768,
                },
            ],
        };
        assert_eq!(container.host_port(80), Some(49153));
        assert_eq!(container.host_port(9090), Some(32768));
        assert_eq!(container.host_port(8080), None);
    }

    #[test]
    fn arn_parts() {
        let arn = Arn::parse("arn:aws:ecs:eu-west-1:123456789012:cluster/web").expect("valid");
        assert_eq!(arn.service, "ecs");
        assert_eq!(arn.region, "eu-west-1");
        assert_eq!(arn.account, "123456789012");
        assert_eq!(arn.resource, "cluster/web");
        assert_eq!(Arn::parse("cluster/web"), None);
    }

    #[test]
    fn cluster_name_of_arn_and_name() {
        assert_eq!(
            cluster_name("arn:aws:ecs:us-east-1:123456789012:cluster/web"),
            "web"
        );
        assert_eq!(cluster_name("web"), "web");
    }
}
