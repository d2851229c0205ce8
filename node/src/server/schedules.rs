//! `ScheduleService`: validates schedule definitions and hands them to the
//! gateway, which routes each to the shard its namespace and id map to.

use std::sync::Arc;

use sundial_actors::GatewayHandle;
use sundial_proto::v1 as pb;
use sundial_proto::v1::schedule_service_server::ScheduleService;
use sundial_raft::schedule::{CatchUp, JobTemplate, Overlap, Rule, Schedule};
use sundial_raft::types::Op;
use tonic::{Request, Response, Status};

use super::jobs::{
    check_headers, check_name, deadline, http_target, http_to_proto, namespace_or_default, now_ms, page_size,
    retry_policy, timeout_ms,
};
use super::status::{from_gateway, invalid};
use crate::config::NodeConfig;

/// Shortest interval of an `every` rule.
const MIN_INTERVAL_MS: u64 = 1_000;
/// Largest jitter.
const MAX_JITTER_MS: u64 = 24 * 3600 * 1000;

pub struct ScheduleApi {
    cfg: Arc<NodeConfig>,
    gateway: GatewayHandle,
}

impl ScheduleApi {
    pub fn new(cfg: Arc<NodeConfig>, gateway: GatewayHandle) -> ScheduleApi {
        ScheduleApi { cfg, gateway }
    }

    /// Turns a spec into a schedule that first fires after `now`, or says
    /// precisely what is wrong.
    fn build(&self, spec: Option<pb::ScheduleSpec>) -> Result<Schedule, Status> {
        let spec = spec.ok_or_else(|| invalid("spec", "is required"))?;
        let namespace = namespace_or_default(&spec.namespace)?;
        check_name("id", &spec.id)?;
        check_name("queue", &spec.queue)?;
        let limit = self.cfg.limits.max_payload_bytes;
        if spec.payload.len() > limit {
            return Err(invalid(
                "payload",
                format!("is {} bytes, the limit is {limit} bytes", spec.payload.len()),
            ));
        }
        check_headers(&spec.headers)?;
        let rule = match spec.rule {
            Some(pb::schedule_spec::Rule::Cron(c)) => Rule::Cron {
                expr: c.expr,
                zone: if c.time_zone.is_empty() {
                    "UTC".into()
                } else {
                    c.time_zone
                },
            },
            Some(pb::schedule_spec::Rule::EveryMs(ms)) if ms < MIN_INTERVAL_MS => {
                return Err(invalid(
                    "every_ms",
                    format!("{ms} ms is below the minimum of {MIN_INTERVAL_MS} ms"),
                ))
            }
            Some(pb::schedule_spec::Rule::EveryMs(ms)) => Rule::Every { interval_ms: ms },
            None => return Err(invalid("rule", "set either cron or every_ms")),
        };
        rule.validate().map_err(|e| invalid("rule", e))?;
        if spec.jitter_ms > MAX_JITTER_MS {
            return Err(invalid(
                "jitter_ms",
                format!(
                    "{} ms is over the limit of {MAX_JITTER_MS} ms (24 h)",
                    spec.jitter_ms
                ),
            ));
        }
        let catch_up = match pb::CatchUp::try_from(spec.catch_up) {
            Ok(pb::CatchUp::Unspecified | pb::CatchUp::One) => CatchUp::One,
            Ok(pb::CatchUp::Skip) => CatchUp::Skip,
            Ok(pb::CatchUp::All) => CatchUp::All,
            Err(_) => {
                return Err(invalid(
                    "catch_up",
                    format!("{} is not a catch-up policy", spec.catch_up),
                ))
            }
        };
        let overlap = match pb::Overlap::try_from(spec.overlap) {
            Ok(pb::Overlap::Unspecified | pb::Overlap::Allow) => Overlap::Allow,
            Ok(pb::Overlap::Skip) => Overlap::Skip,
            Ok(pb::Overlap::BufferOne) => Overlap::BufferOne,
            Err(_) => {
                return Err(invalid(
                    "overlap",
                    format!("{} is not an overlap policy", spec.overlap),
                ))
            }
        };
        let now = now_ms();
        let anchor = match &rule {
            Rule::Every { interval_ms } => now.saturating_add(*interval_ms as i64),
            Rule::Cron { .. } => now,
        };
        let next_fire_ms = rule.next_after(now, anchor).map_err(|e| invalid("rule", e))?;
        Ok(Schedule {
            namespace,
            id: spec.id,
            rule,
            template: JobTemplate {
                queue: spec.queue,
                payload: spec.payload,
                headers: spec.headers.into_iter().collect(),
                priority: spec.priority,
                retry: retry_policy(spec.retry)?,
                timeout_ms: timeout_ms(spec.timeout_ms)?,
                http: http_target(&self.cfg, spec.http)?,
            },
            catch_up,
            overlap,
            jitter_ms: spec.jitter_ms,
            paused: false,
            next_fire_ms,
            last_fire_ms: None,
            last_job: None,
            buffered: None,
            fired: 0,
            skipped: 0,
            created_at_ms: now,
            updated_at_ms: now,
        })
    }

    /// Writes a schedule op; `create` says the caller asked for a create
    /// (the response then tells whether it created).
    async fn write(
        &self,
        namespace: &str,
        id: &str,
        op: Op,
        deadline: std::time::Instant,
        create: bool,
    ) -> ScheduleResult {
        let (schedule, created) = self
            .gateway
            .schedule_op(namespace, id, op, deadline)
            .await
            .map_err(from_gateway)?;
        Ok(respond(&self.gateway, schedule, create && created))
    }

    fn reference(&self, r: pb::ScheduleRef) -> Result<(String, String), Status> {
        let namespace = namespace_or_default(&r.namespace)?;
        check_name("id", &r.id)?;
        Ok((namespace, r.id))
    }

