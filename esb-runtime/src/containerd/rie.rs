//! `rie` mode: images that bundle the AWS Runtime Interface Emulator, reached over the
//! sandbox's CNI address on port 8080, read as the emulator (v1.30,
//! `internal/lambda/rie/handlers.go`) answers:
//!
//! - it listens some time after the task starts, and starts the function's runtime inside
//!   the first invocation;
//! - success: 200 and the function's answer;
//! - a function error: 200 and the error document the runtime posted
//!   (`{"errorType","errorMessage",..}`), with no `X-Amz-Function-Error`;
//! - a timeout (its own, from `AWS_LAMBDA_FUNCTION_TIMEOUT`): 200 and the plain text
//!   `Task timed out after N.00 seconds`;
//! - a runtime that exited: 502 and `{"errorType":"Runtime.ExitError","errorMessage":
//!   "RequestId: <its id> Error: Runtime exited with error: exit status N"}`;
//! - it honours `X-Amzn-Trace-Id` and `X-Amz-Client-Context` (base64), and makes its own
//!   request id and ARN (account 012345678912).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use tokio::sync::watch;

use crate::{Error, FunctionError, InvokeResult, Result, SandboxId};

/// Port of the emulator in `rie` images.
pub(super) const PORT: u16 = 8080;
/// Path of the emulator's invoke endpoint.
pub(super) const PATH: &str = "/2015-03-31/functions/function/invocations";
/// How often readiness is probed.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// `AWS_LAMBDA_FUNCTION_TIMEOUT` for the emulator: whole seconds (it parses an integer),
/// rounded up, at least 1.
pub(super) fn timeout_env(timeout: Duration) -> String {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    secs.max(1).to_string()
}

/// The headers the emulator reads from an invocation request.
pub(super) fn headers(
    trace_id: Option<&str>,
    client_context: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(trace) = trace_id.filter(|t| !t.is_empty()) {
        headers.push(("x-amzn-trace-id", trace.to_owned()));
    }
    if let Some(context) = client_context.filter(|c| !c.is_empty()) {
        headers.push((
            "x-amz-client-context",
            base64::engine::general_purpose::STANDARD.encode(context),
        ));
    }
    headers
}

/// Waits until the emulator at `ip` accepts connections, at most until `deadline`;
/// returns when it did. A task that exits first is a lost sandbox.
pub(super) async fn wait_ready(
    id: &SandboxId,
    ip: Ipv4Addr,
    deadline: Instant,
    init_timeout: Duration,
    mut exited: watch::Receiver<Option<String>>,
) -> Result<()> {
    let addr = SocketAddr::from((ip, PORT));
    loop {
        if let Some(reason) = exited.borrow_and_update().clone() {
            return Err(Error::SandboxLost {
                id: id.clone(),
                reason,
            });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::InitTimeout {
                timeout: init_timeout,
            });
        }
        let attempt =
            tokio::time::timeout(deadline - now, tokio::net::TcpStream::connect(addr)).await;
        if let Ok(Ok(_)) = attempt {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            _ = exited.changed() => {}
        }
    }
}

/// Lines the emulator prints for each invocation, which ESB prints itself.
const PLATFORM_LINES: &[&[u8]] = &[
    b"START RequestId: ",
    b"END RequestId: ",
    b"REPORT RequestId: ",
];
/// Longest piece of a line the filter holds at once.
const FILTER_CHUNK: u64 = 64 * 1024;

/// The emulator's stdout without its own `START`/`END`/`REPORT` lines: a pipe fed by a
/// task (returned, to be aborted with the sandbox) that copies every other line.
pub(super) fn without_platform_lines<R>(
    reader: R,
) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (mut writer, filtered) = tokio::io::duplex(FILTER_CHUNK as usize);
    let task = tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(reader);
        let mut piece = Vec::new();
        let mut at_line_start = true;
        loop {
            piece.clear();
            match (&mut reader)
                .take(FILTER_CHUNK)
                .read_until(b'\n', &mut piece)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let platform = at_line_start && PLATFORM_LINES.iter().any(|p| piece.starts_with(p));
            at_line_start = piece.ends_with(b"\n");
            if !platform && writer.write_all(&piece).await.is_err() {
                break;
            }
        }
    });
    (filtered, task)
}

/// Keys of the error documents the official runtime clients post to `/error`.
const ERROR_KEYS: &[&str] = &[
    "errorType",
    "errorMessage",
    "stackTrace",
    "requestId",
    "trace",
    "cause",
];

