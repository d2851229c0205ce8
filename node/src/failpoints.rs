//! Failpoints armed at run time, for fault injection by the chaos harness.
//!
//! Built with the `failpoints` feature, a node arms failpoints when it gets
//! SIGUSR1: it reads the file named by `SUNDIAL_FAILPOINTS_FILE`, one
//! `name=actions` per line in the `fail` crate's syntax (`shard-actor-write=
//! 1*panic` panics the next shard-actor write once; an empty action list
//! turns a point off). Without the feature there are no failpoints and
//! SIGUSR1 keeps its default meaning, so a harness must check
//! [`ENABLED`] (shown by `sundial build-info`) before it signals a node.

/// True when this binary was built with failpoints.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// The environment variable naming the failpoint file.
pub const FILE_ENV: &str = "SUNDIAL_FAILPOINTS_FILE";

/// Parses a failpoint file: `(name, actions)` per non-blank, non-`#` line.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| match line.split_once('=') {
            Some((name, actions)) if !name.trim().is_empty() => {
                Ok((name.trim().to_string(), actions.trim().to_string()))
            }
            _ => Err(format!("failpoint line {line:?} is not name=actions")),
        })
        .collect()
}

/// Starts listening for SIGUSR1 (feature `failpoints` only).
#[cfg(feature = "failpoints")]
pub fn listen() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGUSR1: {e}");
            return;
        }
    };
    // Ends with the runtime.
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            let Ok(path) = std::env::var(FILE_ENV) else {
                tracing::warn!("SIGUSR1: failpoints compiled in but {FILE_ENV} is not set; nothing armed");
                continue;
            };
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("failpoints: cannot read {path}: {e}");
                    continue;
                }
            };
            match parse(&text) {
                Ok(points) => {
                    for (name, actions) in points {
                        let outcome = if actions.is_empty() {
                            fail::remove(&name);
                            Ok(())
                        } else {
                            fail::cfg(&name, &actions)
                        };
                        match outcome {
                            Ok(()) => tracing::warn!(%name, %actions, "failpoint armed"),
                            Err(e) => tracing::warn!(%name, %actions, "failpoint refused: {e}"),
                        }
                    }
                }
                Err(e) => tracing::warn!("failpoints: {path}: {e}"),
            }
        }
    });
}

/// Without the feature there is nothing to arm.
#[cfg(not(feature = "failpoints"))]
pub fn listen() {}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_lines_and_refuses_garbage() {
        let points = parse("# comment\n shard-actor-write = 1*panic(chaos)\n\noff=\n").expect("parse");
        assert_eq!(
            points,
            vec![
                ("shard-actor-write".to_string(), "1*panic(chaos)".to_string()),
                ("off".to_string(), String::new())
            ]
        );
        assert!(parse("no equals sign").is_err());
        assert!(parse("=panic").is_err());
    }
}
