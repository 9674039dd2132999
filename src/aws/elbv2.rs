//! [`LoadBalancing`] on the SDK's Elastic Load Balancing v2 client.

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

use super::{ApiError, LoadBalancing, api_error};
use crate::decision::Target;

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
            .map_err(api_error)?;
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
            .map_err(api_error)?;
        Ok(())
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
                let err = api_error(err);
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