/// The error document in `body`, if it is one: a JSON object with string `errorType` and
/// `errorMessage` and no keys other than the runtime clients' ones.
fn error_document(body: &[u8]) -> Option<(String, String)> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = doc.as_object()?;
    if !object.keys().all(|k| ERROR_KEYS.contains(&k.as_str())) {
        return None;
    }
    Some((
        object.get("errorType")?.as_str()?.to_owned(),
        object.get("errorMessage")?.as_str()?.to_owned(),
    ))
}

/// What the emulator's answer means for Lambda: the function's result, or the error of a
/// timeout or of a runtime that exited.
pub(super) fn classify(
    id: &SandboxId,
    status: http::StatusCode,
    header_error: Option<&str>,
    body: Bytes,
    timeout: Duration,
) -> Result<InvokeResult> {
    if status == http::StatusCode::OK
        && body.starts_with(b"Task timed out after ")
        && body.ends_with(b" seconds")
    {
        return Err(Error::Timeout { timeout });
    }
    let document = error_document(&body);
    if status == http::StatusCode::OK {
        return Ok(match (document, header_error) {
            (Some((error_type, error_message)), _) => InvokeResult::FunctionError(FunctionError {
                error_type,
                error_message,
                payload: body,
            }),
            (None, Some(kind)) => InvokeResult::FunctionError(FunctionError {
                error_type: kind.to_owned(),
                error_message: String::new(),
                payload: body,
            }),
            (None, None) => InvokeResult::Success(body),
        });
    }
    match document {
        Some((error_type, message)) if error_type == "Runtime.ExitError" => {
            // `RequestId: <the emulator's id> Error: <reason>`: the reason, under ESB's id.
            let reason = message
                .split_once(" Error: ")
                .map_or(message.as_str(), |(_, reason)| reason)
                .to_owned();
            Err(Error::SandboxLost {
                id: id.clone(),
                reason,
            })
        }
        Some((error_type, error_message)) => Ok(InvokeResult::FunctionError(FunctionError {
            error_type,
            error_message,
            payload: body,
        })),
        None => Err(Error::Backend(format!(
            "the emulator in sandbox {id} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: u16, body: &str) -> Result<InvokeResult> {
        classify(
            &SandboxId::new("s"),
            http::StatusCode::from_u16(status).unwrap(),
            None,
            Bytes::from(body.to_owned()),
            Duration::from_secs(3),
        )
    }

    #[test]
    fn answers_read_as_the_emulator_writes_them() {
        assert!(matches!(
            run(200, r#"{"a":1}"#),
            Ok(InvokeResult::Success(_))
        ));
        assert!(matches!(
            run(
                200,
                r#"{"errorType":"E","message":"an answer, not an error"}"#
            ),
            Ok(InvokeResult::Success(_))
        ));
        match run(
            200,
            r#"{"errorType":"E","errorMessage":"m","stackTrace":[]}"#,
        ) {
            Ok(InvokeResult::FunctionError(e)) => {
                assert_eq!(
                    (e.error_type.as_str(), e.error_message.as_str()),
                    ("E", "m")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(200, "Task timed out after 3.00 seconds"),
            Err(Error::Timeout { .. })
        ));
        let crash = r#"{"errorMessage":"RequestId: x Error: Runtime exited with error: exit status 3","errorType":"Runtime.ExitError"}"#;
        match run(502, crash) {
            Err(Error::SandboxLost { reason, .. }) => {
                assert_eq!(reason, "Runtime exited with error: exit status 3");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(run(400, ""), Err(Error::Backend(_))));
    }

    #[tokio::test]
    async fn the_emulators_own_platform_lines_are_dropped() {
        use tokio::io::AsyncReadExt;
        let input: &[u8] = b"START RequestId: a Version: $LATEST\nhello\nEND RequestId: a\nREPORT RequestId: a\tDuration: 1 ms\nsay START RequestId: x\n";
        let (mut filtered, task) = without_platform_lines(input);
        let mut out = String::new();
        filtered.read_to_string(&mut out).await.unwrap();
        task.await.unwrap();
        assert_eq!(out, "hello\nsay START RequestId: x\n");
    }

    #[test]
    fn the_timeout_is_whole_seconds_rounded_up() {
        assert_eq!(timeout_env(Duration::from_secs(3)), "3");
        assert_eq!(timeout_env(Duration::from_millis(2500)), "3");
        assert_eq!(timeout_env(Duration::from_millis(10)), "1");
    }
}
