//! [`LoadBalancing`] on the SDK's Elastic Load Balancing v2 client.

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

use super::{ApiError, LoadBalancing, api_error};
use crate::decision::Target;
use crate::health::Observation;

impl LoadBalancing for Client {
    async fn register_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<(), ApiError> {
        self.register_targets()
            .target_group_arn(target_group_arn)
            .set_targets(Some(descriptions(targets)))
            .send()
            .await
            .map_err(|err| {
                let missing = err
                    .as_service_error()
                    .is_some_and(|e| e.is_target_group_not_found_exception());
                api_error(err).with_code("TargetGroupNotFound", missing)
            })?;
        Ok(())
    }

    async fn deregister_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<(), ApiError> {
        self.deregister_targets()
            .target_group_arn(target_group_arn)
            .set_targets(Some(descriptions(targets)))
            .send()
            .await
            .map_err(|err| {
                let service = err.as_service_error();
                let missing = service.is_some_and(|e| e.is_target_group_not_found_exception());
                let invalid = service.is_some_and(|e| e.is_invalid_target_exception());
                api_error(err)
                    .with_code("TargetGroupNotFound", missing)
                    .with_code("InvalidTarget", invalid)
            })?;
        Ok(())
    }

    async fn describe_target_health(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<Vec<(Target, Observation)>, ApiError> {
        let output = self
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .set_targets((!targets.is_empty()).then(|| descriptions(targets)))
            .send()
            .await
            .map_err(|err| {
                let missing = err
                    .as_service_error()
                    .is_some_and(|e| e.is_target_group_not_found_exception());
                api_error(err).with_code("TargetGroupNotFound", missing)
            })?;
        Ok(output
            .target_health_descriptions()
            .iter()
            .filter_map(|description| {
                let target = description.target()?;
                let port = target.port().and_then(|port| u16::try_from(port).ok())?;
                let health = description.target_health();
                let observation = Observation {
                    state: health
                        .and_then(|h| h.state())
                        .map(|state| state.as_str().to_owned())
                        .unwrap_or_default(),
                    reason: health
                        .and_then(|h| h.reason())
                        .map(|reason| reason.as_str().to_owned()),
                    description: health.and_then(|h| h.description()).map(str::to_owned),
                };
                Some((
                    Target {
                        id: target.id()?.to_owned(),
                        port,
                    },
                    observation,
                ))
            })
            .collect())
    }

    async fn target_group_arn(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.describe_target_groups().names(name).send().await {
            Ok(output) => Ok(output
                .target_groups()
                .iter()
                .find(|group| group.target_group_name() == Some(name))
                .and_then(|group| group.target_group_arn())
                .map(str::to_owned)),
            Err(err) => {
                let missing = err
                    .as_service_error()
                    .is_some_and(|e| e.is_target_group_not_found_exception());
                let err = api_error(err).with_code("TargetGroupNotFound", missing);
                if err.is("TargetGroupNotFound") {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }
}

fn descriptions(targets: &[Target]) -> Vec<TargetDescription> {
    targets
        .iter()
        .map(|target| {
            TargetDescription::builder()
                .id(&target.id)
                .port(i32::from(target.port))
                .build()
        })
        .collect()
}