    async fn put(&self, request: Request<pb::CreateScheduleRequest>, create: bool) -> ScheduleResult {
        let deadline = deadline(&self.cfg, &request);
        let schedule = self.build(request.into_inner().spec)?;
        let (namespace, id) = (schedule.namespace.clone(), schedule.id.clone());
        let op = Op::PutSchedule {
            schedule: Box::new(schedule),
            create,
        };
        self.write(&namespace, &id, op, deadline, create).await
    }

    async fn pause(&self, request: Request<pb::ScheduleRef>, paused: bool) -> ScheduleResult {
        let deadline = deadline(&self.cfg, &request);
        let (namespace, id) = self.reference(request.into_inner())?;
        let op = Op::PauseSchedule {
            namespace: namespace.clone(),
            id: id.clone(),
            paused,
            at_ms: now_ms(),
        };
        self.write(&namespace, &id, op, deadline, false).await
    }
}

type ScheduleResult = Result<Response<pb::ScheduleResponse>, Status>;

fn respond(gateway: &GatewayHandle, schedule: Schedule, created: bool) -> Response<pb::ScheduleResponse> {
    Response::new(pb::ScheduleResponse {
        schedule: Some(schedule_to_proto(gateway, schedule)),
        created,
    })
}

pub fn schedule_to_proto(gateway: &GatewayHandle, s: Schedule) -> pb::Schedule {
    let shard = gateway.schedule_shard(&s.namespace, &s.id);
    let rule = match s.rule {
        Rule::Cron { expr, zone } => pb::schedule_spec::Rule::Cron(pb::CronRule {
            expr,
            time_zone: zone,
        }),
        Rule::Every { interval_ms } => pb::schedule_spec::Rule::EveryMs(interval_ms),
    };
    let t = s.template;
    pb::Schedule {
        spec: Some(pb::ScheduleSpec {
            namespace: s.namespace,
            id: s.id,
            rule: Some(rule),
            queue: t.queue,
            payload: t.payload,
            headers: t.headers.into_iter().collect(),
            priority: t.priority,
            retry: Some(pb::RetryPolicy {
                max_attempts: t.retry.max_attempts,
                initial_backoff_ms: t.retry.initial_backoff_ms,
                max_backoff_ms: t.retry.max_backoff_ms,
            }),
            timeout_ms: t.timeout_ms,
            catch_up: match s.catch_up {
                CatchUp::Skip => pb::CatchUp::Skip,
                CatchUp::One => pb::CatchUp::One,
                CatchUp::All => pb::CatchUp::All,
            } as i32,
            overlap: match s.overlap {
                Overlap::Allow => pb::Overlap::Allow,
                Overlap::Skip => pb::Overlap::Skip,
                Overlap::BufferOne => pb::Overlap::BufferOne,
            } as i32,
            jitter_ms: s.jitter_ms,
            http: t.http.map(http_to_proto),
        }),
        shard,
        paused: s.paused,
        next_fire_ms: s.next_fire_ms.unwrap_or(0),
        last_fire_ms: s.last_fire_ms.unwrap_or(0),
        last_job_id: s.last_job.map(|id| id.to_string()).unwrap_or_default(),
        buffered: s.buffered.is_some(),
        fired: s.fired,
        skipped: s.skipped,
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.updated_at_ms,
    }
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    async fn create_schedule(&self, request: Request<pb::CreateScheduleRequest>) -> ScheduleResult {
        self.put(request, true).await
    }

    async fn update_schedule(&self, request: Request<pb::CreateScheduleRequest>) -> ScheduleResult {
        self.put(request, false).await
    }

    async fn get_schedule(&self, request: Request<pb::ScheduleRef>) -> ScheduleResult {
        let deadline = deadline(&self.cfg, &request);
        let (namespace, id) = self.reference(request.into_inner())?;
        let schedule = self
            .gateway
            .get_schedule(&namespace, &id, deadline)
            .await
            .map_err(from_gateway)?;
        Ok(respond(&self.gateway, schedule, false))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let deadline = deadline(&self.cfg, &request);
        let req = request.into_inner();
        let namespace = namespace_or_default(&req.namespace)?;
        let page_size = page_size(req.page_size)?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            let bad = || invalid("page_token", format!("{:?} is not a page token", req.page_token));
            let (shard, id) = req.page_token.split_once('/').ok_or_else(bad)?;
            let shard: u32 = shard.parse().map_err(|_| bad())?;
            if shard >= self.gateway.layout().shard_count {
                return Err(bad());
            }
            Some((shard, id.to_string()))
        };
        let (page, next) = self
            .gateway
            .list_schedules(&namespace, after, page_size, deadline)
            .await
            .map_err(from_gateway)?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: page
                .into_iter()
                .map(|s| schedule_to_proto(&self.gateway, s))
                .collect(),
            next_page_token: next
                .map(|(shard, id)| format!("{shard}/{id}"))
                .unwrap_or_default(),
        }))
    }

    async fn pause_schedule(&self, request: Request<pb::ScheduleRef>) -> ScheduleResult {
        self.pause(request, true).await
    }

    async fn resume_schedule(&self, request: Request<pb::ScheduleRef>) -> ScheduleResult {
        self.pause(request, false).await
    }

    async fn delete_schedule(&self, request: Request<pb::ScheduleRef>) -> ScheduleResult {
        let deadline = deadline(&self.cfg, &request);
        let (namespace, id) = self.reference(request.into_inner())?;
        let op = Op::DeleteSchedule {
            namespace: namespace.clone(),
            id: id.clone(),
        };
        self.write(&namespace, &id, op, deadline, false).await
    }
}
