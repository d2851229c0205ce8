//! The one place where Sundial errors become gRPC statuses.

use sundial_actors::Error;
use tonic::Status;

pub fn from_gateway(e: Error) -> Status {
    match e {
        Error::JobNotFound(id) => Status::not_found(format!("job {id} not found")),
        Error::ScheduleNotFound(id) => Status::not_found(format!("schedule {id} not found")),
        Error::AlreadyFinished { id, state } => {
            Status::failed_precondition(format!("job {id} already finished as {state}"))
        }
        e @ (Error::StaleLease { .. } | Error::NotDead { .. }) => Status::failed_precondition(e.to_string()),
        // Retryable: the cluster had no reachable leader for the shard within
        // the deadline (an election that outlasted it, or a lost quorum).
        Error::DeadlineExceeded { shard, last } => {
            Status::unavailable(format!("shard {shard} unavailable before the deadline: {last}"))
        }
        Error::Internal(e) => Status::internal(e),
    }
}

pub fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
}
