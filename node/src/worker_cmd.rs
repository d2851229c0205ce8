//! `sundial worker --exec CMD`: runs a shell command for each job.

use std::process::Stdio;
use std::sync::Arc;

use sundial_sdk::{proto, JobFailure, Worker};
use tokio::io::AsyncWriteExt;

use crate::cli::{ClientArgs, WorkerArgs};
use crate::commands::CliError;

/// Most bytes of stderr kept as a failed job's error.
const MAX_ERROR_EXCERPT: usize = 2048;

pub async fn run(client: ClientArgs, args: WorkerArgs) -> Result<(), CliError> {
    if args.exec.trim().is_empty() {
        return Err(CliError::usage("--exec: the command is empty"));
    }
    if args.concurrency == 0 {
        return Err(CliError::usage("--concurrency: must be at least 1"));
    }
    let exec = Arc::new(args.exec);
    let mut worker = Worker::new(client.addr)
        .namespace(args.namespace)
        .concurrency(args.concurrency)
        .prefetch(args.prefetch);
    for queue in args.queue {
        worker = worker.queue(queue);
    }
    if let Some(id) = args.id {
        worker = worker.id(id);
    }
    // SIGINT or SIGTERM: jobs not started yet go back at once (their attempt
    // not counted), running commands finish and are recorded, then exit.
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    worker
        .run_until(
            move |job| {
                let exec = exec.clone();
                async move { run_command(&exec, job).await }
            },
            shutdown,
        )
        .await?;
    Ok(())
}

/// Runs `exec` for one job. The child is killed if the job is cancelled
/// (the future is dropped).
async fn run_command(exec: &str, job: proto::Job) -> Result<Vec<u8>, JobFailure> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(exec)
        .env("SUNDIAL_JOB_ID", &job.id)
        .env("SUNDIAL_ATTEMPT", job.attempts.to_string())
        .env("SUNDIAL_QUEUE", &job.queue)
        .env("SUNDIAL_NAMESPACE", &job.namespace)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| JobFailure::retry(format!("cannot start sh -c {exec:?}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let payload = job.payload.clone();
        // Ends when the payload is written or the child closes its stdin.
        tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| JobFailure::retry(format!("waiting for the command: {e}")))?;
    if output.status.success() {
        eprintln!("job {} attempt {}: done", job.id, job.attempts);
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut excerpt: String = stderr.trim().chars().take(MAX_ERROR_EXCERPT).collect();
    if excerpt.is_empty() {
        excerpt = "(no stderr)".into();
    }
    let status = match output.status.code() {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    };
    eprintln!("job {} attempt {}: failed, {status}", job.id, job.attempts);
    Err(JobFailure::retry(format!("{status}: {excerpt}")))
}
