//! `volley.v1.PlanService` over [`Coordinator`]: a batch as planned, its
//! args masked, for `volley export`.

use tonic::{Request, Response, Status};
use volley_proto::v1;
use volley_proto::v1::plan_service_server::PlanService;

use super::auth::principal;
use super::batch::batch_id;
use crate::service::Coordinator;

pub(crate) struct PlanAdapter {
    coordinator: Coordinator,
}

impl PlanAdapter {
    pub(crate) fn new(coordinator: Coordinator) -> Self {
        PlanAdapter { coordinator }
    }
}

#[tonic::async_trait]
impl PlanService for PlanAdapter {
    #[tracing::instrument(name = "plan.GetBatchPlan", skip_all)]
    async fn get_batch_plan(
        &self,
        request: Request<v1::GetBatchPlanRequest>,
    ) -> Result<Response<v1::BatchPlanPage>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let page = self
            .coordinator
            .plan_page(
                &batch_id(request.batch_id)?,
                request.ops_offset,
                request.ops_limit,
                &principal,
            )
            .await?;
        Ok(Response::new(v1::BatchPlanPage {
            namespace: page.namespace.unwrap_or_default(),
            total: page.total,
            args_json: page.args.iter().map(ToString::to_string).collect(),
        }))
    }
}
