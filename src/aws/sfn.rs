//! [`Workflows`] on the SDK's Step Functions client.

use aws_sdk_sfn::Client;

use super::{ApiError, Started, Workflows, api_error};

impl Workflows for Client {
    async fn start_execution(
        &self,
        state_machine_arn: &str,
        name: &str,
        input: &str,
    ) -> Result<Started, ApiError> {
        let result = self
            .start_execution()
            .state_machine_arn(state_machine_arn)
            .name(name)
            .input(input)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Started::Execution {
                execution_arn: output.execution_arn().to_owned(),
            }),
            Err(err) => {
                let exists = err
                    .as_service_error()
                    .is_some_and(|e| e.is_execution_already_exists());
                let err = api_error(err).with_code("ExecutionAlreadyExists", exists);
                if err.is("ExecutionAlreadyExists") {
                    Ok(Started::AlreadyExists)
                } else {
                    Err(err)
                }
            }
        }
    }
}
