//! [`Ecs`] on the SDK's ECS client, and the conversion of its task type into [`Task`].

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types as sdk;
use aws_sdk_ecs::types::DesiredStatus;

use super::{ApiError, Ecs, TaskLookup, api_error};
use crate::event::is_eni_attachment;
use crate::task::{Container, PortBinding, Task, task_id};

impl Ecs for Client {
    async fn describe_task(&self, cluster: &str, task_arn: &str) -> Result<TaskLookup, ApiError> {
        let output = self
            .describe_tasks()
            .cluster(cluster)
            .tasks(task_arn)
            .send()
            .await
            .map_err(api_error)?;
        // Compare task ids, not whole ARNs: one task has an old (`task/ID`) and a new
        // (`task/CLUSTER/ID`) ARN format, and the caller may hold either.
        let wanted = task_id(task_arn);
        if let Some(task) = output
            .tasks()
            .iter()
            .find(|task| task.task_arn().map(task_id) == Some(wanted))
        {
            return Ok(TaskLookup::Found(Box::new(task_from_sdk(task))));
        }
        let reason = output
            .failures()
            .iter()
            .find_map(|failure| failure.reason())
            .unwrap_or("DescribeTasks returned neither the task nor a failure")
            .to_owned();
        Ok(TaskLookup::Missing { reason })
    }

    async fn running_tasks(&self, cluster: &str) -> Result<Vec<Task>, ApiError> {
        self.tasks_with_desired_status(cluster, DesiredStatus::Running)
            .await
    }

    async fn stopped_tasks(&self, cluster: &str) -> Result<Vec<Task>, ApiError> {
        self.tasks_with_desired_status(cluster, DesiredStatus::Stopped)
            .await
    }

    async fn ec2_instance_id(
        &self,
        cluster: &str,
        container_instance_arn: &str,
    ) -> Result<Option<String>, ApiError> {
        let output = self
            .describe_container_instances()
            .cluster(cluster)
            .container_instances(container_instance_arn)
            .send()
            .await
            .map_err(api_error)?;
        Ok(output
            .container_instances()
            .iter()
            .find_map(|instance| instance.ec2_instance_id())
            .map(str::to_owned))
    }
}

/// Lists a cluster's tasks with one desired status, every page, and describes them in batches.
trait ListDescribed {
    async fn tasks_with_desired_status(
        &self,
        cluster: &str,
        desired: DesiredStatus,
    ) -> Result<Vec<Task>, ApiError>;
}

impl ListDescribed for Client {
    async fn tasks_with_desired_status(
        &self,
        cluster: &str,
        desired: DesiredStatus,
    ) -> Result<Vec<Task>, ApiError> {
        let mut arns = Vec::new();
        let mut pages = self
            .list_tasks()
            .cluster(cluster)
            .desired_status(desired)
            .max_results(LIST_TASKS_PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            arns.extend(page.map_err(api_error)?.task_arns().iter().cloned());
        }

        let mut tasks = Vec::with_capacity(arns.len());
        for batch in arns.chunks(DESCRIBE_TASKS_LIMIT) {
            let output = self
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .map_err(api_error)?;
            tasks.extend(output.tasks().iter().map(task_from_sdk));
        }
        Ok(tasks)
    }
}

/// Task ARNs per ListTasks page: ECS's maximum, asked for explicitly so each page fills one
/// DescribeTasks batch.
const LIST_TASKS_PAGE: i32 = 100;

/// The maximum number of tasks one DescribeTasks call accepts.
const DESCRIBE_TASKS_LIMIT: usize = 100;

/// Converts a DescribeTasks task. ECS's `version` starts at 1, so the SDK's 0 for a missing
/// value becomes `None`.
fn task_from_sdk(task: &sdk::Task) -> Task {
    let eni_ipv4 = task
        .attachments()
        .iter()
        .filter(|attachment| is_eni_attachment(attachment.r#type()))
        .find_map(|attachment| {
            attachment
                .details()
                .iter()
                .find(|pair| pair.name() == Some("privateIPv4Address"))
                .and_then(|pair| pair.value())
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        });
    Task {
        task_arn: task.task_arn().unwrap_or_default().to_owned(),
        cluster_arn: task.cluster_arn().unwrap_or_default().to_owned(),
        last_status: task.last_status().unwrap_or_default().to_owned(),
        desired_status: task.desired_status().unwrap_or_default().to_owned(),
        version: Some(task.version()).filter(|version| *version > 0),
        task_definition_arn: task.task_definition_arn().map(str::to_owned),
        group: task.group().map(str::to_owned),
        launch_type: task.launch_type().map(|launch| launch.as_str().to_owned()),
        container_instance_arn: task.container_instance_arn().map(str::to_owned),
        stop_code: task.stop_code().map(|code| code.as_str().to_owned()),
        stopped_reason: task.stopped_reason().map(str::to_owned),
        updated_at: None,
        eni_ipv4,
        containers: task
            .containers()
            .iter()
            .filter_map(container_from_sdk)
            .collect(),
    }
}

fn container_from_sdk(container: &sdk::Container) -> Option<Container> {
    let bindings = container
        .network_bindings()
        .iter()
        .filter_map(|binding| {
            Some(PortBinding {
                container_port: u16::try_from(binding.container_port()?).ok()?,
                host_port: u16::try_from(binding.host_port()?).ok()?,
            })
        })
        .collect();
    let ipv4 = container
        .network_interfaces()
        .iter()
        .find_map(|interface| interface.private_ipv4_address())
        .filter(|ip| !ip.is_empty())
        .map(str::to_owned);
    Some(Container {
        name: container.name()?.to_owned(),
        ipv4,
        bindings,
    })
}
