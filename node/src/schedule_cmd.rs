//! `sundial schedule ...`: create and manage recurring schedules.

use sundial_sdk::proto;

use crate::cli::{ClientArgs, Output, ScheduleCommand, ScheduleSpecArgs};
use crate::commands::{connect, read_payload, time_text, CliError};

pub async fn run(args: ClientArgs, command: ScheduleCommand) -> Result<(), CliError> {
    match command {
        ScheduleCommand::Create(spec) => {
            let spec = build_spec(spec)?;
            let mut client = connect(&args).await?;
            let (schedule, created) = client.create_schedule(spec).await?;
            if !created {
                eprintln!("schedule already exists, left unchanged");
            }
            print(&schedule, args.output);
        }
        ScheduleCommand::Update(spec) => {
            let spec = build_spec(spec)?;
            let mut client = connect(&args).await?;
            print(&client.update_schedule(spec).await?, args.output);
        }
        ScheduleCommand::Get { id, namespace } => {
            let mut client = connect(&args).await?;
            print(&client.get_schedule(&namespace, &id).await?, args.output);
        }
        ScheduleCommand::Pause { id, namespace } => {
            let mut client = connect(&args).await?;
            print(&client.pause_schedule(&namespace, &id).await?, args.output);
        }
        ScheduleCommand::Resume { id, namespace } => {
            let mut client = connect(&args).await?;
            print(&client.resume_schedule(&namespace, &id).await?, args.output);
        }
        ScheduleCommand::Delete { id, namespace } => {
            let mut client = connect(&args).await?;
            let gone = client.delete_schedule(&namespace, &id).await?;
            if args.output == Output::Json {
                println!("{}", json(&gone));
            } else {
                println!("deleted {}", id);
            }
        }
        ScheduleCommand::List {
            namespace,
            limit,
            page_token,
        } => {
            let mut client = connect(&args).await?;
            let page = client.list_schedules(&namespace, limit, &page_token).await?;
            match args.output {
                Output::Json => {
                    let all: Vec<_> = page.schedules.iter().map(json).collect();
                    println!(
                        "{}",
                        serde_json::json!({"schedules": all, "next_page_token": page.next_page_token})
                    );
                }
                Output::Table => {
                    println!(
                        "{:<24}  {:<28}  {:<16}  {:<24}  {:>6}  PAUSED",
                        "ID", "RULE", "QUEUE", "NEXT FIRE", "FIRED"
                    );
                    for s in &page.schedules {
                        let spec = s.spec.clone().unwrap_or_default();
                        println!(
                            "{:<24}  {:<28}  {:<16}  {:<24}  {:>6}  {}",
                            spec.id,
                            rule_text(&spec),
                            spec.queue,
                            next_text(s),
                            s.fired,
                            if s.paused { "yes" } else { "no" }
                        );
                    }
                    if !page.next_page_token.is_empty() {
                        eprintln!("more: --page-token {}", page.next_page_token);
                    }
                }
            }
        }
    }
    Ok(())
}

fn build_spec(a: ScheduleSpecArgs) -> Result<proto::ScheduleSpec, CliError> {
    let rule = match (a.cron, a.every) {
        (Some(expr), None) => proto::schedule_spec::Rule::Cron(proto::CronRule {
            expr,
            time_zone: a.tz.unwrap_or_default(),
        }),
        (None, Some(every)) => proto::schedule_spec::Rule::EveryMs(every.as_millis() as u64),
        _ => return Err(CliError::usage("give exactly one of --cron and --every")),
    };
    let catch_up = match a.catch_up.as_str() {
        "skip" => proto::CatchUp::Skip,
        "one" => proto::CatchUp::One,
        "all" => proto::CatchUp::All,
        other => {
            return Err(CliError::usage(format!(
                "--catch-up {other:?}: expected skip, one or all"
            )))
        }
    };
    let overlap = match a.overlap.as_str() {
        "allow" => proto::Overlap::Allow,
        "skip" => proto::Overlap::Skip,
        "buffer-one" | "buffer_one" => proto::Overlap::BufferOne,
        other => {
            return Err(CliError::usage(format!(
                "--overlap {other:?}: expected allow, skip or buffer-one"
            )))
        }
    };
    Ok(proto::ScheduleSpec {
        namespace: a.namespace,
        id: a.id,
        rule: Some(rule),
        queue: a.queue,
        payload: read_payload(&a.payload)?,
        headers: Default::default(),
        priority: a.priority,
        retry: a.max_attempts.map(|n| proto::RetryPolicy {
            max_attempts: n,
            ..Default::default()
        }),
        timeout_ms: a.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
        catch_up: catch_up as i32,
        overlap: overlap as i32,
        jitter_ms: a.jitter.map(|j| j.as_millis() as u64).unwrap_or(0),
        http: crate::commands::http_target(a.http)?.map(|t| t.into_proto()),
    })
}

fn rule_text(spec: &proto::ScheduleSpec) -> String {
    match &spec.rule {
        Some(proto::schedule_spec::Rule::Cron(c)) => format!("cron '{}' {}", c.expr, c.time_zone),
        Some(proto::schedule_spec::Rule::EveryMs(ms)) => format!(
            "every {}",
            humantime::format_duration(std::time::Duration::from_millis(*ms))
        ),
        None => "-".into(),
    }
}

fn next_text(s: &proto::Schedule) -> String {
    if s.next_fire_ms == 0 {
        "-".into()
    } else {
        time_text(s.next_fire_ms)
    }
}

fn json(s: &proto::Schedule) -> serde_json::Value {
    let spec = s.spec.clone().unwrap_or_default();
    serde_json::json!({
        "namespace": spec.namespace,
        "id": spec.id,
        "rule": rule_text(&spec),
        "queue": spec.queue,
        "shard": s.shard,
        "paused": s.paused,
        "next_fire": next_text(s),
        "last_fire": if s.last_fire_ms == 0 { None } else { Some(time_text(s.last_fire_ms)) },
        "last_job_id": s.last_job_id,
        "fired": s.fired,
        "skipped": s.skipped,
        "buffered": s.buffered,
        "catch_up": proto::CatchUp::try_from(s.spec.as_ref().map(|x| x.catch_up).unwrap_or(0)).map(|c| c.as_str_name()).unwrap_or("?"),
        "overlap": proto::Overlap::try_from(s.spec.as_ref().map(|x| x.overlap).unwrap_or(0)).map(|c| c.as_str_name()).unwrap_or("?"),
    })
}

fn print(s: &proto::Schedule, output: Output) {
    match output {
        Output::Json => println!("{}", json(s)),
        Output::Table => {
            let spec = s.spec.clone().unwrap_or_default();
            println!("id:         {}", spec.id);
            println!("namespace:  {}", spec.namespace);
            println!("rule:       {}", rule_text(&spec));
            println!("queue:      {}", spec.queue);
            println!("shard:      {}", s.shard);
            println!("paused:     {}", if s.paused { "yes" } else { "no" });
            println!("next fire:  {}", next_text(s));
            if s.last_fire_ms != 0 {
                println!("last fire:  {}", time_text(s.last_fire_ms));
                println!("last job:   {}", s.last_job_id);
            }
            println!("fired:      {} (skipped {})", s.fired, s.skipped);
        }
    }
}
